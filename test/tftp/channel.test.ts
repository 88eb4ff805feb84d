/** The native transfer channel and its lockstep pump, driven over loopback by a plain dgram client. */
import { execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createSocket, type Socket } from "node:dgram";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, afterEach, beforeEach, describe, expect, test } from "vitest";
import { nativeChannelAvailable, openNativeChannel, type TransferChannel } from "../../src/tftp/channel.js";
import { encodeAck, encodeError } from "../../src/tftp/packet.js";
import { resourceAvailable } from "../support/require.js";

const execFileP = promisify(execFile);
const haveAddon = resourceAvailable(
  "native addon nbdh_udp (node native/build.mjs)",
  nativeChannelAvailable(),
);

/** DATA packets whose payload names their absolute block, so a test can tell which one was sent. */
function packets(first: number, count: number): Buffer[] {
  return Array.from({ length: count }, (_, i) => {
    const p = Buffer.alloc(4 + 8);
    p.writeUInt16BE(3, 0);
    p.writeUInt16BE((first + i) & 0xffff, 2);
    p.write(`blk${first + i}`.padEnd(8, "."), 4);
    return p;
  });
}

function payloadBlock(msg: Buffer): number {
  return Number(msg.subarray(4).toString().replace(/^blk/, "").replace(/\.+$/, ""));
}

