/**
 * Persistent lease store: an append-only journal in the state directory, fsynced before any ACK is
 * sent, with group commit (every record committed in the same turn of the event loop shares one write
 * and one fdatasync), and background compaction in the manner of Kea's memfile LFC.
 *
 * Files (all in the state directory):
 *   dhcp-leases.csv            the journal being appended to
 *   dhcp-leases.csv.2          a rotated journal being compacted
 *   dhcp-leases.csv.completed  the last compacted snapshot
 *   dhcp-leases.csv.output     a snapshot being written (ignored at load, replaced atomically)
 * Load order: completed, .2, journal; the last record for an address wins. Records are keyed by
 * address, so one address can never belong to two clients after a replay, and a client moving to a
 * new address gets a `free` record for the old one in the same batch.
 *
 * A record is one line `address,mac,expires_ms,state,hostname\n`. Only newline-terminated, well-formed
 * lines count: a torn tail after a crash (never ACKed, since ACKs wait for fdatasync) is cut off at load.
 */
import {
  closeSync,
  existsSync,
  fdatasync,
  fstatSync,
  fsyncSync,
  ftruncateSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  truncateSync,
  writeSync,
} from "node:fs";
import { open, readFile, rename, unlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "pino";
import { GroupCommit } from "./group-commit.js";

import { IndexedLeases } from "./lease-index.js";
import type { Lease, LeaseBackend, LeaseState } from "./lease-types.js";

export type { Lease, LeaseState } from "./lease-types.js";

const JOURNAL = "dhcp-leases.csv";
const ROTATED = `${JOURNAL}.2`;
const COMPLETED = `${JOURNAL}.completed`;
const OUTPUT = `${JOURNAL}.output`;

const stateCode: Record<LeaseState, string> = { bound: "b", free: "f", declined: "d" };
const codeState: Record<string, LeaseState> = { b: "bound", f: "free", d: "declined" };
const lineRe = /^(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}),([0-9a-f:]{0,47}),(\d{1,15}),([bfd]),([^,\n]*)$/;

export function formatRecord(l: Lease): string {
  const host = (l.hostname ?? "").replace(/[,\n\r]/g, "_").slice(0, 63);
  return `${l.address},${l.mac},${l.expires},${stateCode[l.state]},${host}\n`;
}

export function parseRecord(line: string): Lease | undefined {
  const m = lineRe.exec(line);
  if (!m) return undefined;
  const lease: Lease = {
    address: m[1] as string,
    mac: m[2] as string,
    expires: Number(m[3]),
    state: codeState[m[4] as string] as LeaseState,
  };
  if (m[5]) lease.hostname = m[5];
  return lease;
}

/** Replays complete lines of `text` into `into`; returns the byte length of the complete-line prefix. */
function replay(text: string, into: Map<string, Lease>): { validPrefix: number; bad: number } {
  let pos = 0;
  let bad = 0;
  for (;;) {
    const nl = text.indexOf("\n", pos);
    if (nl === -1) break;
    const lease = parseRecord(text.slice(pos, nl));
    if (lease) into.set(lease.address, lease);
    else bad++;
    pos = nl + 1;
  }
  return { validPrefix: Buffer.byteLength(text.slice(0, pos)), bad };
}

