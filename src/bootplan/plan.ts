import { join, resolve } from "node:path";
import nunjucks from "nunjucks";
import type { Logger } from "pino";
import type { BootArch } from "../dhcp/boot-types.js";
import { registerSecret } from "../log.js";
import type { FileRole } from "../machines/events.js";
import { MachineRegistry, type OwnedIdentity } from "../machines/registry.js";
import type { Metrics } from "../metrics/metrics.js";
import type { TftpFileProvider, TftpSource } from "../tftp/provider.js";
import { buildKernelArgs, type Flavour } from "./cmdline.js";
import {
  type BootConfig,
  type CinderConfig,
  type Images,
  type IronicConfig,
  type Machine,
  normaliseMac,
} from "./config.js";
import { grubQuote, grubQuoteWords } from "./grub-quote.js";
import { DEFAULT_IMAGE_LIMITS, ImageCache } from "./image-cache.js";
import { ipxeWord, ipxeWords } from "./ipxe-word.js";
import { IronicCatalog } from "./ironic/catalog.js";
import type { NodeVerdict } from "./ironic/node.js";
import { CinderClient } from "./openstack/cinder.js";
import { GlanceClient } from "./openstack/glance.js";
import { IronicClient } from "./openstack/ironic.js";
import { KeystoneSession } from "./openstack/keystone.js";
import { checkLoader } from "./pe.js";
import {
  type NamedImage,
  type ResolvedBoot,
  type ResolverName,
  UnresolvableMachineError,
  type VolumeResolver,
} from "./resolver.js";
import { ephemeralMemory, persistentMemory, type ResolverMemory } from "./resolver-memory.js";
import { CinderResolver } from "./resolvers/cinder.js";
import { IronicResolver } from "./resolvers/ironic.js";
import { StaticResolver } from "./resolvers/static.js";

export interface BootPlanOptions {
  boot: BootConfig;
  images: Images;
  machines: Machine[];
  cinder?: CinderConfig | undefined;
  ironic?: IronicConfig | undefined;
  cacheDir: string;
  /**
   * Where Cinder attachments, last good answers and Ironic answers are kept across restarts (the
   * appliance's state_dir). Absent (netboot render): kept in memory only.
   */
  stateDir?: string | undefined;
  templatesDir: string;
  /** Needed to serve the grubx64.efi/grubaa64.efi aliases (shim asks by that fixed name). */
  tftpRoot?: string | undefined;
  /** The boot HTTP server runs: machines with `loader: ipxe` fetch their script and kernel from it. */
  httpServed?: boolean | undefined;
  /** The HA peers' TFTP addresses: the master grub.cfg asks them when this appliance gives no config. */
  fallbackServers?: string[] | undefined;
  /** Resolver and Glance cache counters (absent for `netboot render`). */
  metrics?: Metrics | undefined;
  logger: Logger;
}

/** What a machine gets: exactly what TFTP serves as grub/<mac>.conf, and what it then loads. */
export interface RenderResult {
  machine: string;
  mac: string;
  arch: BootArch;
  resolver: ResolverName;
  /** Where the resolver's answer came from (the Ironic node and its target), when it says. */
  detail?: string | undefined;
  flavour: Flavour;
  /** The per-machine GRUB config text (contains CHAP secrets when the volume has CHAP). */
  grubConfig: string;
  /** The per-machine iPXE script: the same kernel, initrd and command line (and so the same secrets). */
  ipxeScript: string;
  /** TFTP paths (no leading slash) of the kernel and initrd, and the files behind them. */
  kernelPath: string;
  initrdPath: string;
  kernelFile: string;
  initrdFile: string;
  cmdline: string;
  /** Stale connection info or cached files were used because OpenStack was unreachable. */
  fallback: boolean;
  /** Values to mask when showing the result (CHAP passwords). */
  secrets: string[];
  /** True when the MAC is not in the inventory and the default machine was used. */
  viaDefault: boolean;
}

