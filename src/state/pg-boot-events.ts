/**
 * Boot events shared by the appliances of a pair. Each appliance appends the DHCP exchanges and file
 * transfers it served to `netboot_boot_events`, and reads its peer's in id order into its own machine
 * state, so either one shows a machine's whole boot, whoever served which step.
 *
 * Sharing is best effort, unlike leases: a boot never waits for it. Events go out on the next loop turn
 * (an appliance that crashes loses at most that turn's); they queue in memory (bounded) while the database
 * is away and go out when it returns. Each appliance writes one statement at a time, so its
 * ids commit in order and the reader's cursor (the last id it took) never skips a row.
 */
import type { Logger } from "pino";
import type { BootEvent } from "../machines/events.js";
import type { Sql } from "./postgres.js";

/** What machine state needs from a shared event log. */
export interface BootEventFeed {
  /** An event this appliance served. */
  publish(e: BootEvent): void;
  /** Reads the peers' events after `cursor` (0: those of the last hour), now and on every notification. */
  start(cursor: number, onEvent: (e: BootEvent) => void): Promise<void>;
  /** The id of the last peer event handed over: persisted with the sessions, so a restart resumes there. */
  readonly cursor: number;
  stop(): Promise<void>;
}

export interface PgBootEventsOptions {
  sql: () => Sql | undefined;
  serverName: string;
  logger: Logger;
  /** Events kept in memory while the database is away; the oldest go first. */
  maxQueued?: number;
  now?: () => number;
}

const CHANNEL = "netboot_boot_events";
const BATCH = 500;
const FIRST_READ_BACK_MS = 3_600_000;
const KEEP_MS = 86_400_000;
const PRUNE_EVERY_MS = 600_000;
const ERROR_LOG_INTERVAL_MS = 10_000;
/** An event row bigger than this is not a boot event: skipped. */
const MAX_EVENT_BYTES = 4096;

const INSERT = `
  WITH ins AS (
    INSERT INTO netboot_boot_events (served_by, at_ms, event)
    SELECT $1, (e::jsonb->>'at')::bigint, e::jsonb FROM unnest($2::text[]) AS e
    RETURNING id
  )
  SELECT pg_notify('${CHANNEL}', $1) FROM (SELECT count(*) FROM ins) AS c`;

const READ = `
  SELECT id, event::text AS event FROM netboot_boot_events
  WHERE id > $1 AND served_by <> $2 AND at_ms > $3
  ORDER BY id LIMIT ${BATCH}`;

export class PgBootEvents implements BootEventFeed {
  private queue: BootEvent[] = [];
  private flushing = false;
  private timer: NodeJS.Timeout | undefined;
  private immediate: NodeJS.Immediate | undefined;
  private pruneTimer: NodeJS.Timeout | undefined;
  private reading: Promise<void> | undefined;
  private readAgain = false;
  private onEvent: ((e: BootEvent) => void) | undefined;
  private listening: { unlisten: () => Promise<void> } | undefined;
  private lastId = 0;
  private errors = { count: 0, loggedAt: -Infinity };
  readonly stats = { published: 0, received: 0, dropped: 0, malformed: 0 };
  private readonly now: () => number;

  constructor(private readonly opts: PgBootEventsOptions) {
    this.now = opts.now ?? Date.now;
  }

  get cursor(): number {
    return this.lastId;
  }

  publish(e: BootEvent): void {
    // The transfer key names this appliance's own running transfers: meaningless to the peer.
    const { transferKey: _local, ...shared } = e as BootEvent & { transferKey?: string };
    this.queue.push(shared as BootEvent);
    const max = this.opts.maxQueued ?? 10_000;
    if (this.queue.length > max) {
      this.stats.dropped += this.queue.length - max;
      this.queue.splice(0, this.queue.length - max);
    }
    // The next loop turn: what one turn served goes in one statement, and a crash loses only that turn.
    if (!this.flushing)
      this.immediate ??= setImmediate(() => {
        this.immediate = undefined;
        void this.flush();
      });
  }

