/**
 * The boot HTTP server with real clients (curl, and raw sockets for what curl will not send): the same
 * names as TFTP through the same lookup, ranges, validators, ownership of per-machine configs, and bad input.
 */
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BootPlan } from "../../src/bootplan/plan.js";
import { FileLookup } from "../../src/files/lookup.js";
import { HttpFileServer } from "../../src/http/server.js";
import {
  captureLogger,
  fakeImageFiles,
  leasedRegistry,
  planOptionsFromYaml,
  tempDir,
} from "../bootplan/helpers.js";
import { commandsAvailable } from "../support/require.js";

const run = promisify(execFile);
const MAC = "52:54:00:cc:00:01";
const CHAP = "HttpChap-Secret9";
const SECRET = "outside the served root\n";

interface Got {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
}

describe.runIf(commandsAvailable("curl"))("HTTP boot server", () => {
  const log = captureLogger();
  const dir = tempDir("nbhttp-");
  const root = join(dir, "root");
  const shim = randomBytes(3 * 1024 * 1024 + 17);
  let owners: Awaited<ReturnType<typeof leasedRegistry>>;
  let server: HttpFileServer;
  let base: string;
  let port: number;

  /** curl, with headers dumped to a file so that status and headers are read as curl saw them. */
  async function curl(path: string, ...args: string[]): Promise<Got> {
    const out = join(dir, `body-${randomBytes(4).toString("hex")}`);
    const head = `${out}.head`;
    await run("curl", ["-sS", "--path-as-is", "-o", out, "-D", head, ...args, `${base}${path}`]).catch(
      () => {},
    );
    const headText = (() => {
      try {
        return readFileSync(head, "latin1");
      } catch {
        return "";
      }
    })();
    const blocks = headText.trim().split(/\r?\n\r?\n/);
    const last = (blocks[blocks.length - 1] ?? "").split(/\r?\n/);
    const status = Number(/^HTTP\/[\d.]+ (\d{3})/.exec(last[0] ?? "")?.[1] ?? 0);
    const headers: Record<string, string> = {};
    for (const line of last.slice(1)) {
      const i = line.indexOf(":");
      if (i > 0) headers[line.slice(0, i).toLowerCase()] = line.slice(i + 1).trim();
    }
    let body = Buffer.alloc(0);
    try {
      body = readFileSync(out);
    } catch {
      // no body
    }
    return { status, headers, body };
  }

  /** A raw request, for what curl will not send; resolves with what came back before the server closed. */
  function raw(text: string | Buffer, { holdMs = 0 } = {}): Promise<string> {
    return new Promise((resolve) => {
      const s = connect(port, "127.0.0.1");
      let got = "";
      s.on("data", (d) => {
        got += d.toString("latin1");
      });
      s.on("close", () => resolve(got));
      s.on("error", () => {});
      s.write(text);
      if (holdMs === 0) setTimeout(() => s.end(), 2000);
    });
  }

  beforeAll(async () => {
    mkdirSync(join(root, "x64"), { recursive: true });
    writeFileSync(join(root, "x64", "shimx64.efi"), shim);
    writeFileSync(join(dir, "secret"), SECRET);
    const files = fakeImageFiles(dir);
    const yaml = `
boot:
  loaders: { x64: { shim: x64/shimx64.efi, grub: x64/grubx64.efi } }
images:
  img: { kernel: { path: ${files.kernel} }, initrd: { path: ${files.initrd} }, flavour: initramfs-tools, root: UUID=1234 }
machines:
  - name: h1
    macs: [${MAC}]
    volume: { resolver: static, portals: [10.0.0.5], iqn: iqn.2024-01.org.example:h1, lun: 1, chap: { username: hu, password: ${CHAP} } }
`;
    owners = await leasedRegistry(log.logger);
    const plan = new BootPlan(
      planOptionsFromYaml(yaml, { cacheDir: tempDir(), logger: log.logger, tftpRoot: root }),
      owners.registry,
    );
    server = new HttpFileServer({
      lookup: new FileLookup(root, plan.tftpProvider()),
      address: "127.0.0.1",
      port: 0,
      headerTimeoutMs: 500,
      logger: log.logger,
    });
    port = (await server.listen()).port;
    base = `http://127.0.0.1:${port}`;
  });
  afterAll(async () => {
    await server?.close();
    await owners?.store.close();
  });

  it("GET and HEAD of a loader: the bytes, Content-Length, ETag, Last-Modified; each request logged", async () => {
    const got = await curl("/x64/shimx64.efi");
    expect(got.status).toBe(200);
    expect(got.body.equals(shim)).toBe(true);
    expect(got.headers["content-length"]).toBe(String(shim.length));
    expect(got.headers.etag).toMatch(/^"[0-9a-f]+-[0-9a-f]+"$/);
    expect(new Date(got.headers["last-modified"] ?? "").getTime()).toBeGreaterThan(0);
    const head = await curl("/x64/shimx64.efi", "-I");
    expect(head.status).toBe(200);
    expect(head.headers["content-length"]).toBe(String(shim.length));
    expect(head.body.includes(shim.subarray(0, 64))).toBe(false); // curl -I writes the headers there
    const again = await curl("/x64/shimx64.efi", "-H", `If-None-Match: ${got.headers.etag}`);
    expect(again.status).toBe(304);
    await new Promise((r) => setTimeout(r, 50));
    expect(
      log.lines().find((l) => l.msg === "http request" && l.path === "x64/shimx64.efi" && l.status === 200),
    ).toMatchObject({ client: "127.0.0.1", method: "GET", bytes: shim.length });
  });

  it("single ranges: 206 with Content-Range, suffix ranges, 416 out of range; odd ones fall back to 200", async () => {
    const mid = await curl("/x64/shimx64.efi", "-r", "100-199");
    expect(mid.status).toBe(206);
    expect(mid.headers["content-range"]).toBe(`bytes 100-199/${shim.length}`);
    expect(mid.body.equals(shim.subarray(100, 200))).toBe(true);
    const tail = await curl("/x64/shimx64.efi", "-H", "Range: bytes=-17");
    expect(tail.status).toBe(206);
    expect(tail.body.equals(shim.subarray(shim.length - 17))).toBe(true);
    const open = await curl("/x64/shimx64.efi", "-H", `Range: bytes=${shim.length - 5}-`);
    expect(open.body.equals(shim.subarray(shim.length - 5))).toBe(true);
    for (const absurd of [`bytes=${shim.length}-`, "bytes=99999999999999999999999-", "bytes=-0"]) {
      const r = await curl("/x64/shimx64.efi", "-H", `Range: ${absurd}`);
      expect(r.status, absurd).toBe(416);
      expect(r.headers["content-range"]).toBe(`bytes */${shim.length}`);
    }
    for (const ignored of ["bytes=0-1,5-6", "bytes=9-3", "items=0-5", "bytes=abc", "bytes=--1"]) {
      const r = await curl("/x64/shimx64.efi", "-H", `Range: ${ignored}`);
      expect(r.status, ignored).toBe(200);
      expect(r.body.length).toBe(shim.length);
    }
  });

  it("404 for unknown names and directories, 405 for other methods", async () => {
    expect((await curl("/nope.efi")).status).toBe(404);
    for (const d of ["/x64", "/x64/", "/"]) {
      expect((await curl(d)).status, d).toBe(404);
      expect((await curl(d, "-I")).status, `HEAD ${d}`).toBe(404);
    }
    const post = await curl("/x64/shimx64.efi", "-X", "POST", "-d", "x");
    expect(post.status).toBe(405);
    expect(post.headers.allow).toBe("GET, HEAD");
    expect((await curl("/x64/shimx64.efi", "-X", "DELETE")).status).toBe(405);
  });

  it("path traversal in every encoding is refused; nothing outside the root is served", async () => {
    for (const p of [
      "/../secret",
      "/x64/../../secret",
      "/%2e%2e/secret",
      "/%2E%2E%2Fsecret",
      "/x64/..%2f..%2fsecret",
      "/..%5csecret",
      "/x64\\..\\..\\secret",
      "/%252e%252e/secret",
      "/secret%00.efi",
      "/%c0%ae%c0%ae/secret",
      "/%ff",
      `/${dir}/secret`,
    ]) {
      const r = await curl(p);
      expect([400, 403, 404], p).toContain(r.status);
      expect(r.body.toString()).not.toContain(SECRET.trim());
    }
  });

  it("a machine's config goes only to the address holding its lease, over HTTP as over TFTP", async () => {
    const path = `/grub/${MAC}.conf`;
    expect((await curl(path)).status).toBe(403); // no lease yet: default deny
    await owners.lease(MAC, "10.0.0.9");
    expect((await curl(path)).status).toBe(403); // leased to another address
    await owners.lease(MAC, "127.0.0.1");
    const ok = await curl(path);
    expect(ok.status).toBe(200);
    expect(ok.body.toString()).toContain(`iscsi_password=${CHAP}`);
    expect(ok.headers["cache-control"]).toBe("no-store");
    expect(
      log.lines().some((l) => String(l.msg).startsWith("machine config refused") && l.client === "127.0.0.1"),
    ).toBe(true);
  });

  it("malformed requests, oversized headers and slowloris get a status or a closed connection; a good download completes", async () => {
    const download = curl("/x64/shimx64.efi", "--limit-rate", "4M");
    expect(await raw("GARBAGE\r\n\r\n")).toMatch(/^HTTP\/1\.1 400 /);
    expect(await raw("GET /x64/shimx64.efi HTTP/9.9\r\nHost: x\r\n\r\n")).toMatch(/^HTTP\/1\.1 (400|505) /);
    expect(await raw(`GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(16 * 1024)}\r\n\r\n`)).toMatch(
      /^HTTP\/1\.1 431 /,
    );
    expect(await raw(Buffer.from([0x16, 0x03, 0x01, 0x00, 0xff, 0x01, 0x00, 0x00]))).toMatch(
      /^HTTP\/1\.1 400 |^$/,
    );
    // Slowloris: an unfinished head is cut off once the header timeout passes (500 ms here).
    const slow = raw("GET /x64/shimx64.efi HTTP/1.1\r\nHost: x\r\n", { holdMs: 1 });
    expect(await slow).toMatch(/^(HTTP\/1\.1 408 |)/);
    const good = await download;
    expect(good.status).toBe(200);
    expect(good.body.equals(shim)).toBe(true);
    expect(log.lines().some((l) => l.msg === "http request refused" && l.status === 431)).toBe(true);
  });
});
