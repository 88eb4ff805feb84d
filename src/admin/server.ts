/**
 * The management listener: /metrics (open), the read-only JSON API under /api/v1/ and the web page (both
 * behind the admin token), and a server-sent event stream of boot sessions for the page. Node's http;
 * the page's assets are files shipped in the package (web/), read at start, nothing fetched at run time.
 */
import { readFileSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { join } from "node:path";
import type { Logger } from "pino";
import { normaliseMac } from "../bootplan/config.js";
import type { Metrics } from "../metrics/metrics.js";
import { packageRoot } from "../package-root.js";
import { authorize, SESSION_COOKIE, sessionValue, tokenMatches } from "./auth.js";
import { type AdminSource, summarise } from "./views.js";

export interface AdminServerOptions {
  address: string;
  port: number;
  token: string | undefined;
  source: AdminSource;
  metrics: Metrics;
  logger: Logger;
}

const ASSETS: Record<string, { file: string; type: string }> = {
  "/": { file: "index.html", type: "text/html; charset=utf-8" },
  "/assets/app.js": { file: "app.js", type: "text/javascript; charset=utf-8" },
  "/assets/style.css": { file: "style.css", type: "text/css; charset=utf-8" },
};
const LOGIN_PAGE = "login.html";
const MAX_FORM_BYTES = 4096;
const SECURITY_HEADERS = {
  "x-content-type-options": "nosniff",
  "content-security-policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
  "cache-control": "no-store",
};

export class AdminServer {
  private readonly server: Server;
  private readonly assets = new Map<string, Buffer>();
  private readonly streams = new Set<ServerResponse>();
  private readonly sockets = new Set<Socket>();
  private unsubscribe: (() => void) | undefined;

  constructor(private readonly opts: AdminServerOptions) {
    const web = join(packageRoot(), "web");
    for (const a of [...Object.values(ASSETS).map((x) => x.file), LOGIN_PAGE])
      this.assets.set(a, readFileSync(join(web, a)));
    this.server = createServer(
      { maxHeaderSize: 8192, headersTimeout: 10_000, requestTimeout: 30_000 },
      (req, res) => this.handle(req, res),
    );
    this.server.maxConnections = 200;
    this.server.on("connection", (s: Socket) => {
      this.sockets.add(s);
      s.once("close", () => this.sockets.delete(s));
    });
    this.server.on("clientError", (_err, socket: Socket) => socket.destroy());
  }

  async listen(): Promise<AddressInfo> {
    await new Promise<void>((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(this.opts.port, this.opts.address, () => {
        this.server.off("error", reject);
        resolve();
      });
    });
    this.unsubscribe = this.opts.source.subscribe((s) => {
      const data = `event: session\ndata: ${JSON.stringify({ ...s, summary: summarise(s) })}\n\n`;
      for (const r of this.streams) r.write(data);
    });
    const addr = this.server.address() as AddressInfo;
    this.opts.logger.info(
      { address: addr.address, port: addr.port, api: this.opts.token ? "token" : "refused: no admin.token" },
      "admin listening",
    );
    return addr;
  }

  async close(): Promise<void> {
    this.unsubscribe?.();
    for (const r of this.streams) r.end();
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const s of this.sockets) s.destroy();
    await closed;
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const started = performance.now();
    const url = new URL(req.url ?? "/", "http://admin");
    const path = url.pathname;
    let reason: string | undefined;
    res.once("close", () => {
      const line = {
        client: req.socket.remoteAddress,
        method: req.method,
        path,
        status: res.statusCode,
        ms: Math.round(performance.now() - started),
        ...(reason ? { reason } : {}),
      };
      if (res.statusCode < 400) this.opts.logger.debug(line, "admin request");
      else this.opts.logger.warn(line, "admin request");
    });
    const send = (
      status: number,
      type: string,
      body: string | Buffer,
      extra: Record<string, string> = {},
    ) => {
      res.writeHead(status, {
        "content-type": type,
        "content-length": Buffer.byteLength(body),
        ...SECURITY_HEADERS,
        ...extra,
      });
      res.end(req.method === "HEAD" ? undefined : body);
    };
    const json = (status: number, value: unknown) =>
      send(status, "application/json", `${JSON.stringify(value)}\n`);

    if (path === "/metrics") {
      if (req.method !== "GET" && req.method !== "HEAD") {
        send(405, "text/plain", "", { allow: "GET, HEAD" });
        return;
      }
      void this.opts.metrics.text().then(
        (text) => send(200, this.opts.metrics.contentType, text),
        (err: Error) => send(500, "text/plain", `${err.message}\n`),
      );
      return;
    }
    if (path === "/login") {
      this.login(req, send);
      return;
    }

    const auth = authorize(req, this.opts.token);
    if (!auth.ok) {
      reason = auth.reason;
      if (path.startsWith("/api/")) {
        json(401, { error: "unauthorized", reason: auth.reason });
        return;
      }
      send(401, "text/html; charset=utf-8", this.assets.get(LOGIN_PAGE) ?? "", {
        "www-authenticate": 'Bearer realm="netboot"',
      });
      return;
    }
    if (req.method !== "GET" && req.method !== "HEAD") {
      send(405, "text/plain", "", { allow: "GET, HEAD" });
      return;
    }

    const asset = ASSETS[path];
    if (asset) {
      send(200, asset.type, this.assets.get(asset.file) ?? "");
      return;
    }
    const src = this.opts.source;
    if (path === "/api/v1/machines") {
      json(200, { machines: src.machines() });
      return;
    }
    if (path === "/api/v1/leases") {
      json(200, { leases: src.leases() });
      return;
    }
    if (path === "/api/v1/subnets") {
      json(200, { subnets: src.subnets() });
      return;
    }
    if (path === "/api/v1/events") {
      this.stream(req, res);
      return;
    }
    const boots = /^\/api\/v1\/machines\/([^/]+)\/boots$/.exec(path);
    if (boots) {
      const mac = normaliseMac(decodeURIComponent(boots[1] ?? ""));
      if (mac === undefined) {
        json(400, { error: "not a MAC address" });
        return;
      }
      const list = src.boots(mac);
      json(200, { mac, boots: [...list].reverse(), summary: list.map(summarise).reverse() });
      return;
    }
    reason = "no such path";
    if (path.startsWith("/api/")) json(404, { error: "not found" });
    else send(404, "text/plain", "not found\n");
  }

  /** GET: the form; POST: a token that matches sets the session cookie (the page's credential). */
  private login(
    req: IncomingMessage,
    send: (s: number, t: string, b: string | Buffer, e?: Record<string, string>) => void,
  ): void {
    if (req.method === "GET" || req.method === "HEAD") {
      send(200, "text/html; charset=utf-8", this.assets.get(LOGIN_PAGE) ?? "");
      return;
    }
    if (req.method !== "POST") {
      send(405, "text/plain", "", { allow: "GET, HEAD, POST" });
      return;
    }
    let body = "";
    let tooBig = false;
    req.setEncoding("utf8");
    req.on("data", (chunk: string) => {
      body += chunk;
      if (body.length > MAX_FORM_BYTES) {
        tooBig = true;
        req.destroy();
      }
    });
    req.on("end", () => {
      if (tooBig) return;
      const given = new URLSearchParams(body).get("token") ?? "";
      if (!tokenMatches(given, this.opts.token)) {
        send(401, "text/html; charset=utf-8", this.assets.get(LOGIN_PAGE) ?? "");
        return;
      }
      const cookie = `${SESSION_COOKIE}=${sessionValue(this.opts.token as string)}; HttpOnly; SameSite=Strict; Path=/`;
      send(303, "text/plain", "", { location: "/", "set-cookie": cookie });
    });
  }

  private stream(req: IncomingMessage, res: ServerResponse): void {
    res.writeHead(200, {
      "content-type": "text/event-stream",
      ...SECURITY_HEADERS,
      connection: "keep-alive",
    });
    res.write(": netboot boot sessions\n\n");
    this.streams.add(res);
    const ping = setInterval(() => res.write(": ping\n\n"), 15_000);
    req.socket.setTimeout(0);
    res.once("close", () => {
      clearInterval(ping);
      this.streams.delete(res);
    });
  }
}
