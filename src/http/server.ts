/**
 * The boot HTTP server: the same names as TFTP, through the same lookup (the boot plan's provider with its
 * ownership checks, then the jailed root). GET and HEAD, one byte range, ETag and Last-Modified for files,
 * streamed with backpressure from the shared descriptor cache; limits on headers, time and connections.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import type { Logger } from "pino";
import type { FileLookup } from "../files/lookup.js";
import type { BlockSource } from "../files/sources.js";
import type { FileEvent, FileOutcome } from "../machines/events.js";
import { RateLimiter } from "../tftp/ratelimit.js";
import { decideRange } from "./range.js";

export interface HttpFileServerOptions {
  lookup: FileLookup;
  address?: string;
  port?: number;
  maxConnections?: number;
  idleTimeoutMs?: number;
  headerTimeoutMs?: number;
  logger: Logger;
  /** Told of every answered request, as a file event (the machine state's boot sessions listen). */
  onRequest?: ((e: FileEvent) => void) | undefined;
}

/** Largest request head accepted (request line and headers); firmware sends a few hundred bytes. */
const MAX_HEADER_BYTES = 8 * 1024;
const CHUNK_BYTES = 1024 * 1024;

/** The client's IPv4 address as the lease store knows it (an IPv4-mapped IPv6 address is unwrapped). */
function clientAddress(socket: Socket): string {
  const a = socket.remoteAddress ?? "";
  return a.startsWith("::ffff:") ? a.slice(7) : a;
}

function etagOf(source: BlockSource): string | undefined {
  return source.modifiedMs === undefined
    ? undefined
    : `"${source.size.toString(16)}-${Math.floor(source.modifiedMs * 1000).toString(16)}"`;
}

function outcomeOf(method: string | undefined, status: number, finished: boolean): FileOutcome {
  if (!finished) return "aborted-by-client";
  if (status === 404) return "not-found";
  if (status === 403) return "denied";
  if (status >= 400) return "error";
  return method === "HEAD" || status === 304 ? "head" : "ok";
}

export class HttpFileServer {
  private readonly server: Server;
  private readonly log: Logger;
  private readonly clientErrors = new RateLimiter(10, 10_000);
  private readonly sockets = new Set<Socket>();

  constructor(private readonly opts: HttpFileServerOptions) {
    this.log = opts.logger;
    this.server = createServer(
      {
        maxHeaderSize: MAX_HEADER_BYTES,
        headersTimeout: opts.headerTimeoutMs ?? 10_000,
        requestTimeout: (opts.headerTimeoutMs ?? 10_000) * 3,
        keepAliveTimeout: 5_000,
        // Node checks the two timeouts above only this often (30 s by default).
        connectionsCheckingInterval: Math.min(1000, Math.max(50, (opts.headerTimeoutMs ?? 10_000) / 4)),
      },
      (req, res) => void this.handle(req, res),
    );
    this.server.maxConnections = opts.maxConnections ?? 1000;
    this.server.setTimeout(opts.idleTimeoutMs ?? 30_000, (socket) => socket.destroy());
    this.server.on("connection", (socket: Socket) => {
      this.sockets.add(socket);
      socket.once("close", () => this.sockets.delete(socket));
    });
    this.server.on("clientError", (err: NodeJS.ErrnoException, socket: Socket) =>
      this.onClientError(err, socket),
    );
  }

  async listen(): Promise<AddressInfo> {
    const root = await this.opts.lookup.init();
    await new Promise<void>((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(this.opts.port ?? 80, this.opts.address ?? "0.0.0.0", () => {
        this.server.off("error", reject);
        resolve();
      });
    });
    const addr = this.server.address() as AddressInfo;
    this.log.info({ address: addr.address, port: addr.port, root }, "http listening");
    return addr;
  }

