/** The DHCP server: sockets per interface (transport.ts) around the protocol engine (engine.ts). */
import type { Logger } from "pino";
import type { DhcpEvent } from "../machines/events.js";
import type { BootPolicy } from "./boot-types.js";
import type { DhcpConfig } from "./config.js";
import { DhcpEngine, type ExchangeContext } from "./engine.js";
import { type DhcpIntake, type GuardSettings, openDhcpIntake } from "./intake.js";
import type { LeaseBackend } from "./lease-types.js";
import { type Lease, LeaseStore, type LeaseStoreOptions, readLeases } from "./leases.js";
import { interfaceAddress } from "./transport.js";

export type { Lease } from "./leases.js";

export interface DhcpServerOptions {
  config: DhcpConfig;
  stateDir: string;
  logger: Logger;
  bootPolicy: BootPolicy;
  leaseStore?: LeaseStoreOptions;
  /** Opens the lease store when it is not the journal in stateDir (PostgreSQL, shared by a pair). */
  openLeases?: (() => Promise<LeaseBackend>) | undefined;
  /** In an HA pair: whether this server answers (see EngineOptions.inScope). */
  inScope?: ((type: number, key: Uint8Array) => boolean) | undefined;
  poolShare?: { index: number; count: number } | undefined;
  /** Told of every exchange (the appliance passes them to the machine state). */
  onExchange?: ((e: DhcpEvent) => void) | undefined;
}

/** Current leases of a state directory, read without a running server (`netboot leases`). */
export function readLeasesFromStateDir(stateDir: string): Lease[] {
  return readLeases(stateDir);
}
export { readLeases };

export class DhcpServer {
  private config: DhcpConfig;
  private readonly logger: Logger;
  private store: LeaseBackend | undefined;
  private engine: DhcpEngine | undefined;
  private sockets: DhcpIntake[] = [];
  private sweeper: NodeJS.Timeout | undefined;
  private inFlight = new Set<Promise<void>>();
  private guardReporter: NodeJS.Timeout | undefined;

  constructor(private readonly opts: DhcpServerOptions) {
    this.config = opts.config;
    this.logger = opts.logger;
  }

  private guardSettings(): GuardSettings {
    return {
      perMacPerSecond: this.config.rate_limit.per_mac_per_second,
      burst: this.config.rate_limit.burst,
    };
  }

  /** One line per interval and socket for what the admission dropped, never one per datagram. */
  private reportFlood(): void {
    for (const intake of this.sockets) {
      const s = intake.summary();
      const queueDropped = intake.queueDroppedSinceLast();
      if (s)
        this.logger.warn(
          {
            iface: intake.iface,
            port: intake.port,
            dropped: s.dropped,
            macs: s.macs,
            top: s.top,
            perMacPerSecond: this.config.rate_limit.per_mac_per_second,
          },
          "dhcp requests over the per-MAC rate dropped",
        );
      if (queueDropped > 0)
        this.logger.warn(
          { iface: intake.iface, port: intake.port, dropped: queueDropped },
          "dhcp requests dropped: the server fell behind its intake queue",
        );
    }
  }

  async start(): Promise<void> {
    if (this.config.mode === "off") {
      this.logger.info("dhcp mode off: not listening");
      return;
    }
    this.store = this.opts.openLeases
      ? await this.opts.openLeases()
      : await LeaseStore.open(this.opts.stateDir, this.logger, this.opts.leaseStore);
    this.engine = new DhcpEngine({
      config: this.config,
      store: this.store,
      inScope: this.opts.inScope,
      poolShare: this.opts.poolShare,
      bootPolicy: this.opts.bootPolicy,
      logger: this.logger,
      onExchange: this.opts.onExchange,
    });
    const ports =
      this.config.mode === "proxy" ? [this.config.port, this.config.proxy_port] : [this.config.port];
    try {
      for (const iface of this.config.interfaces) {
        for (const port of ports) {
          const intake: DhcpIntake = openDhcpIntake(iface, port, this.guardSettings(), (msg, from) =>
            this.receive(intake, msg, from),
          );
          this.sockets.push(intake);
        }
      }
    } catch (err) {
      await this.stop();
      throw err;
    }
    this.sweeper = setInterval(() => this.engine?.sweepOffers(), 30_000);
    this.sweeper.unref();
    this.guardReporter = setInterval(() => this.reportFlood(), 10_000);
    this.guardReporter.unref();
    this.logger.info(
      { mode: this.config.mode, interfaces: this.config.interfaces, ports, leases: this.store.size },
      "dhcp listening",
    );
  }

