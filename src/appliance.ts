import type { Logger } from "pino";
import { AdminServer } from "./admin/server.js";
import type { AdminSource, MachineView } from "./admin/views.js";
import { summarise } from "./admin/views.js";
import { BootPlan, ipxeScriptPath } from "./bootplan/plan.js";
import type { LoadedConfig } from "./config/load.js";
import type { Config } from "./config/schema.js";
import { makeBootPolicy } from "./dhcp/boot-policy.js";
import { DhcpServer } from "./dhcp/server.js";
import { FileLookup } from "./files/lookup.js";
import { fallbackServers } from "./ha/config.js";
import { HttpFileServer } from "./http/server.js";
import { registerSecret } from "./log.js";
import { sessionLimits } from "./machines/config.js";
import { MachineRegistry } from "./machines/registry.js";
import { MachineState } from "./machines/state.js";
import { Metrics } from "./metrics/metrics.js";
import { templatesDir } from "./package-root.js";
import { SharedState } from "./state/shared.js";
import { TftpServer } from "./tftp/server.js";

/**
 * The one process: the boot plan decides, DHCP tells each machine what to load first, TFTP serves it.
 * Wiring only; each part is usable (and tested) on its own.
 */
export class Appliance {
  private config: Config;
  private readonly plan: BootPlan;
  private readonly tftp: TftpServer;
  private readonly http: HttpFileServer | undefined;
  private readonly dhcp: DhcpServer | undefined;
  /**
   * The one owner of machine state: who holds which address (its registry, read from the lease store and
   * consulted before any per-machine data goes out) and boot sessions, fed by every server's events.
   */
  private readonly state: MachineState;
  readonly metrics: Metrics;
  private readonly admin: AdminServer | undefined;
  /** Leases (and the pair's heartbeat) on PostgreSQL; absent with the journal. */
  private readonly shared: SharedState | undefined;

  constructor(
    loaded: LoadedConfig,
    private readonly logger: Logger,
  ) {
    this.config = loaded.config;
    registerConfigSecrets(this.config);
    this.metrics = new Metrics();
    this.metrics.poolSource = () => this.dhcp?.poolUse() ?? [];
    const shared =
      this.config.state.backend === "postgres"
        ? new SharedState({
            state: this.config.state,
            ha: this.config.ha,
            logger: logger.child({ svc: "state" }),
          })
        : undefined;
    this.shared = shared;
    if (shared) this.metrics.sharedStateSource = () => shared.status();
    this.dhcp =
      this.config.dhcp.mode === "off"
        ? undefined
        : new DhcpServer({
            config: this.config.dhcp,
            stateDir: this.config.state_dir,
            logger: this.logger.child({ svc: "dhcp" }),
            bootPolicy: this.bootPolicy(),
            onExchange: (e) => {
              this.state.record(e);
              // Ironic is asked while the firmware is still loading shim, not when GRUB waits for its config.
              if (e.message === "discover" || e.message === "request") this.plan.anticipate(e.mac, e.uuid);
            },
            leaseStore: { onSync: (seconds) => this.metrics.leaseCommitSeconds.observe(seconds) },
            ...shared?.dhcpOptions((seconds) => this.metrics.leaseCommitSeconds.observe(seconds)),
          });
    this.state = new MachineState({
      registry: new MachineRegistry({ role: this.config.dhcp.mode, leases: this.dhcp }),
      nameOf: (mac) => this.plan.findMachine(mac)?.name,
      roleOf: (path) => this.plan.roleOf(path),
      macOfLease: this.dhcp ? (address) => this.dhcp?.macAt(address) : undefined,
      feed: shared?.bootEvents,
      stateDir: this.config.state_dir,
      limits: sessionLimits(this.config.sessions),
      record: this.config.sessions.record,
      metrics: this.metrics,
      logger: logger.child({ svc: "machines" }),
    });
    // The boot plan asks the machine state's registry who holds which address before serving a config.
    this.plan = new BootPlan(
      { ...planSections(this.config), stateDir: this.config.state_dir, logger, metrics: this.metrics },
      this.state.registry,
    );
    // One lookup for TFTP and HTTP: the same names, the same provider, the same ownership checks.
    const lookup = new FileLookup(this.config.tftp.root, this.plan.tftpProvider());
    this.tftp = new TftpServer({
      lookup,
      root: this.config.tftp.root,
      address: this.config.tftp.address,
      port: this.config.tftp.port,
      maxBlksize: this.config.tftp.max_blksize,
      maxWindowsize: this.config.tftp.max_windowsize,
      timeoutMs: this.config.tftp.timeout_ms,
      retries: this.config.tftp.retries,
      maxTransfers: this.config.tftp.max_transfers,
      pumpThreads: this.config.tftp.pump_threads,
      logger: logger.child({ svc: "tftp" }),
    });
    this.tftp.on("start", (t) =>
      this.state.transferStarted(`${t.client} ${t.file}`, t.client.replace(/:\d+$/, "")),
    );
    this.tftp.on("transfer", (r) =>
      this.state.record({
        kind: "file",
        at: r.startedAt + r.ms,
        protocol: "tftp",
        client: r.client.replace(/:\d+$/, ""),
        file: r.file,
        bytes: r.bytes,
        ms: r.ms,
        outcome: r.outcome,
        blksize: r.blksize,
        windowsize: r.windowsize,
        retransmits: r.retransmits,
        transferKey: `${r.client} ${r.file}`,
      }),
    );
    const http = this.config.http;
    this.http = http.enable
      ? new HttpFileServer({
          lookup,
          address: http.address,
          port: http.port,
          maxConnections: http.max_connections,
          idleTimeoutMs: http.idle_timeout_ms,
          headerTimeoutMs: http.header_timeout_ms,
          logger: logger.child({ svc: "http" }),
          onRequest: (e) => this.state.record(e),
        })
      : undefined;
    const admin = this.config.admin;
    this.admin = admin.listen
      ? new AdminServer({
          address: admin.listen.address,
          port: admin.listen.port,
          token: admin.token,
          source: this.adminSource(),
          metrics: this.metrics,
          logger: logger.child({ svc: "admin" }),
        })
      : undefined;
  }

