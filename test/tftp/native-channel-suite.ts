/**
 * The native transfer channel and its lockstep pump, driven over loopback by a plain dgram client: one
 * suite for both owners of the socket (the event loop, or a pump thread; the process's first
 * useNativePumpThreads call decides which).
 */
import { createSocket, type Socket } from "node:dgram";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { openNativeChannel, type TransferChannel } from "../../src/tftp/channel.js";
import { encodeAck, encodeError } from "../../src/tftp/packet.js";

/** Bytes from one packet to the next in a chunk: a 4-byte header and 8 bytes of payload. */
const STRIDE = 12;

/**
 * A chunk of DATA packets whose payload names their absolute block, so a test can tell which one was
 * sent; `lastPayload` shortens the last packet's payload (a file's short last block).
 */
function packets(first: number, count: number, lastPayload = 8): Buffer {
  const store = Buffer.alloc(count * STRIDE - (8 - lastPayload));
  for (let i = 0; i < count; i++) {
    const p = store.subarray(i * STRIDE, Math.min((i + 1) * STRIDE, store.length));
    p.writeUInt16BE(3, 0);
    p.writeUInt16BE((first + i) & 0xffff, 2);
    p.write(`blk${first + i}`.padEnd(8, "."), 4, p.length - 4);
  }
  return store;
}

function payloadBlock(msg: Buffer): number {
  return Number(msg.subarray(4).toString().replace(/^blk/, "").replace(/\.+$/, ""));
}

