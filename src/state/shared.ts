/**
 * State shared with a peer appliance on PostgreSQL: the connection, the schema, the lease store and,
 * in an HA pair, the heartbeat and the decision of who answers. The appliance starts it before DHCP.
 */
import { hostname } from "node:os";
import type { Logger } from "pino";
import type { LeaseBackend } from "../dhcp/lease-types.js";
import type { DhcpServerOptions } from "../dhcp/server.js";
import { type HaConfig, haConfigSchema, heartbeatMs } from "../ha/config.js";
import { PeerMonitor } from "../ha/peers.js";
import { HaScope } from "../ha/scope.js";
import { type StateConfig, stateConfigSchema } from "./config.js";
import { type BootEventFeed, PgBootEvents } from "./pg-boot-events.js";
import { PgLeaseStore } from "./pg-leases.js";
import { connect, migrate, type Sql } from "./postgres.js";

export interface SharedStateOptions {
  state: StateConfig;
  ha?: HaConfig | undefined;
  logger: Logger;
}

export class SharedState {
  readonly serverName: string;
  readonly scope: HaScope | undefined;
  private sql: Sql | undefined;
  private monitor: PeerMonitor | undefined;
  private store: PgLeaseStore | undefined;
  /** Boot events, shared with the peer: machine state reads it from start() on. */
  readonly bootEvents: BootEventFeed;

  constructor(private readonly opts: SharedStateOptions) {
    this.serverName = opts.ha?.this ?? hostname();
    this.scope = opts.ha ? new HaScope(opts.ha) : undefined;
    this.bootEvents = new PgBootEvents({
      sql: () => this.sql,
      serverName: this.serverName,
      logger: opts.logger.child({ svc: "boot-events" }),
    });
  }

  /** From unparsed `state` and `ha` sections (the test fixtures' and the benchmark's JSON specs). */
  static fromSections(state: unknown, ha: unknown, logger: Logger): SharedState {
    return new SharedState({
      state: stateConfigSchema.parse(state),
      ha: ha === undefined ? undefined : haConfigSchema.parse(ha),
      logger,
    });
  }

  /** What the DHCP server takes from shared state: its lease store and, in a pair, who answers. */
  dhcpOptions(
    onSync?: (seconds: number) => void,
  ): Pick<DhcpServerOptions, "openLeases" | "inScope" | "poolShare"> {
    return {
      openLeases: () => this.openLeases(onSync),
      inScope: this.scope ? (type, key) => this.inScope(type, key) : undefined,
      poolShare: this.scope?.poolShare,
    };
  }

  /** Connects, applies missing schema steps, and (in a pair) beats once and reads the peer. */
  async start(): Promise<void> {
    const { state, ha, logger } = this.opts;
    if (state.url === undefined) throw new Error("state.url is not set");
    this.sql = connect({
      url: state.url,
      maxConnections: state.max_connections,
      applicationName: `netboot-appliance ${this.serverName}`,
      logger,
    });
    const version = await migrate(this.sql, logger);
    logger.info({ backend: "postgres", schema: version, server: this.serverName }, "shared state ready");
    if (ha && this.scope) {
      this.monitor = new PeerMonitor({
        sql: this.sql,
        name: ha.this,
        role: this.scope.role,
        peer: this.scope.peer,
        heartbeatMs: heartbeatMs(ha),
        failoverMs: ha.failover_ms,
        logger: logger.child({ svc: "ha" }),
      });
      await this.monitor.start();
    }
  }

  async openLeases(onSync?: (seconds: number) => void): Promise<LeaseBackend> {
    if (!this.sql) throw new Error("shared state is not started");
    this.store = await PgLeaseStore.open({
      sql: this.sql,
      serverName: this.serverName,
      commitTimeoutMs: this.opts.state.commit_timeout_ms,
      logger: this.opts.logger.child({ svc: "leases" }),
      onSync,
    });
    return this.store;
  }

  /** In a pair: whether this appliance answers the message (always true without a pair). */
  inScope(type: number, key: Uint8Array): boolean {
    if (!this.scope) return true;
    return this.scope.serves(type, key, this.monitor?.peerUp ?? false);
  }

  status(): { server: string; database: boolean; peer?: { name: string; up: boolean } } {
    return {
      server: this.serverName,
      database: this.store?.available ?? this.sql !== undefined,
      ...(this.scope && this.monitor ? { peer: { name: this.scope.peer, up: this.monitor.peerUp } } : {}),
    };
  }

  /** After DHCP has stopped (and flushed its leases): the peer takes over at its next beat. */
  async stop(): Promise<void> {
    await this.monitor?.stop();
    await this.sql?.end({ timeout: 2 });
    this.sql = undefined;
  }
}