  async start(): Promise<void> {
    await this.plan.checkLoaders(this.config.tftp.root);
    // The shared database (and the peer's state) before DHCP answers anyone.
    await this.shared?.start();
    // Leases first: TFTP then knows from its first request who holds which address (kept across restarts).
    await this.dhcp?.start();
    await this.tftp.listen();
    await this.http?.listen();
    await this.state.start();
    await this.admin?.listen();
    this.logger.info(
      { dhcp: this.config.dhcp.mode, machines: this.config.machines?.length ?? 0 },
      "netboot-appliance started",
    );
    this.prefetch();
    this.plan.sweepDeparted();
  }

  /**
   * Downloads Glance kernels and initrds ahead of the first boot: GRUB gives up on a config request
   * that stays silent for about 30 s, and a cold download can take longer. Runs in the background.
   */
  private prefetch(): void {
    this.plan.prefetchImages().then(
      ({ fetched, failed }) => {
        if (fetched + failed > 0) this.logger.info({ fetched, failed }, "images prefetched");
      },
      (err: unknown) => this.logger.warn({ err }, "image prefetch failed; images are fetched on first boot"),
    );
  }

  private bootPolicy() {
    const boot = this.config.boot;
    const nextServer = this.config.dhcp.server_address ?? this.config.tftp.address;
    return makeBootPolicy({
      loaders: boot.loaders,
      loaderKind: (mac) => this.plan.loaderKindFor(mac),
      httpBaseUrl: boot.http_base_url ?? this.httpBaseUrl(nextServer),
      ipxeScriptPath,
      nextServer,
      archOverride: (mac) => this.plan.archFor(mac),
      isKnown: (mac) => this.plan.isKnown(mac),
      unknownMachines: this.config.dhcp.unknown_machines,
    });
  }

