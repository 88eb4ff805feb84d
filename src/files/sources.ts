/**
 * Byte sources for transfers. Files are opened once per (device, inode, size, mtime) and shared by all
 * concurrent transfers, which read blocks with positional reads: 100 clients on one 64 MB file hold one
 * descriptor and the kernel's page cache, not 100 copies.
 *
 * A file changed in place while a transfer reads it (cp over a kernel, say) must not reach a client as a
 * mix of old and new bytes: every read checks afterwards that size and mtime are still those seen
 * at open, and fails the transfer otherwise. (A write updates mtime before it copies data, so a read that
 * saw new bytes sees the new time.) Replacing a file by rename is the clean way: running transfers keep
 * the old inode and send it whole.
 */
import { fstatSync, type Stats } from "node:fs";
import { type FileHandle, open, stat } from "node:fs/promises";
import { loadAddon } from "../native.js";

export interface BlockSource {
  readonly size: number;
  /** For files: when the content was last modified (HTTP Last-Modified and ETag). */
  readonly modifiedMs?: number;
  /** Reads up to `length` bytes at `offset`; shorter only at end of file. */
  read(offset: number, length: number): Promise<Buffer>;
  /** Fills `targets` in order from `offset` (one readv for a file); returns the bytes placed. */
  readInto(targets: Buffer[], offset: number): Promise<number>;
  /**
   * Fills the bodies of the records in `store` (one every `layout.stride` bytes, the last may be shorter,
   * each starting with `layout.header` bytes left alone) in order from `offset`; returns the bytes placed.
   * For a file, what the page cache holds is copied at once, without the threadpool (native/nbdh_file.c).
   */
  readIntoRecords(store: Buffer, layout: RecordLayout, offset: number): Promise<number>;
  /** The transfer is done with it. Idempotent. */
  release(): void;
}

/** Fixed-size records in one buffer: `header` bytes (not from the file), then the record's body. */
export interface RecordLayout {
  header: number;
  stride: number;
}

/** The bodies of the records in `store` that begin `skip` body bytes in (for a read that stopped there). */
export function recordBodies(store: Buffer, layout: RecordLayout, skip = 0): Buffer[] {
  const bodies: Buffer[] = [];
  const bodyBytes = layout.stride - layout.header;
  const first = Math.floor(skip / bodyBytes);
  for (let pos = first * layout.stride, i = 0; pos < store.length; pos += layout.stride, i++) {
    const from = pos + layout.header + (i === 0 ? skip - first * bodyBytes : 0);
    const to = Math.min(pos + layout.stride, store.length);
    if (from < to) bodies.push(store.subarray(from, to));
  }
  return bodies;
}

export function bufferSource(data: Buffer): BlockSource {
  const readInto = async (targets: Buffer[], offset: number) => {
    let pos = offset;
    for (const t of targets) pos += data.copy(t, 0, Math.min(pos, data.length));
    return pos - offset;
  };
  return {
    size: data.length,
    read: async (offset, length) => data.subarray(offset, Math.min(data.length, offset + length)),
    readInto,
    readIntoRecords: (store, layout, offset) => readInto(recordBodies(store, layout), offset),
    release: () => {},
  };
}

interface FileAddon {
  readRecordsCached(fd: number, store: Buffer, header: number, stride: number, offset: number): number;
}

/** The cached-read addon, or undefined where it is not built (every read then goes through the threadpool). */
function fileAddon(): FileAddon | undefined {
  try {
    return loadAddon<FileAddon>("nbdh_file");
  } catch {
    return undefined;
  }
}

interface SharedFile {
  key: string;
  handle: FileHandle;
  size: number;
  /** size and mtime when opened. */
  stamp: string;
  mtimeMs: number;
  refs: number;
  lingerTimer?: NodeJS.Timeout;
}

export type OpenResult =
  | { ok: true; source: BlockSource }
  | { ok: false; outcome: "not-found" | "denied"; reason: string };

/** Keeps a descriptor open this long after its last transfer, so a client's next request reuses it. */
const LINGER_MS = 5_000;

export class SharedFileCache {
  private readonly files = new Map<string, SharedFile>();
  private readonly opening = new Map<string, Promise<SharedFile>>();
  private closed = false;
  private readonly addon = fileAddon();

  /** Number of distinct files currently open (for tests and counters). */
  get openCount(): number {
    return this.files.size;
  }

  async open(path: string): Promise<OpenResult> {
    let st: Awaited<ReturnType<typeof stat>>;
    try {
      st = await stat(path);
    } catch (err) {
      return classify(err);
    }
    if (!st.isFile()) return { ok: false, outcome: "not-found", reason: "not a regular file" };
    // A changed file (new mtime or size) gets a new entry; transfers already running keep the old descriptor.
    const key = `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}`;
    let shared = this.files.get(key);
    if (shared === undefined) {
      let pending = this.opening.get(key);
      if (pending === undefined) {
        pending = this.openShared(path, key);
        this.opening.set(key, pending);
      }
      try {
        shared = await pending;
      } catch (err) {
        return classify(err);
      } finally {
        this.opening.delete(key);
      }
    }
    return { ok: true, source: this.acquire(shared) };
  }

