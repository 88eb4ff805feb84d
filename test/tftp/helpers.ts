/** Shared test plumbing: temp roots, a server on loopback, real clients, checksums. */
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { TftpServer, type TftpServerOptions } from "../../src/tftp/server.js";

export interface LogLine {
  msg: string;
  [k: string]: unknown;
}

/** A pino logger that keeps every line in memory, so tests can check what was logged. */
export function memoryLogger(): { logger: pino.Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const logger = pino(
    { level: "debug" },
    {
      write(s: string) {
        lines.push(JSON.parse(s) as LogLine);
      },
    },
  );
  return { logger, lines };
}

export async function tempDir(prefix = "nbtf-"): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

export async function startServer(
  opts: Partial<TftpServerOptions> & { root: string },
): Promise<{ server: TftpServer; port: number; lines: LogLine[] }> {
  const { logger, lines } = memoryLogger();
  const server = new TftpServer({ address: "127.0.0.1", port: 0, logger, ...opts });
  const addr = await server.listen();
  return { server, port: addr.port, lines };
}

export function sha256File(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash("sha256");
    createReadStream(path)
      .on("data", (d) => h.update(d))
      .on("end", () => resolve(h.digest("hex")))
      .on("error", reject);
  });
}

export function run(
  cmd: string,
  args: string[],
  timeoutMs = 60_000,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err ? ((err as { code?: number }).code ?? null) : 0;
      resolve({ code: typeof code === "number" ? code : null, stdout, stderr });
    });
  });
}

export type ClientName = "curl" | "tftp-hpa" | "atftp";

/** Fetches `file` with a real client into `out`. `blksize`/`windowsize` where that client supports them. */
export function fetchWith(
  client: ClientName,
  host: string,
  port: number,
  file: string,
  out: string,
  opts: {
    blksize?: number;
    windowsize?: number;
    timeoutMs?: number;
    netns?: string;
    noOptions?: boolean;
  } = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  let cmd: string;
  let args: string[];
  switch (client) {
    case "curl":
      cmd = "curl";
      args = ["-sS", "--max-time", "120", "-o", out, `tftp://${host}:${port}/${file}`];
      if (opts.blksize) args.push("--tftp-blksize", String(opts.blksize));
      // curl always asks timeout=5, which the server honours (RFC 2349); without options the server's applies.
      if (opts.noOptions) args.push("--tftp-no-options");
      break;
    case "tftp-hpa":
      cmd = "tftp";
      args = ["-m", "binary", host, String(port), "-c", "get", file, out];
      break;
    case "atftp":
      cmd = "atftp";
      args = ["--get", "-r", file, "-l", out, "--tftp-timeout", "1"];
      if (opts.blksize) args.push("--option", `blksize ${opts.blksize}`);
      if (opts.windowsize) args.push("--option", `windowsize ${opts.windowsize}`);
      args.push(host, String(port));
      break;
  }
  if (opts.netns) {
    args = ["netns", "exec", opts.netns, cmd, ...args];
    cmd = "ip";
  }
  return run(cmd, args, opts.timeoutMs ?? 120_000);
}