  /** Stops accepting, ends running responses, closes every connection. */
  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const s of this.sockets) s.destroy();
    await closed;
  }

  /** Malformed request lines, oversized heads, timeouts: a status where the socket can take one, then close. */
  private onClientError(err: NodeJS.ErrnoException, socket: Socket): void {
    const code = err.code ?? "";
    const status = code === "HPE_HEADER_OVERFLOW" ? 431 : code === "ERR_HTTP_REQUEST_TIMEOUT" ? 408 : 400;
    const suppressed = this.clientErrors.take();
    if (suppressed !== null)
      this.log.warn(
        { client: clientAddress(socket), status, code, reason: err.message, suppressed },
        "http request refused",
      );
    if (code === "ECONNRESET" || !socket.writable) {
      socket.destroy();
      return;
    }
    const text =
      status === 431 ? "Request Header Fields Too Large" : status === 408 ? "Request Timeout" : "Bad Request";
    socket.end(`HTTP/1.1 ${status} ${text}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = performance.now();
    const client = clientAddress(req.socket);
    let path = req.url ?? "";
    let bytes = 0;
    let reason: string | undefined;
    res.once("close", () => {
      const line = {
        client,
        method: req.method,
        path,
        status: res.statusCode,
        bytes,
        ms: Math.round(performance.now() - started),
        ...(reason ? { reason } : {}),
        ...(res.writableFinished ? {} : { aborted: true }),
      };
      if (res.statusCode < 400 && res.writableFinished) this.log.info(line, "http request");
      else this.log.warn(line, "http request");
      this.opts.onRequest?.({
        kind: "file",
        at: Date.now(),
        protocol: "http",
        client,
        file: path.replace(/^\/+/, ""),
        bytes,
        ms: line.ms,
        status: res.statusCode,
        outcome: outcomeOf(req.method, res.statusCode, res.writableFinished),
      });
    });
    const fail = (status: number, why: string) => {
      reason = why;
      res.writeHead(status, { "content-type": "text/plain", "content-length": 0, connection: "close" });
      res.end();
    };

    if (req.method !== "GET" && req.method !== "HEAD") {
      res.setHeader("allow", "GET, HEAD");
      return fail(405, `method ${req.method}`);
    }
    const raw = (req.url ?? "").split("?", 1)[0] ?? "";
    if (!raw.startsWith("/")) return fail(400, "request target is not an absolute path");
    try {
      path = decodeURIComponent(raw);
    } catch {
      return fail(400, "bad percent-encoding");
    }

    let found: Awaited<ReturnType<FileLookup["openRequest"]>>;
    try {
      found = await this.opts.lookup.openRequest(path, { address: client, port: req.socket.remotePort ?? 0 });
    } catch (err) {
      // The boot plan refused it (a machine's config asked for from another address), or it failed.
      return fail(403, (err as Error).message);
    }
    if (!found.ok) return fail(found.outcome === "denied" ? 403 : 404, found.reason);
    path = found.path;
    const source = found.source;
    try {
      const etag = found.generated ? undefined : etagOf(source);
      const headers: Record<string, string | number> = {
        "content-type":
          /\.(cfg|conf|ipxe)$/.test(path) || found.generated
            ? "text/plain; charset=utf-8"
            : "application/octet-stream",
        "accept-ranges": "bytes",
      };
      if (found.generated) headers["cache-control"] = "no-store";
      if (etag) headers.etag = etag;
      if (source.modifiedMs !== undefined)
        headers["last-modified"] = new Date(source.modifiedMs).toUTCString();
      if (etag && req.headers["if-none-match"] === etag) {
        res.writeHead(304, headers);
        res.end();
        return;
      }
      const ifRange = req.headers["if-range"];
      const range =
        ifRange !== undefined && ifRange !== etag
          ? { kind: "whole" as const }
          : decideRange(req.headers.range, source.size);
      if (range.kind === "unsatisfiable") {
        res.writeHead(416, { ...headers, "content-range": `bytes */${source.size}`, "content-length": 0 });
        res.end();
        reason = `range ${req.headers.range} of ${source.size} bytes`;
        return;
      }
      const start = range.kind === "partial" ? range.start : 0;
      const end = range.kind === "partial" ? range.end : source.size - 1;
      const length = Math.max(0, end - start + 1);
      headers["content-length"] = length;
      if (range.kind === "partial") headers["content-range"] = `bytes ${start}-${end}/${source.size}`;
      res.writeHead(range.kind === "partial" ? 206 : 200, headers);
      if (req.method === "HEAD") {
        res.end();
        return;
      }
      bytes = await this.stream(source, start, length, res);
      if (bytes === length) res.end();
    } catch (err) {
      reason = (err as Error).message;
      if (!res.headersSent) fail(500, reason);
      else res.destroy(); // the client sees a short body, never wrong bytes
    } finally {
      source.release();
    }
  }

  /**
   * Writes [start, start+length) in chunks, waiting for the socket to drain. Two chunk buffers take
   * turns, each refilled only once the socket has taken it (its write callback): fresh large buffers per
   * chunk cost page faults and GC (as they did for TFTP). Returns the bytes written.
   */
  private async stream(
    source: BlockSource,
    start: number,
    length: number,
    res: ServerResponse,
  ): Promise<number> {
    const size = Math.min(CHUNK_BYTES, length);
    const free: Buffer[] = [Buffer.allocUnsafe(size), Buffer.allocUnsafe(size)];
    let waiting: (() => void) | undefined;
    const wake = () => {
      const w = waiting;
      waiting = undefined;
      w?.();
    };
    res.on("drain", wake);
    res.on("close", wake);
    let sent = 0;
    try {
      while (sent < length) {
        if (res.destroyed) return sent;
        while (free.length === 0 && !res.destroyed) await new Promise<void>((r) => (waiting = r));
        const buf = free.pop() as Buffer;
        const want = Math.min(buf.length, length - sent);
        const got = await source.readInto([buf.subarray(0, want)], start + sent);
        if (got === 0) throw new Error("file ended early");
        sent += got;
        const ok = res.write(buf.subarray(0, got), () => {
          free.push(buf);
          wake();
        });
        if (!ok && !res.destroyed) await new Promise<void>((r) => (waiting = r));
      }
      return sent;
    } finally {
      res.off("drain", wake);
      res.off("close", wake);
    }
  }
}
