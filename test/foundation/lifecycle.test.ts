import { type ChildProcess, execFile, spawn } from "node:child_process";
import { createHash, randomFillSync } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterEach, describe, expect, it } from "vitest";
import { encodeAck, encodeRequest } from "../../src/tftp/packet.js";
import { commandsAvailable } from "../support/require.js";
import { RawClient } from "../tftp/rawclient.js";

const execFileP = promisify(execFile);
const CLI = join(import.meta.dirname, "../../dist/src/bin.js");
const haveCurl = commandsAvailable("curl");

interface Running {
  child: ChildProcess;
  lines: string[];
  waitFor(pattern: RegExp, ms?: number): Promise<string>;
}

function serve(args: string[]): Running {
  const child = spawn("node", [CLI, "serve", ...args], { stdio: ["ignore", "pipe", "pipe"] });
  const lines: string[] = [];
  const waiters: { pattern: RegExp; resolve: (l: string) => void }[] = [];
  let buffer = "";
  const onData = (chunk: Buffer) => {
    buffer += chunk.toString();
    let nl = buffer.indexOf("\n");
    while (nl >= 0) {
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + 1);
      lines.push(line);
      for (const w of [...waiters]) {
        if (w.pattern.test(line)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(line);
        }
      }
      nl = buffer.indexOf("\n");
    }
  };
  child.stdout?.on("data", onData);
  child.stderr?.on("data", onData);
  return {
    child,
    lines,
    waitFor(pattern, ms = 15_000) {
      const seen = lines.find((l) => pattern.test(l));
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`timed out waiting for ${pattern}; log:\n${lines.join("\n")}`)),
          ms,
        );
        waiters.push({
          pattern,
          resolve: (l) => {
            clearTimeout(timer);
            resolve(l);
          },
        });
      });
    },
  };
}

function exited(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => child.once("exit", (code) => resolve(code)));
}

async function tftpGet(port: number, file: string, extra: string[] = []): Promise<Buffer> {
  const { stdout } = await execFileP(
    "curl",
    ["-sS", "--max-time", "30", ...extra, `tftp://127.0.0.1:${port}/${file}`],
    {
      encoding: "buffer",
      maxBuffer: 64 << 20,
    },
  );
  return stdout;
}

/** A deliberately slow lockstep client: waits `delayMs` before each ACK, so a transfer spans seconds. */
async function slowTftpGet(port: number, file: string, delayMs: number): Promise<Buffer> {
  const client = await RawClient.open();
  const parts: Buffer[] = [];
  try {
    client.send(encodeRequest("RRQ", file, "octet"), port);
    for (let expected = 1; ; expected++) {
      const got = await client.next(5000);
      if (!got || got.packet.op !== "DATA")
        throw new Error(`expected DATA ${expected}, got ${JSON.stringify(got?.packet)}`);
      if (got.packet.block !== expected) continue;
      parts.push(Buffer.from(got.packet.data));
      await new Promise((r) => setTimeout(r, delayMs));
      client.send(encodeAck(expected), got.from.port);
      if (got.packet.data.length < 512) return Buffer.concat(parts);
    }
  } finally {
    client.close();
  }
}

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");
let running: Running | undefined;

afterEach(() => {
  if (running && running.child.exitCode === null) running.child.kill("SIGKILL");
  running = undefined;
});

describe.skipIf(!haveCurl)("serve lifecycle", () => {
  it("serves a folder from flags alone, as dnsmasq or pixiecore users expect", async () => {
    const root = mkdtempSync(join(tmpdir(), "nb-life-"));
    writeFileSync(join(root, "hello.txt"), "hello from the flags\n");
    const port = 20000 + Math.floor(Math.random() * 20000);
    const httpPort = port + 1;
    running = serve([
      "--no-dhcp",
      "--tftp-root",
      root,
      "--tftp-port",
      String(port),
      "--http-port",
      String(httpPort),
      "--listen",
      "127.0.0.1",
    ]);
    await running.waitFor(/netboot-appliance started/);
    expect((await tftpGet(port, "hello.txt")).toString()).toBe("hello from the flags\n");
    // The same name over HTTP, from the same flags.
    const { stdout } = await execFileP("curl", ["-sS", "--fail", `http://127.0.0.1:${httpPort}/hello.txt`]);
    expect(stdout).toBe("hello from the flags\n");
    await running.waitFor(/"http request".*"path":"hello.txt"|"path":"hello.txt".*"http request"/);
    running.child.kill("SIGTERM");
    expect(await exited(running.child)).toBe(0);
  });

  it("SIGHUP reloads without dropping a running transfer; an invalid reload keeps the old config; SIGTERM stops within 5 s", async () => {
    const root = mkdtempSync(join(tmpdir(), "nb-life-"));
    const big = randomFillSync(Buffer.alloc(40 * 512 + 100));
    writeFileSync(join(root, "big.bin"), big);
    const port = 20000 + Math.floor(Math.random() * 20000);
    const configFile = join(root, "config.yaml");
    const config = (timeout: number) =>
      `listen: { address: 127.0.0.1 }\ntftp: { root: ., port: ${port} }\nboot:\n  loaders: {}\n  grub: { timeout: ${timeout} }\n`;
    writeFileSync(configFile, config(7));
    running = serve(["--config", configFile]);
    await running.waitFor(/netboot-appliance started/);
    expect((await tftpGet(port, "grub/grub.cfg")).toString()).toContain("set timeout=7");

    // 41 blocks, 60 ms per ACK: about 2.5 s, long enough to reload in the middle.
    const slow = slowTftpGet(port, "big.bin", 60);
    let slowDone = false;
    void slow.finally(() => {
      slowDone = true;
    });
    await new Promise((r) => setTimeout(r, 700));
    writeFileSync(configFile, config(11));
    running.child.kill("SIGHUP");
    await running.waitFor(/configuration reloaded/);
    expect(slowDone, "the transfer should still be running during the reload").toBe(false);
    expect((await tftpGet(port, "grub/grub.cfg")).toString()).toContain("set timeout=11");

    writeFileSync(configFile, `${config(13)}  bogus_key: 1\n`);
    running.child.kill("SIGHUP");
    const refused = await running.waitFor(/invalid configuration on reload/);
    expect(refused).toContain("bogus_key");
    expect((await tftpGet(port, "grub/grub.cfg")).toString()).toContain("set timeout=11");

    expect(sha(await slow)).toBe(sha(big));

    const another = slowTftpGet(port, "big.bin", 200).catch((e: unknown) => e);
    await new Promise((r) => setTimeout(r, 500));
    const t0 = Date.now();
    running.child.kill("SIGTERM");
    const code = await exited(running.child);
    const stopMs = Date.now() - t0;
    console.log(`SIGTERM with a transfer running: exit ${code} after ${stopMs} ms`);
    expect(code).toBe(0);
    expect(stopMs).toBeLessThan(5000);
    await another;
  });
});