  private async openShared(path: string, key: string): Promise<SharedFile> {
    const handle = await open(path, "r");
    const st = await handle.stat();
    const shared: SharedFile = {
      key,
      handle,
      size: st.size,
      stamp: stampOf(st),
      mtimeMs: st.mtimeMs,
      refs: 0,
    };
    if (this.closed) {
      await handle.close();
      throw Object.assign(new Error("server closing"), { code: "ECLOSED" });
    }
    this.files.set(key, shared);
    return shared;
  }

  private acquire(shared: SharedFile): BlockSource {
    shared.refs++;
    if (shared.lingerTimer) {
      clearTimeout(shared.lingerTimer);
      shared.lingerTimer = undefined;
    }
    let released = false;
    return {
      size: shared.size,
      modifiedMs: shared.mtimeMs,
      read: async (offset, length) => {
        const len = Math.max(0, Math.min(length, shared.size - offset));
        const buf = Buffer.allocUnsafe(len);
        let done = 0;
        while (done < len) {
          const { bytesRead } = await shared.handle.read(buf, done, len - done, offset + done);
          if (bytesRead === 0) break; // file truncated under us: caught just below
          done += bytesRead;
        }
        assertUnchanged(shared);
        return done === len ? buf : buf.subarray(0, done);
      },
      readInto: async (targets, offset) => {
        const done = await readvAll(shared, targets, offset);
        assertUnchanged(shared);
        return done;
      },
      readIntoRecords: async (store, layout, offset) => {
        // The page cache first, on this thread; whatever it did not hold, through the threadpool.
        const cached =
          this.addon?.readRecordsCached(shared.handle.fd, store, layout.header, layout.stride, offset) ?? 0;
        const rest = recordBodies(store, layout, cached);
        const done = cached + (rest.length > 0 ? await readvAll(shared, rest, offset + cached) : 0);
        assertUnchanged(shared);
        return done;
      },
      release: () => {
        if (released) return;
        released = true;
        shared.refs--;
        if (shared.refs === 0) {
          shared.lingerTimer = setTimeout(() => this.drop(shared), LINGER_MS);
          shared.lingerTimer.unref();
        }
      },
    };
  }

  private drop(shared: SharedFile): void {
    if (shared.refs > 0) return;
    if (this.files.get(shared.key) === shared) this.files.delete(shared.key);
    shared.handle.close().catch(() => {});
  }

  async closeAll(): Promise<void> {
    this.closed = true;
    const all = [...this.files.values()];
    this.files.clear();
    await Promise.all(
      all.map((f) => {
        if (f.lingerTimer) clearTimeout(f.lingerTimer);
        return f.handle.close().catch(() => {});
      }),
    );
  }
}

/** readv until `targets` are full or the file ends: readv may stop short (signals, page cache misses). */
async function readvAll(shared: SharedFile, targets: Buffer[], offset: number): Promise<number> {
  let done = 0;
  let pending = targets;
  while (pending.length > 0 && offset + done < shared.size) {
    const { bytesRead } = await shared.handle.readv(pending, offset + done);
    if (bytesRead === 0) break;
    done += bytesRead;
    let skip = bytesRead;
    const rest: Buffer[] = [];
    for (const t of pending) {
      if (skip >= t.length) skip -= t.length;
      else {
        rest.push(skip > 0 ? t.subarray(skip) : t);
        skip = 0;
      }
    }
    pending = rest;
  }
  return done;
}

/** Size and mtime: a write changes both or mtime at least. Not ctime: replacing the name by rename
 * changes the old inode's ctime (its link count drops) although its bytes stay as they were. */
function stampOf(st: Stats): string {
  return `${st.size}:${st.mtimeMs}`;
}

/** Throws when the file was modified since it was opened (the bytes just read may be a mix). */
function assertUnchanged(shared: SharedFile): void {
  if (stampOf(fstatSync(shared.handle.fd)) !== shared.stamp)
    throw new Error("file changed on disk during the transfer (replace files by rename)");
}

function classify(err: unknown): OpenResult {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === "EACCES" || code === "EPERM")
    return { ok: false, outcome: "denied", reason: "permission denied" };
  return { ok: false, outcome: "not-found", reason: code ?? String(err) };
}

/** Largest file converted for a netascii transfer (held in memory whole). */
export const NETASCII_MAX_BYTES = 16 * 1024 * 1024;

/** RFC 764 netascii: LF becomes CR LF, a bare CR becomes CR NUL. */
export function toNetascii(data: Buffer): Buffer {
  let extra = 0;
  for (const byte of data) if (byte === 0x0a || byte === 0x0d) extra++;
  if (extra === 0) return data;
  const out = Buffer.allocUnsafe(data.length + extra);
  let j = 0;
  for (const byte of data) {
    if (byte === 0x0a) {
      out[j++] = 0x0d;
      out[j++] = 0x0a;
    } else if (byte === 0x0d) {
      out[j++] = 0x0d;
      out[j++] = 0x00;
    } else out[j++] = byte;
  }
  return out;
}