const MACHINE_CONF_RE = /^grub\/([0-9a-f]{2}(?::[0-9a-f]{2}){5})\.conf$/i;
const MACHINE_SCRIPT_RE = /^ipxe\/([0-9a-f]{2}(?::[0-9a-f]{2}){5})\.ipxe$/i;

/** Where a machine's iPXE script is served (over HTTP; the DHCP answer to iPXE names it). */
export function ipxeScriptPath(mac: string): string {
  return `ipxe/${mac}.ipxe`;
}
const GRUB_ALIAS: Record<string, BootArch> = { "grubx64.efi": "x64", "grubaa64.efi": "aa64" };

interface State {
  opts: BootPlanOptions;
  byMac: Map<string, Machine>;
  byUuid: Map<string, Machine>;
  byName: Map<string, Machine>;
  env: nunjucks.Environment;
  resolvers: {
    static: VolumeResolver;
    cinder: VolumeResolver | undefined;
    ironic: VolumeResolver | undefined;
  };
  cache: ImageCache;
  cinderClient: CinderClient | undefined;
  ironic: IronicCatalog | undefined;
}

/** Where a MAC leads: a machine to boot, or a refusal from the source that knows it (Ironic). */
type Located = { machine: Machine; viaDefault: boolean } | { refused: string };

/**
 * The boot plan: which machine a MAC is, what GRUB config it gets, and which TFTP paths map to
 * generated configs, kernels and initrds. Reloadable as a whole (SIGHUP); a failed reload throws
 * and keeps the old plan.
 */
export class BootPlan {
  private state: State;
  /** TFTP path → file for kernels and initrds handed out by renders (Glance files live in the cache). */
  private readonly served = new Map<string, string>();
  /** Paths handed out by renders → kernel or initrd (Glance paths do not say which). */
  private readonly roles = new Map<string, FileRole>();

  /**
   * Cinder attachments, last good answers and Ironic answers survive reloads (a SIGHUP during an outage
   * keeps them) and, with a state directory, restarts.
   */
  private readonly memory: ResolverMemory;

  /**
   * `machines` answers who holds which address; it outlives reloads. Without one (netboot render, unit
   * tests of rendering) nothing is owned, so no config that may carry a secret is served.
   */
  constructor(
    opts: BootPlanOptions,
    private readonly machines: MachineRegistry = new MachineRegistry({ role: "off" }),
  ) {
    this.memory = opts.stateDir ? persistentMemory(opts.stateDir, opts.logger) : ephemeralMemory();
    this.state = this.build(opts);
  }

  /** Writes what the resolvers remember (at stop). */
  flush(): void {
    this.memory.flush();
  }

  private get log(): Logger {
    return this.state.opts.logger;
  }

  /** Replaces config, inventory, resolvers and templates; machine state lives in the registry. */
  reload(opts: BootPlanOptions): void {
    this.state = this.build(opts);
    this.served.clear();
    this.log.info(
      { machines: opts.machines.length, images: Object.keys(opts.images).length },
      "boot plan reloaded",
    );
  }