  private receive(bound: DhcpIntake, msg: Buffer, rinfo: { address: string; port: number }): void {
    const engine = this.engine;
    if (!engine) return;
    const serverAddress = this.config.server_address ?? this.addressOf(bound.iface);
    if (serverAddress === undefined) {
      this.logger.warn({ iface: bound.iface }, "interface has no IPv4 address: datagram dropped");
      return;
    }
    const ctx: ExchangeContext = { iface: bound.iface, serverAddress, localPort: bound.port, from: rinfo };
    const work = engine
      .handle(msg, ctx)
      .then((out) => {
        if (!out) return;
        const err = bound.send(out.buffer, out.address, out.port);
        if (err)
          this.logger.warn({ err, to: `${out.address}:${out.port}`, iface: bound.iface }, "dhcp send failed");
      })
      .catch((err) => this.logger.error({ err }, "dhcp exchange failed"))
      .finally(() => this.inFlight.delete(work));
    this.inFlight.add(work);
  }

  private addressCache = new Map<string, { address: string | undefined; at: number }>();

  /** The interface's IPv4 address, looked up at most once a second (os.networkInterfaces is costly). */
  private addressOf(iface: string): string | undefined {
    const now = Date.now();
    const hit = this.addressCache.get(iface);
    if (hit && now - hit.at < 1000) return hit.address;
    const address = interfaceAddress(iface);
    this.addressCache.set(iface, { address, at: now });
    return address;
  }

  /** Stops listening, finishes exchanges in progress and flushes the lease journal. */
  async stop(): Promise<void> {
    if (this.sweeper) clearInterval(this.sweeper);
    this.sweeper = undefined;
    if (this.guardReporter) clearInterval(this.guardReporter);
    this.guardReporter = undefined;
    this.reportFlood();
    const sockets = this.sockets;
    this.sockets = [];
    for (const s of sockets) s.close();
    await Promise.allSettled([...this.inFlight]);
    await this.store?.close();
    this.store = undefined;
    this.engine = undefined;
  }

  /** New config (and boot policy): leases are kept; interface, port or mode changes need a restart. */
  reload(config: DhcpConfig, bootPolicy?: BootPolicy): void {
    const restartNeeded =
      config.mode !== this.config.mode ||
      config.port !== this.config.port ||
      config.proxy_port !== this.config.proxy_port ||
      config.interfaces.join(",") !== this.config.interfaces.join(",");
    if (restartNeeded)
      this.logger.warn("dhcp mode, port or interface changes need a restart; other changes applied");
    this.config = {
      ...config,
      mode: this.config.mode,
      port: this.config.port,
      proxy_port: this.config.proxy_port,
      interfaces: this.config.interfaces,
    };
    this.engine?.setConfig(this.config);
    for (const s of this.sockets) s.setGuard(this.guardSettings());
    if (bootPolicy) this.engine?.setBootPolicy(bootPolicy);
    this.logger.info("dhcp config reloaded");
  }

  leases(): Lease[] {
    return this.store?.all() ?? [];
  }

  /** The lease record naming this MAC (undefined before start and after stop: nothing is owned then). */
  byMac(mac: string): Lease | undefined {
    return this.store?.byMac(mac);
  }

  /** The MAC holding this address now (a bound, unexpired lease), if any. */
  macAt(address: string, now = Date.now()): string | undefined {
    const l = this.store?.get(address);
    return l && l.state === "bound" && l.expires > now ? l.mac : undefined;
  }

  poolUse(): ReturnType<DhcpEngine["poolUse"]> {
    return this.engine?.poolUse() ?? [];
  }

  /** Datagrams received, malformed ones dropped, replies sent since start. */
  counters(): { received: number; malformed: number; replies: number } | undefined {
    return this.engine ? { ...this.engine.counters } : undefined;
  }

  /** Journal counters (batches, records, compactions), for tests and the benchmark. */
  journalStats():
    | {
        batches: number;
        records: number;
        compactions: number;
        maxBatch: number;
        maxSyncMs: number;
        totalSyncMs: number;
      }
    | undefined {
    return this.store instanceof LeaseStore ? { ...this.store.stats } : undefined;
  }
}