function readIfExists(path: string): string | undefined {
  try {
    return readFileSync(path, "latin1");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
}

function fsyncDir(dir: string): void {
  const fd = openSync(dir, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Reads the lease state of a state directory without opening it for writing (for `netboot leases`). */
export function readLeases(stateDir: string): Lease[] {
  const map = new Map<string, Lease>();
  for (const name of [COMPLETED, ROTATED, JOURNAL]) {
    const text = readIfExists(join(stateDir, name));
    if (text !== undefined) replay(text, map);
  }
  return [...map.values()];
}

export interface LeaseStoreOptions {
  /** Compact when the journal has this many more records than there are live addresses. Default 20000. */
  compactAfter?: number;
  /** Keep free/expired records this long in snapshots (client affinity). Default 1 day. */
  keepExpiredMs?: number;
  /** Told how long each group commit's write and fdatasync took, in seconds (a metrics histogram). */
  onSync?: ((seconds: number) => void) | undefined;
}

interface Waiter {
  resolve: () => void;
  reject: (err: Error) => void;
}

export class LeaseStore extends IndexedLeases implements LeaseBackend {
  private pending: string[] = [];
  /** What each pending record replaced in memory, so a batch that fails to reach disk is undone. */
  private undo: { applied: Lease; previous: Lease | undefined }[] = [];
  private waiters: Waiter[] = [];
  /** Bytes of the journal known to be whole; a failed write is cut back to this. */
  private journalBytes = 0;
  private readonly group = new GroupCommit(
    () => this.pending.length > 0,
    () => this.flushLoop(),
  );
  private journalRecords = 0;
  private compacting: Promise<void> | undefined;
  private closed = false;
  /** Batches and records written, for the benchmark and tests. */
  readonly stats = { batches: 0, records: 0, compactions: 0, maxBatch: 0, maxSyncMs: 0, totalSyncMs: 0 };

  private constructor(
    private readonly dir: string,
    private fd: number,
    private readonly logger: Logger,
    private readonly opts: Required<Omit<LeaseStoreOptions, "onSync">> & Pick<LeaseStoreOptions, "onSync">,
  ) {
    super();
  }

  static async open(dir: string, logger: Logger, options: LeaseStoreOptions = {}): Promise<LeaseStore> {
    mkdirSync(dir, { recursive: true });
    const opts = {
      compactAfter: options.compactAfter ?? 20000,
      keepExpiredMs: options.keepExpiredMs ?? 86_400_000,
      onSync: options.onSync,
    };
    const map = new Map<string, Lease>();
    const completed = readIfExists(join(dir, COMPLETED));
    if (completed !== undefined) replay(completed, map);
    const rotated = readIfExists(join(dir, ROTATED));
    if (rotated !== undefined) replay(rotated, map);
    const journalPath = join(dir, JOURNAL);
    const journal = readIfExists(journalPath);
    let records = 0;
    if (journal !== undefined) {
      const { validPrefix, bad } = replay(journal, map);
      records = journal.length === 0 ? 0 : journal.split("\n").length - 1;
      if (validPrefix < Buffer.byteLength(journal, "latin1")) {
        // Torn tail of a write that was never fsynced (so never ACKed): cut it so appends start clean.
        truncateSync(journalPath, validPrefix);
        logger.warn(
          { file: journalPath, cut: Buffer.byteLength(journal, "latin1") - validPrefix },
          "lease journal: torn tail removed",
        );
      }
      if (bad > 0) logger.warn({ file: journalPath, bad }, "lease journal: malformed records skipped");
    }
    const fd = openSync(journalPath, "a");
    fsyncDir(dir);
    const store = new LeaseStore(dir, fd, logger, opts);
    for (const lease of map.values()) store.apply(lease);
    store.journalRecords = records;
    store.journalBytes = fstatSync(fd).size;
    // A compaction interrupted by a crash: finish it before serving.
    if (rotated !== undefined) await store.compactRotated();
    logger.info({ dir, leases: map.size }, "lease store opened");
    return store;
  }

  private apply(lease: Lease): void {
    this.leases.apply(lease);
  }

  /**
   * Applies records in memory now (so the allocator sees them at once) and resolves when they are on
   * disk. Send the ACK only after it resolves; on rejection send nothing.
   */
  commit(records: Lease[]): Promise<void> {
    if (this.closed) return Promise.reject(new Error("lease store is closed"));
    for (const r of records) {
      this.undo.push({ applied: r, previous: this.leases.get(r.address) });
      this.apply(r);
      this.pending.push(formatRecord(r));
    }
    return new Promise<void>((resolve, reject) => {
      this.waiters.push({ resolve, reject });
      this.group.schedule();
    });
  }

  private async flushLoop(): Promise<void> {
    while (this.pending.length > 0) {
      const data = Buffer.from(this.pending.join(""), "latin1");
      const waiters = this.waiters;
      const undo = this.undo;
      const count = this.pending.length;
      this.pending = [];
      this.waiters = [];
      this.undo = [];
      try {
        // write(2) of a few KB into the page cache is quick: done inline, saving a thread-pool hop;
        // fdatasync, the slow part, runs in the pool while the event loop keeps serving.
        const started = performance.now();
        try {
          writeAllSync(this.fd, data);
          await new Promise<void>((res, rej) => fdatasync(this.fd, (e) => (e ? rej(e) : res())));
        } catch (err) {
          this.discardBatch(undo);
          throw err;
        }
        this.journalBytes += data.length;
        const ms = performance.now() - started;
        this.opts.onSync?.(ms / 1000);
        this.stats.totalSyncMs += ms;
        if (ms > this.stats.maxSyncMs) this.stats.maxSyncMs = Math.round(ms * 10) / 10;
        if (count > this.stats.maxBatch) this.stats.maxBatch = count;
        this.stats.batches++;
        this.stats.records += count;
        this.journalRecords += count;
        for (const w of waiters) w.resolve();
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        this.logger.error(
          { err, code, records: count, dir: this.dir },
          code === "ENOSPC"
            ? "lease journal write failed: the state directory is full; no ACK for this batch"
            : "lease journal write failed: no ACK for this batch",
        );
        for (const w of waiters) w.reject(err as Error);
      }
      if (this.journalRecords > this.opts.compactAfter + this.leases.size && !this.compacting && !this.closed)
        this.rotate();
    }
  }

  /**
   * A batch that did not reach disk: the journal is cut back to its last whole record (a torn line
   * must not glue itself to the next batch), and memory forgets the records, newest first, where
   * nothing has replaced them since.
   */
  private discardBatch(undo: { applied: Lease; previous: Lease | undefined }[]): void {
    try {
      ftruncateSync(this.fd, this.journalBytes);
    } catch (err) {
      this.logger.error(
        { err },
        "lease journal: cannot cut a failed write back (the torn tail is removed at load)",
      );
    }
    for (let i = undo.length - 1; i >= 0; i--) {
      const { applied, previous } = undo[i] as (typeof undo)[number];
      this.leases.revert(applied, previous);
    }
  }

  /** Waits until every committed record is on disk. */
  async flush(): Promise<void> {
    await this.group.settled();
  }

  /** Called between batches (nothing in flight): the journal is closed, renamed to .2, and a new one started. */
  private rotate(): void {
    const dir = this.dir;
    if (existsSync(join(dir, ROTATED))) {
      // An earlier compaction failed (a full disk, say): finish it before rotating again, or the
      // rename would replace .2 and lose its records.
      this.compacting = this.compactRotated()
        .catch((err) => this.logger.error({ err }, "lease compaction failed (will retry)"))
        .finally(() => {
          this.compacting = undefined;
        });
      return;
    }
    try {
      renameSync(join(dir, JOURNAL), join(dir, ROTATED));
      const fd = openSync(join(dir, JOURNAL), "a");
      fsyncDir(dir);
      closeSync(this.fd);
      this.fd = fd;
      this.journalBytes = 0;
    } catch (err) {
      this.logger.error({ err }, "lease journal rotation failed");
      return;
    }
    this.journalRecords = 0;
    this.compacting = this.compactRotated()
      .catch((err) => this.logger.error({ err }, "lease compaction failed (will retry)"))
      .finally(() => {
        this.compacting = undefined;
      });
  }

  /** Merges completed + .2 into a new completed snapshot, then removes .2. */
  private async compactRotated(): Promise<void> {
    const dir = this.dir;
    const started = Date.now();
    const map = new Map<string, Lease>();
    for (const name of [COMPLETED, ROTATED]) {
      try {
        replay(await readFile(join(dir, name), "latin1"), map);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
      }
    }
    const horizon = Date.now() - this.opts.keepExpiredMs;
    const lines: string[] = [];
    for (const l of map.values()) if (l.state === "bound" || l.expires > horizon) lines.push(formatRecord(l));
    const outPath = join(dir, OUTPUT);
    await writeFile(outPath, lines.join(""), "latin1");
    const out = await open(outPath, "r+");
    await out.sync();
    await out.close();
    await rename(outPath, join(dir, COMPLETED));
    fsyncDir(dir);
    await unlink(join(dir, ROTATED));
    fsyncDir(dir);
    this.stats.compactions++;
    this.logger.info({ records: lines.length, ms: Date.now() - started }, "lease journal compacted");
  }

  async close(): Promise<void> {
    await this.flush();
    this.closed = true;
    if (this.compacting) await this.compacting;
    closeSync(this.fd);
  }
}

function writeAllSync(fd: number, buf: Buffer): void {
  let off = 0;
  while (off < buf.length) off += writeSync(fd, buf, off, buf.length - off);
}

/** For tests: true if a state directory holds a lease journal. */
export function hasJournal(stateDir: string): boolean {
  return existsSync(join(stateDir, JOURNAL));
}

export const leaseFiles = { JOURNAL, ROTATED, COMPLETED, OUTPUT } as const;