  private build(opts: BootPlanOptions): State {
    const byMac = new Map<string, Machine>();
    const byUuid = new Map<string, Machine>();
    const byName = new Map<string, Machine>();
    const problems: string[] = [];
    for (const m of opts.machines) {
      byName.set(m.name, m);
      for (const mac of m.macs) byMac.set(mac, m);
      if (m.uuid) byUuid.set(m.uuid, m);
      if (m.image !== undefined && !(m.image in opts.images))
        problems.push(`machine ${m.name}: image ${m.image} is not defined in images`);
      if (m.image === undefined && Object.keys(opts.images).length !== 1 && m.volume.resolver === "static")
        problems.push(`machine ${m.name}: image is required when there is not exactly one image`);
      if (m.volume.resolver === "cinder" && !opts.cinder)
        problems.push(
          `machine ${m.name}: volume uses the cinder resolver, but resolvers.cinder is not configured`,
        );
      if (m.volume.resolver === "ironic" && !opts.ironic)
        problems.push(
          `machine ${m.name}: volume uses the ironic resolver, but resolvers.ironic is not configured`,
        );
      const image = opts.images[m.image ?? Object.keys(opts.images)[0] ?? ""];
      if (m.volume.resolver === "static" && image && (!image.kernel || !image.initrd))
        problems.push(
          `machine ${m.name}: image ${m.image ?? ""} needs kernel and initrd for a static volume`,
        );
      if (m.arch && !opts.boot.loaders[m.arch])
        problems.push(`machine ${m.name}: arch ${m.arch} has no loaders in boot.loaders`);
      if (m.loader === "ipxe") {
        const archs = m.arch ? [m.arch] : (["x64", "aa64"] as const);
        if (!archs.some((a) => opts.boot.loaders[a]?.ipxe))
          problems.push(`machine ${m.name}: loader ipxe needs boot.loaders.${m.arch ?? "<arch>"}.ipxe`);
        if (opts.httpServed === false)
          problems.push(`machine ${m.name}: loader ipxe needs the HTTP server (http.enable: true)`);
      }
    }
    const usesGlance = Object.values(opts.images).some(
      (i) =>
        (i.kernel !== undefined && "glance_id" in i.kernel) ||
        (i.initrd !== undefined && "glance_id" in i.initrd),
    );
    if (usesGlance && !opts.cinder)
      problems.push("images: glance_id needs resolvers.cinder (Keystone) to reach Glance");
    if (opts.ironic && !opts.cinder)
      problems.push("resolvers.ironic: needs resolvers.cinder, whose Keystone credentials it uses");
    if (opts.ironic && !(opts.ironic.image in opts.images))
      problems.push(`resolvers.ironic.image: ${opts.ironic.image} is not defined in images`);
    if (opts.boot.default_machine !== undefined && !byName.has(opts.boot.default_machine))
      problems.push(`boot.default_machine: ${opts.boot.default_machine} is not a machine in the inventory`);
    if (problems.length > 0) throw new Error(problems.join("\n"));

    let glance: GlanceClient | undefined;
    let cinderResolver: VolumeResolver | undefined;
    let cinderClient: CinderClient | undefined;
    let session: KeystoneSession | undefined;
    if (opts.cinder) {
      session = new KeystoneSession(opts.cinder, opts.logger);
      glance = new GlanceClient(session, opts.cinder.timeout_ms);
    }
    const cache = new ImageCache(
      opts.cacheDir,
      glance,
      opts.logger,
      opts.cinder
        ? { maxBytes: opts.cinder.image_max_bytes, downloadTimeoutMs: opts.cinder.image_download_timeout_ms }
        : DEFAULT_IMAGE_LIMITS,
      opts.metrics,
    );
    if (opts.cinder && session) {
      const client = new CinderClient(
        session,
        opts.logger,
        opts.cinder.microversion,
        opts.cinder.endpoint_override,
      );
      cinderResolver = new CinderResolver(client, cache, opts.logger, this.memory);
      cinderClient = client;
    }
    let ironic: IronicCatalog | undefined;
    let ironicResolver: VolumeResolver | undefined;
    if (opts.ironic && session) {
      const client = new IronicClient(session, opts.ironic.microversion, opts.ironic.endpoint_override);
      ironic = new IronicCatalog(client, opts.ironic, this.memory, opts.logger, (name) =>
        this.sweepDeparted(name),
      );
      ironicResolver = new IronicResolver(ironic, cinderResolver, glance, cache, opts.logger);
    }
    // autoescape is HTML escaping: wrong for GRUB. Values go through grub_quote explicitly.
    const env = new nunjucks.Environment(new nunjucks.FileSystemLoader(opts.templatesDir), {
      autoescape: false,
      throwOnUndefined: true,
      trimBlocks: true,
      lstripBlocks: true,
    });
    env.addFilter("grub_quote", grubQuote);
    env.addFilter("grub_quote_words", grubQuoteWords);
    env.addFilter("ipxe_word", ipxeWord);
    env.addFilter("ipxe_words", ipxeWords);
    return {
      opts,
      byMac,
      byUuid,
      byName,
      env,
      cache,
      cinderClient,
      ironic,
      resolvers: { static: new StaticResolver(cache), cinder: cinderResolver, ironic: ironicResolver },
    };
  }