export function describeNativeChannel(title: string, haveAddon: boolean): void {
  describe.skipIf(!haveAddon)(title, () => {
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
      channel.send(chunk.subarray(0, STRIDE));
      channel.pump?.arm(chunk, STRIDE, 1, 10, 1);
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
      channel.pump?.arm(chunk, STRIDE, 1, 5, 2);
      ack(1); // duplicate of an earlier block
      client.send(encodeError(8, "probe"), channel.port, "127.0.0.1");
      client.send(Buffer.from([0, 4]), channel.port, "127.0.0.1"); // truncated ACK
      await quiet();
      expect(received).toHaveLength(0);
      expect(delivered).toHaveLength(3);
      expect(channel.pump?.lastSent()).toBe(2);
    });

    test("stops at the transfer's last block even with packets left", async () => {
      channel.pump?.arm(packets(1, 4), STRIDE, 1, 2, 1);
      ack(1);
      expect(payloadBlock(await nextFromServer())).toBe(2);
      ack(2);
      await quiet();
      expect(received).toHaveLength(0);
      expect(delivered).toHaveLength(1);
    });

    test("goes on into the queued chunk and reports it once", async () => {
      channel.pump?.arm(packets(1, 2), STRIDE, 1, 100, 1);
      channel.pump?.queue(packets(3, 2), STRIDE, 3);
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
      channel.pump?.arm(packets(1, 2), STRIDE, 1, 100, 1);
      channel.pump?.queue(packets(10, 2), STRIDE, 10);
      ack(1);
      expect(payloadBlock(await nextFromServer())).toBe(2);
      ack(2);
      await quiet();
      expect(received).toHaveLength(0);
      expect(advanced).toEqual([]);
      expect(delivered).toHaveLength(1);
    });

    test("block numbers roll over: absolute 65536 is 0 on the wire", async () => {
      channel.pump?.arm(packets(65535, 3), STRIDE, 65535, 70000, 65535);
      ack(65535);
      const a = await nextFromServer();
      expect(a.readUInt16BE(2)).toBe(0);
      expect(payloadBlock(a)).toBe(65536);
      ack(65536); // wire 0
      expect(payloadBlock(await nextFromServer())).toBe(65537);
      expect(channel.pump?.lastSent()).toBe(65537);
    });

    test("a chunk's short last packet goes out at its own length, and an empty one as a bare header", async () => {
      channel.pump?.arm(packets(1, 3, 5), STRIDE, 1, 3, 1);
      ack(1);
      expect((await nextFromServer()).length).toBe(STRIDE);
      ack(2);
      const last = await nextFromServer();
      expect(last.length).toBe(4 + 5);
      expect(last.readUInt16BE(2)).toBe(3);
      channel.pump?.arm(packets(4, 2, 0), STRIDE, 4, 5, 4);
      ack(4);
      const empty = await nextFromServer();
      expect([empty.length, empty.readUInt16BE(2)]).toEqual([4, 5]);
    });

    async function window(count: number): Promise<number[]> {
      const blocks: number[] = [];
      for (let i = 0; i < count; i++) blocks.push(payloadBlock(await nextFromServer()));
      return blocks;
    }

    test("windowed: the ACK of a window's last block sends the next window; windowFirst is its first block", async () => {
      channel.pump?.arm(packets(1, 12), STRIDE, 1, 12, 4, 4);
      ack(4);
      expect(await window(4)).toEqual([5, 6, 7, 8]);
      expect([channel.pump?.windowFirst(), channel.pump?.lastSent()]).toEqual([5, 8]);
      ack(8);
      expect(await window(4)).toEqual([9, 10, 11, 12]);
      await quiet();
      expect(received).toHaveLength(0);
      expect(delivered).toHaveLength(0);
    });

    test("windowed: an ACK inside the window, or one for a window not all prepared, goes to JS", async () => {
      channel.pump?.arm(packets(1, 6), STRIDE, 1, 100, 4, 4);
      ack(2); // inside the window sent: the client lost 3 and 4 (RFC 7440), JS restarts from there
      await quiet();
      expect(received).toHaveLength(0);
      expect(delivered.map((m) => m.readUInt16BE(2))).toEqual([2]);
      // Blocks 5..8 are wanted but only 5 and 6 are prepared, and nothing is queued: JS reads and sends.
      ack(4);
      await quiet();
      expect(received).toHaveLength(0);
      expect(delivered.map((m) => m.readUInt16BE(2))).toEqual([2, 4]);
      expect(channel.pump?.lastSent()).toBe(4);
    });

    test("windowed: a window that runs into the queued chunk is sent whole and reported once", async () => {
      channel.pump?.arm(packets(1, 6), STRIDE, 1, 100, 4, 4);
      channel.pump?.queue(packets(7, 6), STRIDE, 7);
      ack(4);
      expect(await window(4)).toEqual([5, 6, 7, 8]);
      await quiet();
      expect(advanced).toEqual([7]);
      ack(8);
      expect(await window(4)).toEqual([9, 10, 11, 12]);
      expect(advanced).toEqual([7]);
    });

    test("windowed: the last window stops at the transfer's last block", async () => {
      channel.pump?.arm(packets(1, 8), STRIDE, 1, 6, 4, 4);
      ack(4);
      expect(await window(2)).toEqual([5, 6]);
      ack(6);
      await quiet();
      expect(received).toHaveLength(0);
      expect(delivered.map((m) => m.readUInt16BE(2))).toEqual([6]);
    });

    test("lastProgress moves with the pump, on the process.hrtime clock", async () => {
      channel.pump?.arm(packets(1, 2), STRIDE, 1, 2, 1);
      const before = Number(process.hrtime.bigint()) / 1e6;
      ack(1);
      await nextFromServer();
      const progress = channel.pump?.lastProgressMs() ?? 0;
      expect(progress).toBeGreaterThanOrEqual(before);
      expect(progress).toBeLessThanOrEqual(Number(process.hrtime.bigint()) / 1e6);
    });

    test("disarm and close: nothing more is answered; close twice is harmless", async () => {
      channel.pump?.arm(packets(1, 3), STRIDE, 1, 3, 1);
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
      expect(() => channel.pump?.arm("x" as unknown as Buffer, STRIDE, 1, 2, 1)).toThrow(/Buffer of packets/);
      expect(() => channel.pump?.arm(packets(1, 2), 3, 1, 2, 1)).toThrow(/stride/);
      expect(() => channel.pump?.queue(Buffer.alloc(0), STRIDE, 3)).toThrow(/non-empty/);
      expect(() => channel.pump?.arm(packets(1, 2), STRIDE, 1, 2, 1, 0)).toThrow(/window/);
      expect(() => channel.pump?.arm(packets(1, 2), STRIDE, 1, 2, 1, 65)).toThrow(/window/);
      expect(() => openNativeChannel(4, "not-an-address")).toThrow(/IP literal/);
    });
  });
}