  async start(cursor: number, onEvent: (e: BootEvent) => void): Promise<void> {
    const sql = this.opts.sql();
    if (!sql) throw new Error("shared state is not started");
    this.lastId = cursor;
    this.onEvent = onEvent;
    // onlisten runs on every (re)connection: what was missed while away is read from the table then.
    this.listening = await sql.listen(
      CHANNEL,
      (from) => {
        if (from !== this.opts.serverName) this.read();
      },
      () => this.read(),
    );
    await this.reading;
    this.pruneTimer = setInterval(() => void this.prune(), PRUNE_EVERY_MS);
    this.pruneTimer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.immediate) clearImmediate(this.immediate);
    this.immediate = undefined;
    if (this.pruneTimer) clearInterval(this.pruneTimer);
    await this.flush();
    await this.reading;
    this.onEvent = undefined;
    await this.listening?.unlisten().catch(() => undefined);
  }

  /** Sends the queue, a batch per statement, one statement at a time. */
  private async flush(): Promise<void> {
    const sql = this.opts.sql();
    if (this.flushing || !sql) return;
    this.flushing = true;
    try {
      while (this.queue.length > 0) {
        const batch = this.queue.slice(0, BATCH);
        await sql.unsafe(INSERT, [this.opts.serverName, batch.map((e) => JSON.stringify(e))]);
        this.queue.splice(0, batch.length);
        this.stats.published += batch.length;
      }
    } catch (err) {
      this.logFailure(err, "boot events not shared: kept in memory, retried");
      this.timer ??= setTimeout(() => {
        this.timer = undefined;
        void this.flush();
      }, 1_000);
    } finally {
      this.flushing = false;
    }
  }

  /** Reads the peer's new rows in order; a notification during a read makes it go round once more. */
  private read(): void {
    if (this.reading) {
      this.readAgain = true;
      return;
    }
    this.reading = (async () => {
      const sql = this.opts.sql();
      try {
        do {
          this.readAgain = false;
          for (;;) {
            if (!sql || !this.onEvent) return;
            const since = this.lastId > 0 ? 0 : this.now() - FIRST_READ_BACK_MS;
            const rows = await sql.unsafe<{ id: string; event: string }[]>(READ, [
              this.lastId,
              this.opts.serverName,
              since,
            ]);
            for (const row of rows) {
              this.lastId = Number(row.id);
              const e = parseEvent(row.event);
              if (!e) {
                this.stats.malformed++;
                this.opts.logger.warn({ id: row.id }, "shared boot event is malformed: skipped");
                continue;
              }
              this.stats.received++;
              this.onEvent(e);
            }
            if (rows.length < BATCH) break;
          }
        } while (this.readAgain);
      } catch (err) {
        this.logFailure(err, "peer boot events not read: retried on the next notification or reconnect");
      }
    })().finally(() => {
      this.reading = undefined;
    });
  }

  private async prune(): Promise<void> {
    const sql = this.opts.sql();
    if (!sql) return;
    await sql
      .unsafe("DELETE FROM netboot_boot_events WHERE at_ms < $1", [this.now() - KEEP_MS])
      .catch((err: unknown) => this.logFailure(err, "old boot events not pruned"));
  }

  private logFailure(err: unknown, message: string): void {
    this.errors.count++;
    const now = this.now();
    if (now - this.errors.loggedAt < ERROR_LOG_INTERVAL_MS) return;
    const e = err as NodeJS.ErrnoException;
    this.opts.logger.warn(
      { code: e.code, reason: e.message, failures: this.errors.count, queued: this.queue.length },
      message,
    );
    this.errors = { count: 0, loggedAt: now };
  }
}

const DHCP_CLIENTS = new Set(["firmware", "ipxe", "os"]);
const FILE_OUTCOMES = new Set([
  "ok",
  "size-probe",
  "aborted-by-client",
  "timeout",
  "not-found",
  "denied",
  "error",
  "head",
]);

/** A row's event, checked field by field: another process wrote it, so it is input, not trusted state. */
export function parseEvent(text: string): BootEvent | undefined {
  if (text.length > MAX_EVENT_BYTES) return undefined;
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(text) as Record<string, unknown>;
  } catch {
    return undefined;
  }
  if (typeof o !== "object" || o === null || typeof o.at !== "number" || !Number.isFinite(o.at))
    return undefined;
  const str = (k: string) => o[k] === undefined || typeof o[k] === "string";
  const num = (k: string) => o[k] === undefined || (typeof o[k] === "number" && Number.isFinite(o[k]));
  if (o.kind === "dhcp") {
    const ok =
      typeof o.mac === "string" &&
      /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/.test(o.mac) &&
      typeof o.message === "string" &&
      typeof o.outcome === "string" &&
      DHCP_CLIENTS.has(o.client as string) &&
      str("ip") &&
      str("file") &&
      str("uuid") &&
      num("archCode");
    return ok ? (o as unknown as BootEvent) : undefined;
  }
  if (o.kind === "file") {
    const ok =
      (o.protocol === "tftp" || o.protocol === "http") &&
      typeof o.client === "string" &&
      typeof o.file === "string" &&
      typeof o.bytes === "number" &&
      typeof o.ms === "number" &&
      FILE_OUTCOMES.has(o.outcome as string) &&
      num("blksize") &&
      num("windowsize") &&
      num("retransmits") &&
      num("status") &&
      o.transferKey === undefined;
    return ok ? (o as unknown as BootEvent) : undefined;
  }
  return undefined;
}