  /**
   * Downloads every Glance kernel and initrd the plan may need (images with glance_id, and the
   * kernel_id/ramdisk_id of Cinder volumes) ahead of the first boot, so that GRUB's request for its
   * config never waits for a large download (GRUB gives up on a silent TFTP request after ~30 s).
   * Creates no Cinder attachment. Never throws: failures are logged and retried at boot time.
   */
  async prefetchImages(): Promise<{ fetched: number; failed: number }> {
    const { opts, cache, cinderClient } = this.state;
    const ids = new Set<string>();
    for (const image of Object.values(opts.images))
      for (const source of [image.kernel, image.initrd])
        if (source && "glance_id" in source) ids.add(source.glance_id);
    let failed = 0;
    if (cinderClient) {
      const volumes = new Set(
        opts.machines.flatMap((m) => (m.volume.resolver === "cinder" ? [m.volume.volume_id] : [])),
      );
      for (const id of volumes) {
        try {
          const info = await cinderClient.showVolume(id);
          if (info.kernelId) ids.add(info.kernelId);
          if (info.ramdiskId) ids.add(info.ramdiskId);
        } catch (err) {
          failed++;
          this.log.warn(
            { volume_id: id, err: (err as Error).message },
            "prefetch: cannot read the volume's image metadata",
          );
        }
      }
    }
    let fetched = 0;
    await Promise.all(
      [...ids].map(async (id) => {
        try {
          await cache.get(id);
          fetched++;
        } catch (err) {
          failed++;
          this.log.warn({ image_id: id, err: (err as Error).message }, "prefetch: image not cached");
        }
      }),
    );
    this.log.info({ fetched, failed }, "boot plan images prefetched");
    return { fetched, failed };
  }

  /**
   * The inventory machine with this MAC (any format), or else with this SMBIOS UUID (DHCP option 97,
   * given now or noted earlier for this MAC). Never the default machine.
   */
  findMachine(mac: string, uuid?: string): Machine | undefined {
    const normal = normaliseMac(mac);
    const own = normal === undefined ? undefined : this.state.byMac.get(normal);
    if (own) return own;
    const id = uuid ?? (normal === undefined ? undefined : this.machines.uuidOf(normal));
    const byUuid = id === undefined ? undefined : this.state.byUuid.get(id.toLowerCase());
    if (byUuid || normal === undefined) return byUuid;
    const cached = this.state.ironic?.cached(normal, id);
    return cached ? this.ironicMachine(cached) : undefined;
  }

  /** An Ironic node as a machine of the inventory: its ports, system UUID, arch and iqn connector. */
  private ironicMachine(verdict: NodeVerdict): Machine | undefined {
    const ironic = this.state.opts.ironic;
    if (verdict.kind !== "node" || !ironic) return undefined;
    const n = verdict.node;
    return {
      name: n.name,
      macs: n.macs,
      uuid: n.systemUuid,
      arch: n.arch,
      image: ironic.image,
      initiator_iqn: n.initiatorIqn,
      loader: "shim",
      volume: { resolver: "ironic", node: n.uuid },
    };
  }

  /**
   * Asks Ironic ahead of the boot about a machine DHCP just saw, so that GRUB's config request finds the
   * answer cached. Inventory machines are not looked up.
   */
  anticipate(mac: string, uuid?: string): void {
    const normal = normaliseMac(mac);
    if (normal === undefined || !this.state.ironic || this.state.byMac.has(normal)) return;
    const id = uuid ?? this.machines.uuidOf(normal);
    if (id && this.state.byUuid.has(id)) return;
    this.state.ironic.anticipate(normal, id);
  }

