/**
 * Leases on PostgreSQL, shared by the appliances of an HA pair.
 *
 * Memory holds every lease (the allocator reads it synchronously, as with the journal). A commit is an
 * upsert that only overwrites a row the database says is this client's, free, or expired; the primary
 * key on the address makes one address one owner, whatever the timing. A record the database refuses
 * is a LeaseConflictError (the engine NAKs), and memory learns the real holder.
 *
 * Commits made in one turn of the event loop share statements (group commit, as the journal's
 * fdatasync). Each statement also NOTIFYs its written rows in the same transaction, so the peer's
 * memory follows in commit order; after a reconnect, memory is reloaded from the table.
 */
import { randomUUID } from "node:crypto";
import type { Logger } from "pino";
import { GroupCommit } from "../dhcp/group-commit.js";
import { IndexedLeases } from "../dhcp/lease-index.js";
import { type Lease, type LeaseBackend, LeaseConflictError } from "../dhcp/lease-types.js";
import { formatRecord, parseRecord } from "../dhcp/leases.js";
import type { Sql } from "./postgres.js";

const CHANNEL = "netboot_leases";
/** NOTIFY payloads must stay under 8000 bytes; a record is at most about 115. */
const MAX_STATEMENT_RECORDS = 60;
const ERROR_LOG_INTERVAL_MS = 10_000;

const stateCode = { bound: "b", free: "f", declined: "d" } as const;

/**
 * One round trip, one transaction: write what may be written, notify the peers of exactly those rows,
 * return their addresses. A declined record (mac "") may replace the declining client's own row.
 */
const UPSERT = `
WITH input AS (
  SELECT * FROM unnest($1::inet[], $2::text[], $3::int8[], $4::char[], $5::text[], $6::text[])
    AS t(address, mac, expires_ms, state, hostname, expect_mac)
), up AS (
  INSERT INTO netboot_leases AS l (address, mac, expires_ms, state, hostname, served_by, updated_at)
  SELECT address, mac, expires_ms, state, hostname, $7, now() FROM input
  ON CONFLICT (address) DO UPDATE SET
    mac = excluded.mac, expires_ms = excluded.expires_ms, state = excluded.state,
    hostname = excluded.hostname, served_by = excluded.served_by, updated_at = now()
  WHERE l.mac = excluded.mac OR l.state <> 'b' OR l.expires_ms <= $8
     OR (excluded.state = 'd' AND l.mac = (SELECT i.expect_mac FROM input i WHERE i.address = l.address))
  RETURNING l.address, l.mac, l.expires_ms, l.state, l.hostname
), note AS MATERIALIZED (
  SELECT pg_notify('${CHANNEL}', $9 || E'\\n' || string_agg(
    host(address) || ',' || mac || ',' || expires_ms || ',' || state || ',' || hostname || E'\\n', '')) AS sent
  FROM up HAVING count(*) > 0
)
SELECT host(up.address) AS address FROM up LEFT JOIN note ON true`;

const SELECT_ALL = `SELECT host(address) AS address, mac, expires_ms, state, hostname FROM netboot_leases`;

interface Row {
  address: string;
  mac: string;
  expires_ms: number | string;
  state: string;
  hostname: string;
}

function rowToLease(r: Row): Lease | undefined {
  return parseRecord(`${r.address},${r.mac},${r.expires_ms},${r.state},${r.hostname}`);
}

/** Every lease in the shared database, read without a running server (`netboot leases`). */
export async function readLeasesFromDatabase(sql: Sql): Promise<Lease[]> {
  const rows = await sql.unsafe<Row[]>(`${SELECT_ALL} ORDER BY address`);
  return rows.map(rowToLease).filter((l): l is Lease => l !== undefined);
}

interface PendingCommit {
  records: Lease[];
  /** What each record replaced in memory, to undo a record the database did not take. */
  previous: (Lease | undefined)[];
  resolve: () => void;
  reject: (err: Error) => void;
}

