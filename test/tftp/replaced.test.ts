/**
 * A file in the TFTP root replaced while a client fetches it: the transfer ends with all the old bytes,
 * or fails with an ERROR; a client never receives a mix of old and new bytes.
 */
import { randomBytes } from "node:crypto";
import { rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { encodeAck, encodeRequest } from "../../src/tftp/packet.js";
import { startServer, tempDir } from "./helpers.js";
import { RawClient } from "./rawclient.js";

const SIZE = 4 * 1024 * 1024;
const BLKSIZE = 1024;

/** Lockstep fetch that calls `midway` once after `at` blocks; returns the bytes and how it ended. */
async function fetchWhileChanging(
  port: number,
  name: string,
  at: number,
  midway: () => Promise<void>,
): Promise<{ data: Buffer; error?: string }> {
  const c = await RawClient.open();
  try {
    c.send(encodeRequest("RRQ", name, "octet", [["blksize", String(BLKSIZE)]]), port);
    const oack = await c.next();
    expect(oack?.packet.op).toBe("OACK");
    const tid = oack?.from.port as number;
    c.send(encodeAck(0), tid);
    const parts: Buffer[] = [];
    for (let block = 1; ; block++) {
      const r = await c.next(5000);
      if (!r) throw new Error(`no packet after block ${block - 1}`);
      if (r.packet.op === "ERROR") return { data: Buffer.concat(parts), error: r.packet.message };
      if (r.packet.op !== "DATA") throw new Error(`unexpected ${r.packet.op}`);
      expect(r.packet.block).toBe(block & 0xffff);
      parts.push(Buffer.from(r.packet.data));
      if (block === at) await midway();
      c.send(encodeAck(block), tid);
      if (r.packet.data.length < BLKSIZE) return { data: Buffer.concat(parts) };
    }
  } finally {
    c.close();
  }
}

describe.each(["native", "dgram"] as const)("file replaced during a transfer (%s transport)", (transport) => {
  it("replaced by rename: the running transfer sends the old file whole; the next one gets the new", async () => {
    const { dir, cleanup } = await tempDir();
    const old = randomBytes(SIZE);
    const fresh = randomBytes(SIZE);
    await writeFile(join(dir, "kernel"), old);
    const { server, port } = await startServer({ root: dir, transport });
    const got = await fetchWhileChanging(port, "kernel", 100, async () => {
      await writeFile(join(dir, "kernel.new"), fresh);
      await rename(join(dir, "kernel.new"), join(dir, "kernel"));
    });
    expect(got.error).toBeUndefined();
    expect(got.data.equals(old)).toBe(true);
    const next = await fetchWhileChanging(port, "kernel", 0, async () => {});
    expect(next.data.equals(fresh)).toBe(true);
    await server.close();
    await cleanup();
  });

  it("overwritten in place: the transfer fails with an ERROR, and what was sent is all old bytes", async () => {
    const { dir, cleanup } = await tempDir();
    const old = randomBytes(SIZE);
    await writeFile(join(dir, "initrd"), old);
    const { server, port, lines } = await startServer({ root: dir, transport });
    const got = await fetchWhileChanging(port, "initrd", 100, async () => {
      await writeFile(join(dir, "initrd"), randomBytes(SIZE)); // truncates and rewrites the same inode
    });
    expect(got.error).toBeDefined();
    expect(got.data.length).toBeLessThan(SIZE);
    expect(got.data.equals(old.subarray(0, got.data.length))).toBe(true);
    await new Promise((r) => setTimeout(r, 50));
    const record = lines.find((l) => l.msg === "tftp transfer" && l.file === "initrd");
    expect(String(record?.reason)).toMatch(/file changed on disk during the transfer/);
    await server.close();
    await cleanup();
  });
});
