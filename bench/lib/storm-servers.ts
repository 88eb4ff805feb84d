/**
 * The two boot servers of the storm, each as its own process in the storm's server namespace, serving the
 * same machines the same files: this appliance (`netboot serve`) and dnsmasq (DHCP + TFTP).
 * Either can be pinned to a set of cores with taskset. Both log what they log when deployed, to a file.
 */
import { type ChildProcess, spawn } from "node:child_process";
import {
  copyFileSync,
  mkdirSync,
  openSync,
  readFileSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { pino } from "pino";
import { stringify } from "yaml";
import { planSections } from "../../src/appliance.js";
import { BootPlan } from "../../src/bootplan/plan.js";
import { loadConfig } from "../../src/config/load.js";
import { packageRoot } from "../../src/package-root.js";
import { bootSequence, type StormFile } from "./storm-machine.js";
import { STORM_POOL, STORM_PREFIX_LENGTH, STORM_SERVER_ADDRESS, type StormNet } from "./storm-net.js";

export type StormServerName = "appliance" | "dnsmasq";

export interface StormInputs {
  /** Real loaders and a real kernel and initrd. */
  shim: string;
  grub: string;
  kernel: string;
  initrd: string;
}

export interface RunningServer {
  name: StormServerName;
  pid: number;
  logFile: string;
  stop(): Promise<void>;
}

/** The built CLI (npm test and the bench scripts build first), whether this runs from dist or from source. */
const CLI = join(packageRoot(), "dist/src/bin.js");

/** The appliance's config for the storm's machines; also the source of the configs dnsmasq serves. */
export function applianceConfig(
  dir: string,
  inputs: StormInputs,
  net: StormNet,
  /** More top-level sections (a test's admin listener, its session limits). */
  extra: Record<string, unknown> = {},
): string {
  const root = join(dir, "appliance-tftp");
  mkdirSync(join(root, "x64"), { recursive: true });
  copyFileSync(inputs.shim, join(root, "x64/shimx64.efi"));
  copyFileSync(inputs.grub, join(root, "x64/grubx64.efi"));
  const config = {
    listen: { interfaces: [net.bridge], address: STORM_SERVER_ADDRESS },
    log: { level: "info" },
    state_dir: join(dir, "state"),
    cache_dir: join(dir, "cache"),
    dhcp: {
      mode: "full",
      subnets: [
        {
          subnet: `10.90.0.0/${STORM_PREFIX_LENGTH}`,
          interface: net.bridge,
          range: STORM_POOL,
          lease_time: 3600,
        },
      ],
    },
    tftp: { root, max_blksize: 1468, max_windowsize: 64, timeout_ms: 1000 },
    boot: { loaders: { x64: { shim: "x64/shimx64.efi", grub: "x64/grubx64.efi" } }, grub: { timeout: 0 } },
    images: {
      deb: {
        kernel: { path: inputs.kernel },
        initrd: { path: inputs.initrd },
        flavour: "initramfs-tools",
        extra_args: ["console=ttyS0,115200"],
      },
    },
    machines: net.machines.map((m, i) => ({
      name: `storm${i + 1}`,
      macs: [m.mac],
      arch: "x64",
      image: "deb",
      volume: {
        resolver: "static",
        portals: [`${STORM_SERVER_ADDRESS}:3260`],
        iqn: `iqn.2026-12.lab.netboot:storm${i + 1}-root`,
        lun: 1,
      },
    })),
    ...extra,
  };
  const file = join(dir, "appliance.yaml");
  writeFileSync(file, stringify(config));
  return file;
}

/** The dnsmasq TFTP root: the same loaders, the appliance's own rendered configs, links to kernel and initrd. */
export async function dnsmasqRoot(
  dir: string,
  configFile: string,
  inputs: StormInputs,
  net: StormNet,
): Promise<string> {
  const root = join(dir, "dnsmasq-tftp");
  mkdirSync(join(root, "x64"), { recursive: true });
  mkdirSync(join(root, "grub"), { recursive: true });
  mkdirSync(join(root, "images/deb"), { recursive: true });
  copyFileSync(inputs.shim, join(root, "x64/shimx64.efi"));
  copyFileSync(inputs.grub, join(root, "x64/grubx64.efi"));
  symlinkSync(inputs.kernel, join(root, "images/deb/kernel"));
  symlinkSync(inputs.initrd, join(root, "images/deb/initrd"));
  const { config } = loadConfig(configFile);
  const plan = new BootPlan({ ...planSections(config), logger: pino({ level: "warn" }) });
  writeFileSync(join(root, "grub/grub.cfg"), plan.masterConfig());
  for (const m of net.machines)
    writeFileSync(join(root, `grub/${m.mac}.conf`), (await plan.render(m.mac)).grubConfig);
  return root;
}

/** The boot sequence with the sizes this server's files have. */
export function serverSequence(root: string, mac: string): StormFile[] {
  const size = (p: string) => statSync(join(root, p)).size;
  return bootSequence({
    shim: size("x64/shimx64.efi"),
    grub: size("x64/grubx64.efi"),
    master: size("grub/grub.cfg"),
    own: size(`grub/${mac}.conf`),
    kernel: size("images/deb/kernel"),
    initrd: size("images/deb/initrd"),
  });
}

/**
 * Both servers run at this niceness (NETBOOT_STORM_SERVER_NICE, default -10) over the machines, which
 * share this host's cores: in a real rack the machines are not on the server's cores, so a server that has
 * work should not wait behind 200 clients' processes (on one core, that delayed RRQ answers by seconds).
 */
export const SERVER_NICE = Number(process.env.NETBOOT_STORM_SERVER_NICE ?? -10);

function pinned(cores: string | undefined, argv: string[]): string[] {
  const niced = SERVER_NICE === 0 ? argv : ["nice", "-n", String(SERVER_NICE), ...argv];
  return cores === undefined ? niced : ["taskset", "-c", cores, ...niced];
}

async function waitFor(child: ChildProcess, logFile: string, ready: (log: string) => boolean, what: string) {
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null)
      throw new Error(`${what} exited ${child.exitCode}:\n${readFileSync(logFile, "utf8")}`);
    if (ready(readFileSync(logFile, "utf8"))) return;
    if (Date.now() > deadline) throw new Error(`${what} did not start:\n${readFileSync(logFile, "utf8")}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function stopper(child: ChildProcess): () => Promise<void> {
  return () =>
    new Promise<void>((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve();
      const kill = setTimeout(() => child.kill("SIGKILL"), 5_000);
      child.once("exit", () => {
        clearTimeout(kill);
        resolve();
      });
      child.kill("SIGTERM");
    });
}

export async function startAppliance(
  net: StormNet,
  configFile: string,
  logFile: string,
  cores?: string,
): Promise<RunningServer> {
  const out = openSync(logFile, "w");
  const [cmd, args] = net.exec(
    net.serverNs,
    ...(pinned(cores, ["node", CLI, "serve", "--config", configFile]) as [string, ...string[]]),
  );
  const child = spawn(cmd, args, { stdio: ["ignore", out, out] });
  await waitFor(child, logFile, (log) => log.includes("netboot-appliance started"), "the appliance");
  return { name: "appliance", pid: child.pid as number, logFile, stop: stopper(child) };
}

export async function startDnsmasq(
  net: StormNet,
  dir: string,
  root: string,
  logFile: string,
  cores?: string,
): Promise<RunningServer> {
  writeFileSync(logFile, "");
  const leases = join(dir, "dnsmasq.leases");
  writeFileSync(leases, "");
  const argv = [
    "dnsmasq",
    "--keep-in-foreground",
    "--conf-file=/dev/null",
    "--port=0",
    "--user=root",
    `--interface=${net.bridge}`,
    "--bind-interfaces",
    `--dhcp-range=${STORM_POOL.start},${STORM_POOL.end},255.255.252.0,1h`,
    `--dhcp-leasefile=${leases}`,
    `--pid-file=${join(dir, "dnsmasq.pid")}`,
    `--log-facility=${logFile}`,
    "--dhcp-lease-max=4000",
    // Its default ICMP check of each new address stalls DHCP for seconds per address: in a storm, machines
    // then give up. The appliance does no such check, and an operator expecting storms turns it off.
    "--no-ping",
    // As the appliance: only the inventory's machines are answered.
    ...net.machines.map((m) => `--dhcp-host=${m.mac}`),
    "--dhcp-ignore=tag:!known",
    "--dhcp-boot=x64/shimx64.efi",
    "--enable-tftp",
    `--tftp-root=${root}`,
    "--tftp-max=2000",
  ];
  const [cmd, args] = net.exec(net.serverNs, ...(pinned(cores, argv) as [string, ...string[]]));
  const child = spawn(cmd, args, { stdio: ["ignore", "ignore", openSync(`${logFile}.stderr`, "w")] });
  await waitFor(child, logFile, (log) => log.includes("TFTP root is"), "dnsmasq");
  return { name: "dnsmasq", pid: child.pid as number, logFile, stop: stopper(child) };
}