describe.skipIf(!haveAddon)("native channel", () => {
  let client: Socket;
  let channel: TransferChannel;
  const received: Buffer[] = [];
  const delivered: Buffer[] = [];
  const advanced: number[] = [];

  async function nextFromServer(): Promise<Buffer> {
    for (let i = 0; i < 200 && received.length === 0; i++) await new Promise((r) => setTimeout(r, 5));
    const m = received.shift();
    if (m === undefined) throw new Error("nothing from the channel");
    return m;
  }
  async function quiet(ms = 60): Promise<void> {
    await new Promise((r) => setTimeout(r, ms));
  }
  function ack(block: number): void {
    client.send(encodeAck(block & 0xffff), channel.port, "127.0.0.1");
  }

  beforeEach(async () => {
    received.length = 0;
    delivered.length = 0;
    advanced.length = 0;
    client = createSocket("udp4");
    client.on("message", (m) => received.push(m));
    await new Promise<void>((r) => client.bind(0, "127.0.0.1", () => r()));
    channel = openNativeChannel(4, "127.0.0.1");
    await channel.connect("127.0.0.1", client.address().port);
    channel.start(
      (m) => delivered.push(m),
      (first) => advanced.push(first),
    );
  });
  afterEach(() => {
    channel.close();
    client.close();
  });

  test("send reaches the connected client; the pump answers the expected ACKs without JS", async () => {
    const chunk = packets(1, 3);
    channel.send(chunk[0] as Buffer);
    channel.pump?.arm(chunk, 1, 10, 1);
    expect(payloadBlock(await nextFromServer())).toBe(1);
    ack(1);
    expect(payloadBlock(await nextFromServer())).toBe(2);
    ack(2);
    expect(payloadBlock(await nextFromServer())).toBe(3);
    expect(delivered).toHaveLength(0);
    expect(channel.pump?.lastSent()).toBe(3);
    // The chunk is used up: the ACK of its last block goes to JS, and nothing is sent.
    ack(3);
    await quiet();
    expect(received).toHaveLength(0);
    expect(delivered.map((m) => m.readUInt16BE(2))).toEqual([3]);
  });

  test("a duplicate or earlier ACK and any other packet go to JS, never to a send", async () => {
    const chunk = packets(1, 5);
    channel.pump?.arm(chunk, 1, 5, 2);
    ack(1); // duplicate of an earlier block
    client.send(encodeError(8, "probe"), channel.port, "127.0.0.1");
    client.send(Buffer.from([0, 4]), channel.port, "127.0.0.1"); // truncated ACK
    await quiet();
    expect(received).toHaveLength(0);
    expect(delivered).toHaveLength(3);
    expect(channel.pump?.lastSent()).toBe(2);
  });

  test("stops at the transfer's last block even with packets left", async () => {
    channel.pump?.arm(packets(1, 4), 1, 2, 1);
    ack(1);
    expect(payloadBlock(await nextFromServer())).toBe(2);
    ack(2);
    await quiet();
    expect(received).toHaveLength(0);
    expect(delivered).toHaveLength(1);
  });

  test("goes on into the queued chunk and reports it once", async () => {
    channel.pump?.arm(packets(1, 2), 1, 100, 1);
    channel.pump?.queue(packets(3, 2), 3);
    ack(1);
    expect(payloadBlock(await nextFromServer())).toBe(2);
    ack(2);
    expect(payloadBlock(await nextFromServer())).toBe(3);
    ack(3);
    expect(payloadBlock(await nextFromServer())).toBe(4);
    await quiet();
    expect(advanced).toEqual([3]);
    expect(delivered).toHaveLength(0);
  });

  test("a queued chunk that does not follow on is not used", async () => {
    channel.pump?.arm(packets(1, 2), 1, 100, 1);
    channel.pump?.queue(packets(10, 2), 10);
    ack(1);
    expect(payloadBlock(await nextFromServer())).toBe(2);
    ack(2);
    await quiet();
    expect(received).toHaveLength(0);
    expect(advanced).toEqual([]);
    expect(delivered).toHaveLength(1);
  });

  test("block numbers roll over: absolute 65536 is 0 on the wire", async () => {
    channel.pump?.arm(packets(65535, 3), 65535, 70000, 65535);
    ack(65535);
    const a = await nextFromServer();
    expect(a.readUInt16BE(2)).toBe(0);
    expect(payloadBlock(a)).toBe(65536);
    ack(65536); // wire 0
    expect(payloadBlock(await nextFromServer())).toBe(65537);
    expect(channel.pump?.lastSent()).toBe(65537);
  });

  test("lastProgress moves with the pump, on the process.hrtime clock", async () => {
    channel.pump?.arm(packets(1, 2), 1, 2, 1);
    const before = Number(process.hrtime.bigint()) / 1e6;
    ack(1);
    await nextFromServer();
    const progress = channel.pump?.lastProgressMs() ?? 0;
    expect(progress).toBeGreaterThanOrEqual(before);
    expect(progress).toBeLessThanOrEqual(Number(process.hrtime.bigint()) / 1e6);
  });

  test("disarm and close: nothing more is answered; close twice is harmless", async () => {
    channel.pump?.arm(packets(1, 3), 1, 3, 1);
    channel.pump?.disarm();
    ack(1);
    await quiet();
    expect(received).toHaveLength(0);
    expect(delivered).toHaveLength(1);
    channel.close();
    channel.close();
    channel.send(Buffer.from([0, 3, 0, 1])); // after close: dropped, no throw
  });

  test("an ICMP error (client port closed for a while) does not stop the channel from receiving", async () => {
    const port = client.address().port;
    client.close();
    // Sent to a closed port: the kernel answers port unreachable, which marks the connected socket in error.
    channel.send(Buffer.from([0, 3, 0, 1]));
    await quiet(100);
    client = createSocket("udp4");
    client.on("message", (m) => received.push(m));
    await new Promise<void>((r) => client.bind(port, "127.0.0.1", () => r()));
    ack(7);
    await quiet(100);
    expect(delivered.map((m) => m.readUInt16BE(2))).toEqual([7]);
  });

  test("bad arguments are type errors, not crashes", () => {
    expect(() => channel.pump?.arm([Buffer.alloc(4), "x" as unknown as Buffer], 1, 2, 1)).toThrow(/Buffers/);
    expect(() => openNativeChannel(4, "not-an-address")).toThrow(/IP literal/);
  });
});

/**
 * The pump's two ways of answering (native/nbdh_udp.c): batched through io_uring (the default where the
 * kernel allows it), and at once on each readable socket (NETBOOT_TFTP_BATCH=0, or no io_uring). Each is
 * a real server process serving 12 lockstep transfers at once to curl, the bytes compared.
 */
describe.skipIf(!haveAddon)("the pump, batched and not", () => {
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

  for (const batch of ["1", "0"]) {
    test(`NETBOOT_TFTP_BATCH=${batch}: 12 transfers at once arrive whole`, async () => {
      const port = 20000 + Math.floor(Math.random() * 20000);
      const server = spawn(
        process.execPath,
        [join(import.meta.dirname, "../../dist/bench/lib/tftp-serve.js"), dir, "127.0.0.1", String(port)],
        { env: { ...process.env, NETBOOT_TFTP_BATCH: batch }, stdio: ["ignore", "pipe", "pipe"] },
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