export interface PgLeaseStoreOptions {
  sql: Sql;
  /** This appliance's name (ha.this, or the host name): written as served_by. */
  serverName: string;
  commitTimeoutMs: number;
  logger: Logger;
  onSync?: ((seconds: number) => void) | undefined;
  now?: () => number;
}

export class PgLeaseStore extends IndexedLeases implements LeaseBackend {
  private pending: PendingCommit[] = [];
  /** The batch being written now: a reload must keep its records too. */
  private writing: PendingCommit[] = [];
  private readonly group = new GroupCommit(
    () => this.pending.length > 0,
    () => this.flushLoop(),
  );
  private closed = false;
  private listening: { unlisten: () => Promise<void> } | undefined;
  /** Tags our own notifications, which memory already reflects. */
  private readonly instance = randomUUID();
  private errors = { count: 0, loggedAt: 0 };
  /** False after a failed statement, true after one that succeeded (status, metrics, tests). */
  available = true;
  readonly stats = { statements: 0, records: 0, conflicts: 0, failures: 0, notifications: 0, reloads: 0 };
  private readonly now: () => number;

  private constructor(private readonly opts: PgLeaseStoreOptions) {
    super();
    this.now = opts.now ?? Date.now;
  }

  static async open(opts: PgLeaseStoreOptions): Promise<PgLeaseStore> {
    const store = new PgLeaseStore(opts);
    await store.reload();
    let first = true;
    // onlisten runs on every (re)connection of the listening session: notifications sent while it was
    // down are lost, so memory is reloaded from the table then.
    store.listening = await opts.sql.listen(
      CHANNEL,
      (payload) => store.onNotify(payload),
      () => {
        if (first) {
          first = false;
          return;
        }
        store.reload().catch((err) => store.logFailure(err, "lease reload after reconnect failed"));
      },
    );
    opts.logger.info({ leases: store.size, server: opts.serverName }, "lease store opened (postgres)");
    return store;
  }

  commit(records: Lease[]): Promise<void> {
    if (this.closed) return Promise.reject(new Error("lease store is closed"));
    const clean = records.map((r) => parseRecord(formatRecord(r).slice(0, -1)) ?? r);
    const previous = clean.map((r) => this.leases.get(r.address));
    for (const r of clean) this.leases.apply(r);
    return new Promise<void>((resolve, reject) => {
      this.pending.push({ records: clean, previous, resolve, reject });
      this.group.schedule();
    });
  }

  private async flushLoop(): Promise<void> {
    while (this.pending.length > 0) {
      const batch = this.pending;
      this.pending = [];
      this.writing = batch;
      await this.writeBatch(batch);
      this.writing = [];
    }
  }

  /** Writes a batch in statements of distinct addresses, then settles each commit of it. */
  private async writeBatch(batch: PendingCommit[]): Promise<void> {
    const entries = batch.flatMap((c) =>
      c.records.map((record, i) => ({ commit: c, record, previous: c.previous[i] })),
    );
    const failures = new Map<PendingCommit, Error>();
    let start = 0;
    while (start < entries.length) {
      const seen = new Set<string>();
      let end = start;
      while (
        end < entries.length &&
        end - start < MAX_STATEMENT_RECORDS &&
        !seen.has((entries[end] as (typeof entries)[number]).record.address)
      ) {
        seen.add((entries[end] as (typeof entries)[number]).record.address);
        end++;
      }
      const chunk = entries.slice(start, end);
      start = end;
      let written: Set<string>;
      try {
        written = await this.upsert(
          chunk.map((e) => ({ record: e.record, expectMac: e.previous?.mac ?? "" })),
        );
      } catch (err) {
        this.logFailure(err, "lease database write failed: no ACK for these requests");
        for (const e of chunk) {
          this.leases.revert(e.record, e.previous);
          if (!failures.has(e.commit)) failures.set(e.commit, err as Error);
        }
        continue;
      }
      const refused = chunk.filter((e) => !written.has(e.record.address));
      for (const e of refused) {
        this.leases.revert(e.record, e.previous);
        if (!failures.has(e.commit))
          failures.set(e.commit, new LeaseConflictError(e.record.address, undefined));
      }
      if (refused.length > 0) {
        this.stats.conflicts += refused.length;
        await this.refresh(refused.map((e) => e.record.address));
      }
    }
    for (const c of batch) {
      const err = failures.get(c);
      if (err) c.reject(err);
      else c.resolve();
    }
  }

