import { copyFile, mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { stringify } from "yaml";
import { packageRoot } from "../src/package-root.js";
import { type BootServerContext, type BootServerFactory, loaderNames } from "./boot-server.js";
import type { RootVolume } from "./cmdline.js";
import { startDaemon } from "./proc.js";
import { parseApplianceLine, type ServerLogItem } from "./timeline.js";

export interface ApplianceServerOptions {
  /** `full`: the appliance is the lab's DHCP server; `proxy`: another server (dnsmasq) hands out addresses. */
  dhcpMode?: "full" | "proxy";
  /** Extra top-level config merged over the generated one (e.g. a Cinder resolver for the machine). */
  customise?: (config: Record<string, unknown>, ctx: BootServerContext) => void | Promise<void>;
}

/** The machine's inventory entry: a static volume exactly as the lab's target exports it. */
function machineEntry(ctx: BootServerContext, v: RootVolume): Record<string, unknown> {
  return {
    name: "nblab-vm",
    macs: [ctx.mac],
    arch: ctx.boot.arch,
    image: "lab",
    initiator_iqn: v.initiatorIqn,
    volume: {
      resolver: "static",
      portals: [`${v.portalIp}:${v.port}`],
      iqn: v.targetIqn,
      lun: v.lun,
      ...(v.chap ? { chap: { username: v.chap.user, password: v.chap.password } } : {}),
    },
  };
}

/**
 * `netboot serve` as the lab's boot server, inside the lab namespace, with a generated config:
 * loaders in per-architecture folders, the image's kernel and initrd, one machine whose GRUB config
 * (and so its kernel command line) the appliance renders itself from the inventory.
 */
export function applianceServer(opts: ApplianceServerOptions = {}): BootServerFactory {
  return async (ctx) => {
    const { net, boot, workDir, logger } = ctx;
    if (!ctx.volume || !ctx.flavour) throw new Error("the appliance needs the boot's volume and flavour");
    const root = join(workDir, "tftp");
    const names = loaderNames(boot.arch);
    await mkdir(join(root, boot.arch), { recursive: true });
    // Copies, not links: the TFTP jail refuses a symlink that leads out of its root.
    for (const file of [names.shim, names.grub, names.mok]) {
      await copyFile(join(boot.loaderDir, file), join(root, boot.arch, file));
    }
    const mode = opts.dhcpMode ?? "full";
    const config: Record<string, unknown> = {
      listen: { interfaces: [net.bridge], address: net.serverIp },
      log: { level: "info" },
      state_dir: join(workDir, "state"),
      cache_dir: join(workDir, "cache"),
      dhcp:
        mode === "full"
          ? {
              mode,
              subnets: [
                {
                  subnet: `${net.subnet}.0/${net.prefixLength}`,
                  interface: net.bridge,
                  range: { start: `${net.subnet}.100`, end: `${net.subnet}.200` },
                  lease_time: 3600,
                },
              ],
              reservations: [{ mac: ctx.mac, address: `${net.subnet}.10`, hostname: "nblab-vm" }],
            }
          : { mode },
      tftp: { root },
      boot: {
        loaders: { [boot.arch]: { shim: `${boot.arch}/${names.shim}`, grub: `${boot.arch}/${names.grub}` } },
        grub: { timeout: 0 },
      },
      images: {
        lab: {
          kernel: { path: boot.kernel },
          initrd: { path: boot.initrd },
          flavour: ctx.flavour,
          root: `UUID=${ctx.volume.rootUuid}`,
          extra_args: ctx.extraArgs ?? [],
        },
      },
      machines: [machineEntry(ctx, ctx.volume)],
    };
    await opts.customise?.(config, ctx);
    const configFile = join(workDir, "netboot.yaml");
    await writeFile(configFile, stringify(config));

    const items: ServerLogItem[] = [];
    const recent: string[] = [];
    const cli = join(packageRoot(), "dist/src/bin.js");
    const [cmd, argv] = net.exec(process.execPath, cli, "serve", "--config", configFile);
    let started!: () => void;
    const ready = new Promise<void>((r) => {
      started = r;
    });
    const d = startDaemon(cmd, argv, (line, at) => {
      logger.debug({ appliance: line }, "appliance");
      recent.push(line);
      if (recent.length > 10) recent.shift();
      if (line.includes('"netboot-appliance started"')) started();
      const item = parseApplianceLine(line, at);
      if (item) items.push(item);
    });
    const ok = await Promise.race([
      ready.then(() => true),
      d.exited.then(() => false),
      new Promise<boolean>((r) => setTimeout(() => r(false), 60_000)),
    ]);
    if (!ok) {
      await d.stop(1_000);
      throw new Error(`netboot serve did not start: ${recent.join(" | ")}`);
    }
    logger.info({ appliancePid: d.pid, config: configFile }, "appliance ready");
    return { name: `netboot-appliance (${mode})`, pid: d.pid, items, stop: () => d.stop(5_000) };
  };
}
