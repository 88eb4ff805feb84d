/** The native transfer channel with the pump on the event loop, and whole servers in each pump mode. */
import { execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, describe, expect, test } from "vitest";
import { nativeChannelAvailable } from "../../src/tftp/channel.js";
import { resourceAvailable } from "../support/require.js";
import { describeNativeChannel } from "./native-channel-suite.js";

const execFileP = promisify(execFile);
const haveAddon = resourceAvailable(
  "native addon nbdh_udp (node native/build.mjs)",
  nativeChannelAvailable(),
);

describeNativeChannel("native channel, pump on the event loop", haveAddon);

/**
 * Where the pump answers (native/nbdh_udp.c): on pump threads of its own (the default, one per core) or on
 * the event loop; either way batched through io_uring (where the kernel allows it) or at once on each
 * readable socket (NETBOOT_TFTP_BATCH=0, or no io_uring). Each is a real server process serving 12
 * lockstep transfers at once to curl, the bytes compared.
 */
describe.skipIf(!haveAddon)("the pump, on threads, batched and not", () => {
  const dir = mkdtempSync(join(tmpdir(), "nbch-"));
  const file = randomBytes(3 * 1024 * 1024 + 77);
  writeFileSync(join(dir, "file.bin"), file);
  const ioUringAllowed = (() => {
    try {
      return readFileSync("/proc/sys/kernel/io_uring_disabled", "utf8").trim() === "0";
    } catch {
      return false;
    }
  })();
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const variants = [
    { threads: "3", batch: "1" },
    { threads: "1", batch: "0" },
    { threads: "0", batch: "1" },
    { threads: "0", batch: "0" },
  ];
  for (const { threads, batch } of variants) {
    test(`NETBOOT_TFTP_PUMP_THREADS=${threads} NETBOOT_TFTP_BATCH=${batch}: 12 transfers at once arrive whole`, async () => {
      const port = 20000 + Math.floor(Math.random() * 20000);
      const server = spawn(
        process.execPath,
        [join(import.meta.dirname, "../../dist/bench/lib/tftp-serve.js"), dir, "127.0.0.1", String(port)],
        {
          env: { ...process.env, NETBOOT_TFTP_PUMP_THREADS: threads, NETBOOT_TFTP_BATCH: batch },
          stdio: ["ignore", "pipe", "pipe"],
        },
      );
      let log = "";
      server.stderr?.on("data", (d: Buffer) => {
        log += d.toString();
      });
      try {
        await new Promise<void>((resolve, reject) => {
          server.stdout?.on("data", (d: Buffer) => d.toString().includes("ready") && resolve());
          server.once("exit", (code) => reject(new Error(`tftp-serve exited ${code}: ${log}`)));
        });
        // "ready" (stdout) and the "tftp listening" log line (stderr) race each other: wait for both.
        for (let i = 0; i < 100 && !log.includes("tftp listening"); i++)
          await new Promise((r) => setTimeout(r, 50));
        const listening = JSON.parse(log.split("\n").find((l) => l.includes("tftp listening")) ?? "{}");
        expect(listening.pumpThreads).toBe(Number(threads));
        expect(listening.batching).toBe(batch === "1" && ioUringAllowed);
        const got = await Promise.all(
          Array.from({ length: 12 }, async () => {
            const { stdout } = await execFileP(
              "curl",
              ["-sS", "--max-time", "60", "--tftp-blksize", "1024", `tftp://127.0.0.1:${port}/file.bin`],
              { encoding: "buffer", maxBuffer: 16 * 1024 * 1024 },
            );
            return stdout;
          }),
        );
        for (const body of got) expect(body.equals(file)).toBe(true);
      } finally {
        server.kill("SIGTERM");
      }
    }, 120_000);
  }
});