  /**
   * With resolvers.cinder.detach_departed, removes the Cinder attachments of machines no longer in the
   * inventory nor served by Ironic (`name`: only that machine's). Logged per attachment.
   */
  sweepDeparted(name?: string): void {
    const cinder = this.state?.cinderClient;
    if (!cinder || !this.state.opts.cinder?.detach_departed) return;
    const served = new Set(this.state.byName.keys());
    for (const { verdict } of this.memory.ironicNodes.values())
      if (verdict.kind === "node") served.add(verdict.node.name);
    for (const [key, attachmentId] of [...this.memory.attachments]) {
      const slash = key.lastIndexOf("/");
      const machine = key.slice(0, slash);
      if (served.has(machine) || (name !== undefined && machine !== name)) continue;
      const volumeId = key.slice(slash + 1);
      cinder.deleteAttachment(attachmentId).then(
        () => {
          this.memory.attachments.delete(key);
          this.memory.lastGood.delete(key);
          this.memory.changed();
          this.log.info(
            { machine, volume_id: volumeId, attachment_id: attachmentId },
            "cinder attachment removed: the machine left the inventory",
          );
        },
        (err: unknown) =>
          this.log.warn(
            { machine, volume_id: volumeId, attachment_id: attachmentId, err: (err as Error).message },
            "cinder attachment of a departed machine not removed (retried at the next reload)",
          ),
      );
    }
  }

  isKnown(mac: string, uuid?: string): boolean {
    return this.findMachine(mac, uuid) !== undefined;
  }

  /** The inventory's architecture override for this machine, if any. */
  archFor(mac: string, uuid?: string): BootArch | undefined {
    return this.findMachine(mac, uuid)?.arch;
  }

  /** The machine a MAC boots as: its own entry, or the configured default machine. */
  private machineFor(mac: string): { machine: Machine; viaDefault: boolean } | undefined {
    const own = this.findMachine(mac);
    if (own) return { machine: own, viaDefault: false };
    return this.defaultMachine();
  }

  private defaultMachine(): { machine: Machine; viaDefault: boolean } | undefined {
    const name = this.state.opts.boot.default_machine;
    const fallback = name === undefined ? undefined : this.state.byName.get(name);
    return fallback ? { machine: fallback, viaDefault: true } : undefined;
  }

  /**
   * As machineFor, asking Ironic (its cache, else the API) about a MAC the inventory does not have. A
   * node Ironic knows but does not serve is refused with its reason: it never gets the default machine.
   */
  private async locate(mac: string): Promise<Located | undefined> {
    const state = this.state;
    const own = state.byMac.get(mac);
    const uuid = this.machines.uuidOf(mac);
    const byUuid = uuid === undefined ? undefined : state.byUuid.get(uuid);
    if (own ?? byUuid) return { machine: (own ?? byUuid) as Machine, viaDefault: false };
    if (state.ironic) {
      let answer: Awaited<ReturnType<IronicCatalog["lookup"]>>;
      try {
        answer = await state.ironic.lookup(mac, uuid);
      } catch (err) {
        return { refused: `MAC ${mac}: ironic lookup failed: ${(err as Error).message}` };
      }
      if (answer?.verdict.kind === "refused") return { refused: answer.verdict.reason };
      const machine = answer ? this.ironicMachine(answer.verdict) : undefined;
      if (machine) return { machine, viaDefault: false };
    }
    return this.defaultMachine();
  }

  /** The loader DHCP hands out for an architecture (shim), if configured. */
  loaderFor(arch: BootArch): string | undefined {
    return this.state.opts.boot.loaders[arch]?.shim;
  }

  /** Refuses to start with a loader that is missing or built for another machine type. */
  async checkLoaders(tftpRoot: string): Promise<void> {
    for (const arch of ["x64", "aa64"] as const) {
      const loader = this.state.opts.boot.loaders[arch];
      if (!loader) continue;
      await checkLoader(join(tftpRoot, loader.shim), arch);
      await checkLoader(join(tftpRoot, loader.grub), arch);
      if (loader.ipxe) await checkLoader(join(tftpRoot, loader.ipxe), arch);
    }
  }

