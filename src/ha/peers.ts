/**
 * Liveness of the pair through the database: each appliance upserts its heartbeat row every
 * heartbeat_ms and reads its peer's age by the database's clock (so the hosts' clocks do not matter).
 * A peer whose row is missing or older than failover_ms is down. A clean stop marks the row stale,
 * so the survivor takes over at its next beat instead of after failover_ms.
 */
import type { Logger } from "pino";
import type { Sql } from "../state/postgres.js";

export interface PeerMonitorOptions {
  sql: Sql;
  name: string;
  role: string;
  peer: string;
  heartbeatMs: number;
  failoverMs: number;
  logger: Logger;
  /** Told when the peer goes down or comes back. */
  onChange?: ((peerUp: boolean) => void) | undefined;
}

export class PeerMonitor {
  private timer: NodeJS.Timeout | undefined;
  private beating: Promise<void> | undefined;
  private up = false;
  private known = false;
  private failingSince: number | undefined;
  /** When the peer was last seen going down, and its heartbeat age then (for the failover measurement). */
  lastTakeover: { at: number; peerAgeMs: number } | undefined;

  constructor(private readonly opts: PeerMonitorOptions) {}

  get peerUp(): boolean {
    return this.up;
  }

  /** Beats once and reads the peer before resolving: the first query is answered with a known state. */
  async start(): Promise<void> {
    await this.opts.sql`
      INSERT INTO netboot_peers (name, role, started_at, beat_at)
      VALUES (${this.opts.name}, ${this.opts.role}, now(), clock_timestamp())
      ON CONFLICT (name) DO UPDATE SET role = excluded.role, started_at = now(), beat_at = clock_timestamp()`;
    await this.beat();
    this.timer = setInterval(() => {
      if (!this.beating) this.beating = this.beat().finally(() => (this.beating = undefined));
    }, this.opts.heartbeatMs);
    this.timer.unref();
  }

  private async beat(): Promise<void> {
    const { sql, name, peer, failoverMs, logger } = this.opts;
    let age: number | undefined;
    try {
      const rows = await sql<{ age_ms: number | null }[]>`
        WITH mine AS (UPDATE netboot_peers SET beat_at = clock_timestamp() WHERE name = ${name})
        SELECT (extract(epoch FROM clock_timestamp() - beat_at) * 1000)::float8 AS age_ms
        FROM netboot_peers WHERE name = ${peer}`;
      age = rows[0]?.age_ms ?? Number.POSITIVE_INFINITY;
      if (this.failingSince !== undefined)
        logger.info({ ms: Date.now() - this.failingSince }, "ha: heartbeat reaches the database again");
      this.failingSince = undefined;
    } catch (err) {
      // Without the database nothing is ACKed anyway: keep the last known state, say so once.
      if (this.failingSince === undefined) {
        this.failingSince = Date.now();
        logger.error({ reason: (err as Error).message }, "ha: heartbeat failed: peer state unknown");
      }
      return;
    }
    const up = age <= failoverMs;
    if (this.known && up === this.up) return;
    this.known = true;
    this.up = up;
    if (!up) this.lastTakeover = { at: Date.now(), peerAgeMs: age };
    logger.warn(
      { peer, peerUp: up, peerHeartbeatAgeMs: Number.isFinite(age) ? Math.round(age) : null, failoverMs },
      up ? "ha: peer is up: serving this appliance's share" : "ha: peer is down: serving all clients",
    );
    this.opts.onChange?.(up);
  }

  /** Stops beating and marks this appliance's row stale, so the peer takes over at its next beat. */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.beating;
    await this.opts
      .sql`UPDATE netboot_peers SET beat_at = to_timestamp(0) WHERE name = ${this.opts.name}`.catch(
      () => undefined,
    );
  }
}
