/**
 * Reading a file into TFTP-shaped records (a header, then the block) from the shared file cache: what
 * the page cache holds is copied on the loop's thread (native/nbdh_file.c), the rest through the
 * threadpool. Both must give the file's bytes in order, headers untouched, for short and empty last records.
 */
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { type BlockSource, bufferSource, recordBodies, SharedFileCache } from "../../src/files/sources.js";
import { loadAddon } from "../../src/native.js";

const HEADER = 4;
const BLKSIZE = 1000;
const STRIDE = HEADER + BLKSIZE;

/** A store for `count` records whose bodies hold `bytes` in all, headers set to 0xee. */
function storeFor(count: number, bytes: number): Buffer {
  const store = Buffer.alloc(count * HEADER + bytes, 0x55);
  for (let pos = 0; pos < store.length; pos += STRIDE) store.fill(0xee, pos, pos + HEADER);
  return store;
}

/** The bodies back in one buffer, and whether every header is still 0xee. */
function unpack(store: Buffer): { body: Buffer; headersKept: boolean } {
  let headersKept = true;
  for (let pos = 0; pos < store.length; pos += STRIDE)
    headersKept &&= store.subarray(pos, pos + HEADER).every((b) => b === 0xee);
  return { body: Buffer.concat(recordBodies(store, { header: HEADER, stride: STRIDE })), headersKept };
}

const dir = mkdtempSync(join(tmpdir(), "netboot-sources-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A file of `size` random bytes, written through to disk and dropped from the page cache. */
function uncachedFile(name: string, size: number): { path: string; data: Buffer } {
  const path = join(dir, name);
  const data = randomBytes(size);
  writeFileSync(path, data);
  execFileSync("sync", [path]);
  // GNU dd: posix_fadvise(DONTNEED) over the whole file, so the next read has to go to the disk.
  execFileSync("dd", [`if=${path}`, "iflag=nocache", "count=0", "status=none"]);
  return { path, data };
}

async function readAll(source: BlockSource, count: number, offset: number): Promise<Buffer> {
  const bytes = Math.min(count * BLKSIZE, source.size - offset);
  const store = storeFor(count, bytes);
  const got = await source.readIntoRecords(store, { header: HEADER, stride: STRIDE }, offset);
  const { body, headersKept } = unpack(store);
  expect(got).toBe(bytes);
  expect(headersKept).toBe(true);
  return body;
}

describe("records read from a source", () => {
  it("recordBodies resumes inside a record and skips an empty last one", () => {
    const store = storeFor(3, 2 * BLKSIZE);
    const bodies = recordBodies(store, { header: HEADER, stride: STRIDE }, BLKSIZE + 10);
    expect(bodies.map((b) => b.length)).toEqual([BLKSIZE - 10]);
    expect(bodies[0]?.byteOffset).toBe(store.byteOffset + STRIDE + HEADER + 10);
  });

  it("a buffer source fills bodies, a short last one included", async () => {
    const data = randomBytes(5 * BLKSIZE + 123);
    const body = await readAll(bufferSource(data), 3, 3 * BLKSIZE);
    expect(body.equals(data.subarray(3 * BLKSIZE))).toBe(true);
  });

  it("a file in the page cache is read on this thread, whole", async () => {
    const path = join(dir, "cached");
    const data = randomBytes(300 * BLKSIZE + 7);
    writeFileSync(path, data);
    const { readRecordsCached } = loadAddon<{
      readRecordsCached(fd: number, s: Buffer, h: number, st: number, o: number): number;
    }>("nbdh_file");
    const fd = openSync(path, "r");
    try {
      const store = storeFor(128, 128 * BLKSIZE);
      expect(readRecordsCached(fd, store, HEADER, STRIDE, BLKSIZE)).toBe(128 * BLKSIZE);
      expect(unpack(store).body.equals(data.subarray(BLKSIZE, 129 * BLKSIZE))).toBe(true);
      // At the end of the file it stops short; an error (here a bad descriptor) places nothing, and
      // the threadpool read that follows reports it.
      const tail = storeFor(2, BLKSIZE + 7);
      expect(readRecordsCached(fd, tail, HEADER, STRIDE, 299 * BLKSIZE)).toBe(BLKSIZE + 7);
      expect(readRecordsCached(987654, tail, HEADER, STRIDE, 0)).toBe(0);
    } finally {
      closeSync(fd);
    }
    const cache = new SharedFileCache();
    const opened = await cache.open(path);
    if (!opened.ok) throw new Error(opened.reason);
    expect(
      (await readAll(opened.source, 128, 172 * BLKSIZE)).equals(data.subarray(172 * BLKSIZE, 300 * BLKSIZE)),
    ).toBe(true);
    opened.source.release();
    await cache.closeAll();
  });

  it("bytes not in the page cache come through the threadpool, the same bytes", async () => {
    const { path, data } = uncachedFile("uncached", 256 * BLKSIZE);
    const { readRecordsCached } = loadAddon<{
      readRecordsCached(fd: number, s: Buffer, h: number, st: number, o: number): number;
    }>("nbdh_file");
    const fd = openSync(path, "r");
    try {
      // The cached read takes none of it (RWF_NOWAIT would have to wait for the disk)...
      expect(readRecordsCached(fd, storeFor(128, 128 * BLKSIZE), HEADER, STRIDE, 0)).toBeLessThan(
        128 * BLKSIZE,
      );
    } finally {
      closeSync(fd);
    }
    execFileSync("dd", [`if=${path}`, "iflag=nocache", "count=0", "status=none"]);
    // ...and the source still delivers every byte.
    const cache = new SharedFileCache();
    const opened = await cache.open(path);
    if (!opened.ok) throw new Error(opened.reason);
    expect((await readAll(opened.source, 128, 0)).equals(data.subarray(0, 128 * BLKSIZE))).toBe(true);
    opened.source.release();
    await cache.closeAll();
  });
});