  masterConfig(): string {
    return this.state.env.render("grub-master.cfg.njk", {
      timeout: this.state.opts.boot.grub.timeout,
      fallback_servers: this.state.opts.fallbackServers ?? [],
    });
  }

  private imageOf(machine: Machine): NamedImage | undefined {
    const images = this.state.opts.images;
    const name = machine.image ?? (Object.keys(images).length === 1 ? Object.keys(images)[0] : undefined);
    const config = name === undefined ? undefined : images[name];
    return name !== undefined && config ? { name, config } : undefined;
  }

  /**
   * Resolves and renders a machine's GRUB config. Throws UnresolvableMachineError (naming the
   * machine and the field) when it cannot produce a complete, safe config.
   */
  async render(mac: string, arch?: BootArch): Promise<RenderResult> {
    const normal = normaliseMac(mac);
    if (normal === undefined)
      throw new UnresolvableMachineError(`${JSON.stringify(mac)} is not a MAC address`);
    return this.renderLocated(normal, await this.locate(normal), arch);
  }

  private async renderLocated(
    normal: string,
    found: Located | undefined,
    arch?: BootArch,
  ): Promise<RenderResult> {
    const state = this.state;
    if (!found)
      throw new UnresolvableMachineError(
        `MAC ${normal} is not in the inventory${state.ironic ? " nor in Ironic" : ""} and there is no boot.default_machine`,
      );
    if ("refused" in found) throw new UnresolvableMachineError(found.refused);
    const { machine, viaDefault } = found;
    const bootArch: BootArch = machine.arch ?? arch ?? "x64";
    const image = this.imageOf(machine);
    if (!image)
      throw new UnresolvableMachineError(
        `machine ${machine.name}: no image, so no initramfs flavour or kernel`,
      );
    const resolver = state.resolvers[machine.volume.resolver];
    if (!resolver)
      throw new UnresolvableMachineError(
        `machine ${machine.name}: no ${machine.volume.resolver} resolver configured`,
      );

    let resolved: ResolvedBoot;
    const metrics = state.opts.metrics;
    const kind = machine.volume.resolver;
    const started = performance.now();
    try {
      const ip = this.machines.addressOf(normal, identityFor(machine, viaDefault));
      resolved = await resolver.resolve(machine, image, { ip, arch: bootArch });
      metrics?.resolverCalls.inc({ resolver: kind, outcome: "ok" });
    } catch (err) {
      metrics?.resolverCalls.inc({ resolver: kind, outcome: "error" });
      if (err instanceof UnresolvableMachineError) throw err;
      throw new UnresolvableMachineError(`machine ${machine.name}: ${(err as Error).message}`);
    } finally {
      metrics?.resolverSeconds.observe({ resolver: kind }, (performance.now() - started) / 1000);
    }

    let args: string[];
    try {
      args = buildKernelArgs({
        flavour: image.config.flavour,
        target: { portals: resolved.portals, iqn: resolved.iqn, lun: resolved.lun, chap: resolved.chap },
        initiatorIqn: resolved.initiatorIqn ?? machine.initiator_iqn,
        root: image.config.root,
        ip: image.config.ip,
        extraArgs: image.config.extra_args,
      });
    } catch (err) {
      throw new UnresolvableMachineError(
        `machine ${machine.name} (image ${image.name}): ${(err as Error).message}`,
      );
    }
    if (image.config.flavour === "initramfs-tools" && resolved.portals.length > 1)
      this.log.warn(
        { machine: machine.name },
        "initramfs-tools logs in to one portal: using the first of several",
      );

    const context = {
      machine: machine.name,
      mac: normal,
      flavour: image.config.flavour,
      resolver: resolved.resolver,
      timeout: state.opts.boot.grub.timeout,
      kernel: `/${resolved.kernel.tftpPath}`,
      initrd: `/${resolved.initrd.tftpPath}`,
      args,
      extra_entries: state.opts.boot.grub.extra_entries,
    };
    const grubConfig = state.env.render("grub-machine.cfg.njk", context);
    const ipxeScript = state.env.render("ipxe-machine.ipxe.njk", context);
    this.served.set(resolved.kernel.tftpPath, resolved.kernel.file);
    this.served.set(resolved.initrd.tftpPath, resolved.initrd.file);
    this.roles.set(resolved.kernel.tftpPath, "kernel");
    this.roles.set(resolved.initrd.tftpPath, "initrd");
    const secrets = [resolved.chap?.password, resolved.chap?.in_password].filter((s): s is string => !!s);
    for (const secret of secrets) registerSecret(secret);
    return {
      machine: machine.name,
      mac: normal,
      arch: bootArch,
      resolver: resolved.resolver,
      detail: resolved.detail,
      flavour: image.config.flavour,
      grubConfig,
      ipxeScript,
      kernelPath: resolved.kernel.tftpPath,
      initrdPath: resolved.initrd.tftpPath,
      kernelFile: resolved.kernel.file,
      initrdFile: resolved.initrd.file,
      cmdline: args.join(" "),
      fallback: resolved.fallback,
      secrets,
      viaDefault,
    };
  }

