import { copyFile, mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { stringify } from "yaml";
import type { BootSession } from "../src/machines/sessions.js";
import { packageRoot } from "../src/package-root.js";
import { type BootServerContext, type BootServerFactory, loaderNames } from "./boot-server.js";
import type { RootVolume } from "./cmdline.js";
import { dnsmasqDhcpArgs } from "./dnsmasq-server.js";
import type { LabNetwork } from "./netns.js";
import { type Daemon, run, startDaemon } from "./proc.js";
import { parseApplianceLine, type ServerLogItem } from "./timeline.js";

export interface ApplianceServerOptions {
  /**
   * `full`: the appliance is the lab's DHCP server. `proxy`: dnsmasq plays the site's DHCP server
   * (addresses only, no boot options) and the appliance answers the boot as ProxyDHCP beside it.
   */
  dhcpMode?: "full" | "proxy";
  /**
   * Resolve the volume through Cinder instead of the static inventory: an OpenStack fake (Keystone,
   * Cinder, Glance) runs in the lab namespace, its connection info points at the lab's real LUN, and
   * the kernel and initrd come from Glance through the appliance's cache.
   */
  cinder?: boolean;
  /**
   * The machine is not in the inventory at all: the appliance finds it in Ironic (the fake, beside the
   * Cinder one) by its MAC, with its iqn connector and a boot volume target whose properties policy masks,
   * so the volume is resolved through Cinder as Ironic itself would. Implies `cinder`.
   */
  ironic?: boolean;
  /** The machine's first-stage loader: `shim` (signed, TFTP) or `ipxe` (kernel and initrd over HTTP). */
  loader?: "shim" | "ipxe";
  /**
   * Told what was seen when the server stops: the OpenStack calls made, and the VM's boot sessions as
   * the appliance's management API gave them just before it stopped.
   */
  onStopped?: (report: {
    openstackCalls?: { method: string; path: string; status: number }[];
    sessions?: BootSession[];
  }) => void;
  /** Told the management API's URL and token once the appliance runs (a test's browser, say). */
  onAdmin?: (admin: { url: string; token: string; ns: string }) => void;
}

const MACHINE = "nblab-vm";
/** Not 80: firmware must take the port from the URL, as it would on a site with a proxy in front. */
const LAB_HTTP_PORT = 8080;
const LAB_ADMIN_PORT = 9090;
/** The lab's admin token: a throw-away namespace, so a fixed one is fine. */
export const LAB_ADMIN_TOKEN = "nblab-admin-token-0123456789";
const VOLUME_ID = "5b7ae3a5-0c8f-4a57-9d0e-6f1e2d3c4b5a";
const IRONIC_NODE = "1be26c0b-03f2-4d2e-ae87-c02d7f33c123";

function staticVolume(v: RootVolume): Record<string, unknown> {
  return {
    resolver: "static",
    portals: [`${v.portalIp}:${v.port}`],
    iqn: v.targetIqn,
    lun: v.lun,
    ...(v.chap ? { chap: { username: v.chap.user, password: v.chap.password } } : {}),
  };
}

/** A process whose stdout lines are JSON; resolves the first line, keeps the rest. */
async function startJsonHelper(
  ctx: BootServerContext,
  argv: string[],
  name: string,
): Promise<{ daemon: Daemon; first: Record<string, unknown>; lines: Record<string, unknown>[] }> {
  const lines: Record<string, unknown>[] = [];
  const [cmd, args] = ctx.net.exec(process.execPath, ...argv);
  let gotFirst!: (l: Record<string, unknown>) => void;
  const first = new Promise<Record<string, unknown>>((r) => {
    gotFirst = r;
  });
  const daemon = startDaemon(cmd, args, (line, _at, stream) => {
    if (stream !== "stdout") return ctx.logger.debug({ [name]: line }, name);
    try {
      const obj = JSON.parse(line) as Record<string, unknown>;
      lines.push(obj);
      if (lines.length === 1) gotFirst(obj);
    } catch {
      ctx.logger.debug({ [name]: line }, name);
    }
  });
  const ok = await Promise.race([first.then(() => true), daemon.exited.then(() => false)]);
  if (!ok) throw new Error(`${name} did not start`);
  return { daemon, first: await first, lines };
}

/** The VM's boot sessions from the appliance's API, read with curl inside the lab namespace. */
export async function readSessions(
  where: { exec: LabNetwork["exec"] },
  url: string,
  mac: string,
): Promise<BootSession[]> {
  const [cmd, args] = where.exec(
    "curl",
    "-sf",
    "-m",
    "5",
    "-H",
    `Authorization: Bearer ${LAB_ADMIN_TOKEN}`,
    `${url}/api/v1/machines/${mac}/boots`,
  );
  const out = await run(cmd, args, { timeoutMs: 10_000 }).catch((err: Error) => {
    // run() names the command line in its error, and this one carries the token.
    throw new Error(err.message.replaceAll(LAB_ADMIN_TOKEN, "<admin token>"));
  });
  return (JSON.parse(out) as { boots: BootSession[] }).boots;
}

/** The site's DHCP server for the proxy row: dnsmasq handing out addresses only, bound to the lab bridge. */
function startSiteDhcp(ctx: BootServerContext): Daemon {
  const { net, workDir } = ctx;
  const [cmd, args] = net.exec("dnsmasq", ...dnsmasqDhcpArgs(net, workDir, "site-dnsmasq"));
  return startDaemon(cmd, args, (line) => ctx.logger.debug({ siteDhcp: line }, "site dhcp"));
}

/**
 * `netboot serve` as the lab's boot server, inside the lab namespace, with a generated config:
 * loaders in per-architecture folders, the image's kernel and initrd, one machine whose GRUB config
 * (and so its kernel command line) the appliance renders itself from the inventory.
 */
export const LAB_ADMIN_PORT_NUMBER = LAB_ADMIN_PORT;

export function applianceServer(opts: ApplianceServerOptions = {}): BootServerFactory {
  return async (ctx) => {
    const { net, boot, workDir, logger } = ctx;
    const volume = ctx.volume;
    if (!volume || !ctx.flavour) throw new Error("the appliance needs the boot's volume and flavour");
    const loader = opts.loader ?? "shim";
    const root = await labTftpRoot(ctx, loader);
    const helpers: Daemon[] = [];
    const stopHelpers = () => Promise.all(helpers.map((h) => h.stop(2_000)));
    const mode = opts.dhcpMode ?? "full";

    try {
      const { image, machine } = labMachine(ctx, volume, loader);
      let resolvers: Record<string, unknown> | undefined;
      let openstack: Awaited<ReturnType<typeof startJsonHelper>> | undefined;
      if (opts.cinder || opts.ironic) {
        const connection = {
          driver_volume_type: "iscsi",
          target_portal: `${volume.portalIp}:${volume.port}`,
          target_iqn: volume.targetIqn,
          target_lun: volume.lun,
          ...(volume.chap
            ? { auth_method: "CHAP", auth_username: volume.chap.user, auth_password: volume.chap.password }
            : {}),
        };
        const fakeOptions = {
          volumes: [{ id: VOLUME_ID, connection, kernelFile: boot.kernel, initrdFile: boot.initrd }],
          password: "lab-keystone-secret",
          ...(opts.ironic
            ? {
                ironic: {
                  maskTargetProperties: true,
                  nodes: [
                    {
                      uuid: IRONIC_NODE,
                      name: MACHINE,
                      properties: {
                        capabilities: "iscsi_boot:True,boot_mode:uefi",
                        cpu_arch: boot.arch === "aa64" ? "aarch64" : "x86_64",
                      },
                      ports: [ctx.mac],
                      connectors: [{ type: "iqn", connector_id: volume.initiatorIqn }],
                      targets: [
                        { volume_type: "iscsi", boot_index: 0, volume_id: VOLUME_ID, properties: connection },
                      ],
                    },
                  ],
                },
              }
            : {}),
        };
        openstack = await startJsonHelper(
          ctx,
          [join(packageRoot(), "dist/test/support/openstack-fake-main.js"), JSON.stringify(fakeOptions)],
          "openstack",
        );
        helpers.push(openstack.daemon);
        // Kernel and initrd come from Glance through the appliance's cache.
        delete image.kernel;
        delete image.initrd;
        machine.volume = { resolver: "cinder", volume_id: VOLUME_ID };
        resolvers = {
          cinder: {
            auth_url: openstack.first.authUrl,
            auth: {
              type: "password",
              username: "netboot",
              password: "lab-keystone-secret",
              project_name: "baremetal",
            },
          },
          ...(opts.ironic ? { ironic: { image: "lab" } } : {}),
        };
      }
      if (mode === "proxy") helpers.push(startSiteDhcp(ctx));

      const config = labConfig(ctx, {
        root,
        loader,
        listen: { interface: net.bridge, address: net.serverIp },
        dhcp: mode === "full" ? fullDhcp(ctx, net.bridge) : { mode },
        image,
        machines: opts.ironic ? [] : [machine],
        ...(resolvers ? { resolvers } : {}),
      });
      const configFile = join(workDir, "netboot.yaml");
      await writeFile(configFile, stringify(config));

      const { daemon: d, items } = await startLabAppliance(ctx, ctx.net, configFile);
      logger.info(
        { appliancePid: d.pid, config: configFile, mode, cinder: !!opts.cinder, ironic: !!opts.ironic },
        "appliance ready",
      );
      const adminUrl = `http://${net.serverIp}:${LAB_ADMIN_PORT}`;
      opts.onAdmin?.({ url: adminUrl, token: LAB_ADMIN_TOKEN, ns: net.ns });
      return {
        name: `netboot-appliance (${mode}${opts.ironic ? ", ironic" : opts.cinder ? ", cinder" : ""}${loader === "ipxe" ? ", ipxe" : ""})`,
        pid: d.pid,
        items,
        stop: async () => {
          const sessions = await readSessions(ctx.net, adminUrl, ctx.mac).catch((err: Error) => {
            logger.warn({ err: err.message }, "boot sessions not read from the appliance");
            return undefined;
          });
          await d.stop(5_000);
          await stopHelpers();
          const last = openstack?.lines.at(-1);
          opts.onStopped?.({
            ...(last && Array.isArray(last.calls)
              ? { openstackCalls: last.calls as { method: string; path: string; status: number }[] }
              : {}),
            ...(sessions ? { sessions } : {}),
          });
        },
      };
    } catch (err) {
      await stopHelpers();
      throw err;
    }
  };
}

/** The TFTP root of a lab appliance: the loaders in a per-architecture folder. */
export async function labTftpRoot(ctx: BootServerContext, loader: "shim" | "ipxe"): Promise<string> {
  const root = join(ctx.workDir, "tftp");
  const arch = ctx.boot.arch;
  const names = loaderNames(arch);
  await mkdir(join(root, arch), { recursive: true });
  // Copies, not links: the TFTP jail refuses a symlink that leads out of its root.
  const files =
    loader === "ipxe" ? [names.shim, names.grub, names.mok, names.ipxe] : [names.shim, names.grub, names.mok];
  for (const file of files) await copyFile(join(ctx.boot.loaderDir, file), join(root, arch, file));
  return root;
}

/** The lab's one image and machine, with a static volume (a Cinder row replaces the volume and files). */
export function labMachine(
  ctx: BootServerContext,
  volume: RootVolume,
  loader: "shim" | "ipxe",
): { image: Record<string, unknown>; machine: Record<string, unknown> } {
  return {
    image: {
      flavour: ctx.flavour,
      root: `UUID=${volume.rootUuid}`,
      extra_args: ctx.extraArgs ?? [],
      kernel: { path: ctx.boot.kernel },
      initrd: { path: ctx.boot.initrd },
    },
    machine: {
      name: MACHINE,
      macs: [ctx.mac],
      arch: ctx.boot.arch,
      loader,
      image: "lab",
      initiator_iqn: volume.initiatorIqn,
      volume: staticVolume(volume),
    },
  };
}

/** Full-mode DHCP on the lab subnet, with the VM's address reserved. */
export function fullDhcp(ctx: BootServerContext, iface: string): Record<string, unknown> {
  const { net } = ctx;
  return {
    mode: "full",
    subnets: [
      {
        subnet: `${net.subnet}.0/${net.prefixLength}`,
        interface: iface,
        range: { start: `${net.subnet}.100`, end: `${net.subnet}.200` },
        lease_time: 3600,
      },
    ],
    reservations: [{ mac: ctx.mac, address: `${net.subnet}.10`, hostname: MACHINE }],
  };
}

export interface LabConfigParts {
  root: string;
  loader: "shim" | "ipxe";
  listen: { interface: string; address: string };
  dhcp: Record<string, unknown>;
  image: Record<string, unknown>;
  machines: Record<string, unknown>[];
  resolvers?: Record<string, unknown>;
  /** Folder for state_dir and cache_dir (default: the boot's workDir). */
  dir?: string;
  /** Sections added as they are (state, ha). */
  extra?: Record<string, unknown>;
}

/** A `netboot serve` config for the lab: one address, HTTP and the admin API on, the loaders of the VM's arch. */
export function labConfig(ctx: BootServerContext, parts: LabConfigParts): Record<string, unknown> {
  const arch = ctx.boot.arch;
  const names = loaderNames(arch);
  const dir = parts.dir ?? ctx.workDir;
  return {
    listen: { interfaces: [parts.listen.interface], address: parts.listen.address },
    log: { level: "info" },
    state_dir: join(dir, "state"),
    cache_dir: join(dir, "cache"),
    dhcp: parts.dhcp,
    tftp: { root: parts.root },
    // Always on: UEFI HTTP boot clients and iPXE need it, and it costs a PXE boot nothing.
    http: { enable: true, port: LAB_HTTP_PORT },
    admin: { listen: `${parts.listen.address}:${LAB_ADMIN_PORT}`, token: LAB_ADMIN_TOKEN },
    boot: {
      loaders: {
        [arch]: {
          shim: `${arch}/${names.shim}`,
          grub: `${arch}/${names.grub}`,
          ...(parts.loader === "ipxe" ? { ipxe: `${arch}/${names.ipxe}` } : {}),
        },
      },
      grub: { timeout: 0 },
    },
    images: { lab: parts.image },
    machines: parts.machines,
    ...(parts.resolvers ? { resolvers: parts.resolvers } : {}),
    ...(parts.extra ?? {}),
  };
}

/** Starts `netboot serve` in a namespace and resolves once it logged that it started; its log parsed live. */
export async function startLabAppliance(
  ctx: BootServerContext,
  where: { exec: LabNetwork["exec"] },
  configFile: string,
  label = "appliance",
): Promise<{ daemon: Daemon; items: ServerLogItem[]; lines: string[] }> {
  const items: ServerLogItem[] = [];
  const lines: string[] = [];
  const recent: string[] = [];
  const cli = join(packageRoot(), "dist/src/bin.js");
  const [cmd, argv] = where.exec(process.execPath, cli, "serve", "--config", configFile);
  let started!: () => void;
  const ready = new Promise<void>((r) => {
    started = r;
  });
  const d = startDaemon(cmd, argv, (line, at) => {
    ctx.logger.debug({ [label]: line }, label);
    lines.push(line);
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
    throw new Error(`netboot serve (${label}) did not start: ${recent.join(" | ")}`);
  }
  return { daemon: d, items, lines };
}
