/**
 * The appliance's Prometheus metrics, on a registry of their own (so tests and two appliances in one
 * process do not share counters). Instruments are created once per Metrics; the parts that count hold it.
 */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";

const TRANSFER_BUCKETS = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];
const COMMIT_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1];
const BOOT_BUCKETS = [5, 10, 20, 30, 45, 60, 90, 120, 180, 300, 600];

export class Metrics {
  readonly registry = new Registry();

  readonly dhcpMessages = new Counter({
    name: "netboot_dhcp_messages_total",
    help: "DHCP messages received, by message type and what the server did",
    labelNames: ["type", "outcome"] as const,
    registers: [this.registry],
  });
  /** Read at each scrape for the pool gauge. */
  poolSource: (() => { subnet: string; size: number; bound: number }[]) | undefined;
  readonly dhcpPoolAddresses = new Gauge({
    name: "netboot_dhcp_pool_addresses",
    help: "Addresses in each subnet's pool, by state (size: all of the range; bound: leased now)",
    labelNames: ["subnet", "state"] as const,
    registers: [this.registry],
    collect: () => {
      for (const p of this.poolSource?.() ?? []) {
        this.dhcpPoolAddresses.set({ subnet: p.subnet, state: "size" }, p.size);
        this.dhcpPoolAddresses.set({ subnet: p.subnet, state: "bound" }, p.bound);
      }
    },
  });
  /** Read at each scrape: the shared lease database's health and, in a pair, the peer's (absent: journal). */
  sharedStateSource:
    | (() => { database: boolean; peer?: { name: string; up: boolean } | undefined })
    | undefined;
  readonly leaseDatabaseUp = new Gauge({
    name: "netboot_lease_database_up",
    help: "1 when the last statement on the shared lease database (PostgreSQL) succeeded, else 0",
    registers: [this.registry],
    collect: () => {
      const s = this.sharedStateSource?.();
      if (s) this.leaseDatabaseUp.set(s.database ? 1 : 0);
    },
  });
  readonly haPeerUp = new Gauge({
    name: "netboot_ha_peer_up",
    help: "1 while the HA peer's heartbeat is within failover_ms (it serves its share), else 0 (this appliance serves all)",
    labelNames: ["peer"] as const,
    registers: [this.registry],
    collect: () => {
      const peer = this.sharedStateSource?.()?.peer;
      if (peer) this.haPeerUp.set({ peer: peer.name }, peer.up ? 1 : 0);
    },
  });
  readonly leaseCommitSeconds = new Histogram({
    name: "netboot_dhcp_lease_commit_seconds",
    help: "Time from a lease record's commit to its fdatasync (the ACK waits for it)",
    buckets: COMMIT_BUCKETS,
    registers: [this.registry],
  });
  readonly transfers = new Counter({
    name: "netboot_file_transfers_total",
    help: "Files sent, by protocol (tftp, http) and outcome",
    labelNames: ["protocol", "outcome"] as const,
    registers: [this.registry],
  });
  readonly transferBytes = new Counter({
    name: "netboot_file_transfer_bytes_total",
    help: "Bytes of file data sent, by protocol",
    labelNames: ["protocol"] as const,
    registers: [this.registry],
  });
  readonly transferSeconds = new Histogram({
    name: "netboot_file_transfer_seconds",
    help: "Time of each finished file transfer, by protocol",
    labelNames: ["protocol"] as const,
    buckets: TRANSFER_BUCKETS,
    registers: [this.registry],
  });
  readonly tftpRetransmits = new Counter({
    name: "netboot_tftp_retransmits_total",
    help: "TFTP blocks sent again after a timeout",
    registers: [this.registry],
  });
  readonly resolverCalls = new Counter({
    name: "netboot_resolver_calls_total",
    help: "Volume resolutions, by resolver (static, cinder) and outcome (ok, error)",
    labelNames: ["resolver", "outcome"] as const,
    registers: [this.registry],
  });
  readonly resolverSeconds = new Histogram({
    name: "netboot_resolver_seconds",
    help: "Time of each volume resolution, by resolver",
    labelNames: ["resolver"] as const,
    buckets: [0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [this.registry],
  });
  readonly imageCache = new Counter({
    name: "netboot_image_cache_requests_total",
    help: "Glance image cache lookups, by result (hit, miss)",
    labelNames: ["result"] as const,
    registers: [this.registry],
  });
  readonly imageCacheBytes = new Counter({
    name: "netboot_image_cache_downloaded_bytes_total",
    help: "Bytes downloaded from Glance into the cache",
    registers: [this.registry],
  });
  readonly bootSessions = new Counter({
    name: "netboot_boot_sessions_total",
    help: "Boot sessions ended, by outcome (handed-off, stalled)",
    labelNames: ["outcome"] as const,
    registers: [this.registry],
  });
  readonly bootSeconds = new Histogram({
    name: "netboot_boot_duration_seconds",
    help: "First DHCP message to kernel and initrd delivered, for handed-off sessions",
    buckets: BOOT_BUCKETS,
    registers: [this.registry],
  });

  constructor(opts: { processMetrics?: boolean } = {}) {
    if (opts.processMetrics ?? true) collectDefaultMetrics({ register: this.registry });
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