  /** Kernel/initrd given as files in the config, answerable without a render. */
  private configuredFile(path: string): string | undefined {
    const m = /^images\/([^/]+)\/(kernel|initrd)$/.exec(path);
    if (!m) return undefined;
    const image = this.state.opts.images[m[1] ?? ""];
    const source = image?.[m[2] as "kernel" | "initrd"];
    return source && "path" in source ? resolve(source.path) : undefined;
  }

  /** Answers the boot plan's TFTP paths; undefined lets the static root answer (loaders). */
  tftpProvider(): TftpFileProvider {
    return async (path, client): Promise<TftpSource | undefined> => {
      if (path === "grub/grub.cfg") return { kind: "data", data: Buffer.from(this.masterConfig()) };

      const conf = MACHINE_CONF_RE.exec(path);
      if (conf) return this.machineFile((conf[1] ?? "").toLowerCase(), client.address, "grub");
      const script = MACHINE_SCRIPT_RE.exec(path);
      if (script) return this.machineFile((script[1] ?? "").toLowerCase(), client.address, "ipxe");
      if (this.isAutoexecPath(path))
        return { kind: "data", data: Buffer.from(this.state.env.render("ipxe-autoexec.ipxe.njk", {})) };

      const glance = /^glance\/([0-9a-fA-F-]+)$/.exec(path);
      const file =
        this.served.get(path) ??
        this.configuredFile(path) ??
        (glance ? await this.state.cache.newestCached(glance[1] ?? "") : undefined);
      if (file) return { kind: "file", path: file };

      const alias = this.grubAlias(path);
      if (alias) return { kind: "file", path: alias };
      return undefined;
    };
  }

  /** A machine's GRUB config or iPXE script, only for its owner (both carry the same secrets). */
  private async machineFile(
    mac: string,
    client: string,
    kind: "grub" | "ipxe",
  ): Promise<TftpSource | undefined> {
    const found = await this.locate(mac);
    this.checkOwner(mac, client, found);
    try {
      const result = await this.renderLocated(mac, found);
      this.log.info(
        {
          mac,
          machine: result.machine,
          resolver: result.resolver,
          via: result.detail,
          fallback: result.fallback,
          client,
          kind,
        },
        "machine config generated",
      );
      return { kind: "data", data: Buffer.from(kind === "grub" ? result.grubConfig : result.ipxeScript) };
    } catch (err) {
      if (!(err instanceof UnresolvableMachineError)) throw err;
      this.log.warn({ mac, client, reason: err.message }, "no boot config for machine");
      return undefined;
    }
  }

  /**
   * iPXE fetches autoexec.ipxe relative to its working URI (efi_autoexec.c): after PXE that is the TFTP
   * server's root (seen with OVMF), after HTTP boot the loader's folder. Both are answered where an
   * iPXE loader is configured.
   */
  private isAutoexecPath(path: string): boolean {
    if (path !== "autoexec.ipxe" && !path.endsWith("/autoexec.ipxe")) return false;
    return Object.values(this.state.opts.boot.loaders).some((l) => {
      if (!l?.ipxe) return false;
      const dir = l.ipxe.includes("/") ? l.ipxe.slice(0, l.ipxe.lastIndexOf("/") + 1) : "";
      return path === "autoexec.ipxe" || path === `${dir}autoexec.ipxe`;
    });
  }