  /** The URL HTTP boot clients are given, from the http section (its address, or the next-server's). */
  private httpBaseUrl(nextServer: string): string | undefined {
    const http = this.config.http;
    if (!http.enable) return undefined;
    const host = http.address === "0.0.0.0" || http.address === "::" ? nextServer : http.address;
    const shown = host.includes(":") ? `[${host}]` : host;
    return `http://${shown}${http.port === 80 ? "" : `:${http.port}`}/`;
  }

  /** The read-only view the management API serves. */
  private adminSource(): AdminSource {
    return {
      machines: () => {
        const seen = new Set<string>();
        const out: MachineView[] = [];
        const view = (mac: string): MachineView => {
          seen.add(mac);
          const m = this.plan.findMachine(mac);
          const lease = this.dhcp?.byMac(mac);
          const last = this.state.sessions.current(mac);
          return {
            mac,
            name: m?.name ?? last?.machine,
            arch: m?.arch,
            loader: m?.loader,
            inInventory: m !== undefined,
            lease:
              lease && lease.mac === mac
                ? { address: lease.address, expires: lease.expires, state: lease.state }
                : undefined,
            lastBoot: last ? summarise(last) : undefined,
          };
        };
        for (const m of this.config.machines ?? []) for (const mac of m.macs) out.push(view(mac));
        for (const mac of this.state.sessions.macs()) if (!seen.has(mac)) out.push(view(mac));
        return out;
      },
      boots: (mac) => [...this.state.sessions.sessionsOf(mac)],
      leases: () => this.dhcp?.leases() ?? [],
      subnets: () => this.dhcp?.poolUse() ?? [],
      subscribe: (listener) => this.state.subscribe(listener),
    };
  }

  /** SIGHUP: new config and inventory; leases and running transfers are kept. */
  async reload(loaded: LoadedConfig): Promise<void> {
    const next = loaded.config;
    registerConfigSecrets(next);
    this.plan.reload({
      ...planSections(next),
      stateDir: next.state_dir,
      logger: this.logger,
      metrics: this.metrics,
    });
    if (next.dhcp.mode !== this.config.dhcp.mode || next.tftp.port !== this.config.tftp.port) {
      this.logger.warn("dhcp mode and tftp port changes need a restart; other changes are applied");
    }
    this.config = next;
    this.state.setLimits(sessionLimits(next.sessions));
    this.dhcp?.reload(next.dhcp, this.bootPolicy());
    this.prefetch();
    this.plan.sweepDeparted();
  }

  async stop(): Promise<void> {
    await Promise.all([this.tftp.close(), this.http?.close(), this.admin?.close(), this.dhcp?.stop()]);
    await this.shared?.stop();
    await this.state.stop();
    this.plan.flush();
  }
}

/** The boot plan's options from the config: shared by the appliance and `netboot render`. */
export function planSections(config: Config) {
  return {
    boot: config.boot,
    images: config.images,
    machines: config.machines ?? [],
    cinder: config.resolvers.cinder,
    ironic: config.resolvers.ironic,
    cacheDir: config.cache_dir,
    tftpRoot: config.tftp.root,
    httpServed: config.http.enable,
    fallbackServers: fallbackServers(config.ha),
    templatesDir: templatesDir(),
  };
}

/** Every secret the config resolved is masked wherever it could show up in a log line. */
function registerConfigSecrets(config: Config): void {
  for (const machine of config.machines ?? []) {
    if (machine.volume.resolver === "static" && machine.volume.chap) {
      registerSecret(machine.volume.chap.password);
      registerSecret(machine.volume.chap.in_password);
    }
  }
  if (config.admin.token) registerSecret(config.admin.token);
  const auth = config.resolvers.cinder?.auth;
  if (auth?.type === "password") registerSecret(auth.password);
  if (auth?.type === "application_credential") registerSecret(auth.secret);
  const dbUrl = config.state.url;
  if (dbUrl) {
    registerSecret(dbUrl);
    const password = /^postgres(?:ql)?:\/\/[^:/@]*:([^@]+)@/.exec(dbUrl)?.[1];
    if (password) {
      registerSecret(password);
      registerSecret(decodeURIComponent(password));
    }
  }
}