  private async upsert(items: { record: Lease; expectMac: string }[]): Promise<Set<string>> {
    const started = performance.now();
    const cols: [string[], string[], number[], string[], string[], string[]] = [[], [], [], [], [], []];
    for (const { record: r, expectMac } of items) {
      cols[0].push(r.address);
      cols[1].push(r.mac);
      cols[2].push(r.expires);
      cols[3].push(stateCode[r.state]);
      cols[4].push(r.hostname ?? "");
      cols[5].push(expectMac);
    }
    const query = this.opts.sql.unsafe<{ address: string }[]>(
      UPSERT,
      [...cols, this.opts.serverName, this.now(), this.instance] as never[],
      { prepare: true },
    );
    const rows = await withTimeout(query, this.opts.commitTimeoutMs, () => {
      // The statement may still commit: whatever it wrote is learnt when it does.
      void query.then((late) => this.refresh(late.map((r) => r.address))).catch(() => undefined);
    });
    this.available = true;
    this.stats.statements++;
    this.stats.records += items.length;
    this.opts.onSync?.((performance.now() - started) / 1000);
    return new Set(rows.map((r) => r.address));
  }

  /** Reads these addresses' rows into memory (after a conflict: who really holds them). */
  private async refresh(addresses: string[]): Promise<void> {
    try {
      const rows = await this.opts.sql.unsafe<Row[]>(`${SELECT_ALL} WHERE address = ANY($1::inet[])`, [
        addresses,
      ] as never[]);
      for (const r of rows) {
        const lease = rowToLease(r);
        if (lease) this.leases.apply(lease);
      }
    } catch (err) {
      this.logFailure(err, "lease database read failed");
    }
  }

  /** Replaces memory with the table, keeping records of commits still in flight. */
  async reload(): Promise<void> {
    const rows = await this.opts.sql.unsafe<Row[]>(SELECT_ALL);
    const inFlight = [...this.writing, ...this.pending].flatMap((c) => c.records);
    this.leases.clear();
    for (const r of rows) {
      const lease = rowToLease(r);
      if (lease) this.leases.apply(lease);
    }
    for (const r of inFlight) this.leases.apply(r);
    this.stats.reloads++;
    this.available = true;
  }

  private onNotify(payload: string): void {
    const lines = payload.split("\n");
    if (lines[0] === this.instance) return;
    this.stats.notifications++;
    for (const line of lines.slice(1)) {
      if (line === "") continue;
      const lease = parseRecord(line);
      if (lease) this.leases.apply(lease);
      else
        this.opts.logger.warn({ line: line.slice(0, 120) }, "lease notification: malformed record skipped");
    }
  }

  /** One line per interval while the database fails, with how many statements failed since the last. */
  private logFailure(err: unknown, message: string): void {
    this.available = false;
    this.stats.failures++;
    this.errors.count++;
    const now = this.now();
    if (now - this.errors.loggedAt < ERROR_LOG_INTERVAL_MS) return;
    const e = err as NodeJS.ErrnoException;
    this.opts.logger.error({ code: e.code, reason: e.message, failures: this.errors.count }, message);
    this.errors = { count: 0, loggedAt: now };
  }

  async flush(): Promise<void> {
    await this.group.settled();
  }

  async close(): Promise<void> {
    await this.flush();
    this.closed = true;
    await this.listening?.unlisten().catch(() => undefined);
  }
}

class CommitTimeoutError extends Error {
  readonly code = "ETIMEDOUT";
}

function withTimeout<T>(p: Promise<T>, ms: number, onTimeout: () => void): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => {
      onTimeout();
      reject(new CommitTimeoutError(`the lease database did not answer within ${ms} ms`));
    }, ms);
    p.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (e) => {
        clearTimeout(timer);
        reject(e);
      },
    );
  });
}