  /** What a served path is in the boot chain, for boot sessions and their diagnosis. */
  roleOf(path: string): FileRole {
    const p = path.replace(/^\/+/, "");
    for (const l of Object.values(this.state.opts.boot.loaders)) {
      if (!l) continue;
      if (p === l.shim) return "shim";
      if (p === l.grub || this.grubAlias(p) !== undefined) return "grub";
      if (p === l.ipxe) return "ipxe";
    }
    if (p === "grub/grub.cfg") return "grub-master";
    if (MACHINE_CONF_RE.test(p)) return "grub-config";
    if (MACHINE_SCRIPT_RE.test(p)) return "ipxe-script";
    if (this.isAutoexecPath(p)) return "ipxe-autoexec";
    const role = this.roles.get(p);
    if (role) return role;
    const configured = /^images\/[^/]+\/(kernel|initrd)$/.exec(p);
    return configured ? (configured[1] as "kernel" | "initrd") : "other";
  }

  /** The loader kind DHCP starts this machine with (the default machine's for unknown MACs). */
  loaderKindFor(mac: string): "shim" | "ipxe" {
    return this.machineFor(mac)?.machine.loader ?? "shim";
  }

  /**
   * A machine's config goes only to the address that holds its lease (or its pinned address). Where
   * nobody is known to hold it, a config that cannot carry a secret (static volume without CHAP) is
   * still served, so proxy mode works without pins; one that may carry a secret (CHAP, or Cinder, whose
   * answer may add CHAP) is refused. Checked before rendering: a refused client causes no Cinder call.
   */
  private checkOwner(mac: string, client: string, found: Located | undefined): void {
    if (!found || "refused" in found) return; // nothing to serve: renderLocated() refuses it with the reason
    const identity = identityFor(found.machine, found.viaDefault);
    const decision = this.machines.authorize(mac, client, identity);
    if (decision.allowed) return;
    const ownerKnown = this.machines.addressOf(mac, identity) !== undefined;
    if (!ownerKnown && !mayCarrySecret(found.machine)) return;
    this.log.warn(
      { mac, machine: found.machine.name, client, reason: decision.reason },
      "machine config refused: the client does not hold this machine's address",
    );
    throw new Error(`config of ${mac} is served only to the machine's own address (${decision.reason})`);
  }

  /** shim asks for grubx64.efi/grubaa64.efi by name, beside itself or at the root (rhboot/shim#524). */
  private grubAlias(path: string): string | undefined {
    const root = this.state.opts.tftpRoot;
    if (!root) return undefined;
    const slash = path.lastIndexOf("/");
    const base = path.slice(slash + 1);
    const arch = GRUB_ALIAS[base];
    if (!arch) return undefined;
    const loader = this.state.opts.boot.loaders[arch];
    if (!loader || loader.grub === path) return undefined;
    const dir = slash < 0 ? "" : path.slice(0, slash);
    const shimDir = loader.shim.includes("/") ? loader.shim.slice(0, loader.shim.lastIndexOf("/")) : "";
    if (dir !== "" && dir !== shimDir) return undefined;
    return join(root, loader.grub);
  }
}

/** What ownership knows of a machine; the default machine's pinned address is not another MAC's. */
function identityFor(machine: Machine, viaDefault: boolean): OwnedIdentity {
  return viaDefault ? { name: machine.name } : { name: machine.name, address: machine.address };
}

/** A static volume with CHAP carries a secret; a Cinder or Ironic volume may (its answer can name CHAP). */
function mayCarrySecret(machine: Machine): boolean {
  return machine.volume.resolver !== "static" || machine.volume.chap !== undefined;
}
