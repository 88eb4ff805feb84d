/**
 * The appliance as users flash it: the image from packaging/image/build.sh booted in its own QEMU VM (OVMF,
 * real systemd, the hardened unit), configured only through files on its ESP, with its provisioning NIC on
 * the lab bridge and a management NIC on QEMU's user network (SSH forwarded into the lab namespace).
 * As a BootServerFactory, the lab's client VM then PXE-boots through it to its iSCSI root on the host side.
 */
import { existsSync, readFileSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "pino";
import { stringify } from "yaml";
import type { BootSession } from "../src/machines/sessions.js";
import { fullDhcp, LAB_ADMIN_PORT_NUMBER, labConfig, labMachine, readSessions } from "./appliance-server.js";
import type { BootServerContext, BootServerFactory } from "./boot-server.js";
import { labCacheDir } from "./lab.js";
import type { LabNetwork } from "./netns.js";
import { type Daemon, run, sleep, startDaemon } from "./proc.js";
import { parseApplianceLine, type ServerLogItem } from "./timeline.js";
import { launchVm, prepareFirmware, probeAccel, type RunningVm, type SerialLine, type VmArch } from "./vm.js";

const PROVISIONING_MAC = "52:54:00:6e:61:02";
const MANAGEMENT_MAC = "52:54:00:6e:61:01";
const SSH_PORT = 2222;
/** The image's TFTP root and where its ESP's images/ folder lands. */
const IMAGE_TFTP_ROOT = "/srv/netboot/tftp";
const IMAGE_FILES = "/srv/netboot/images";

export interface ApplianceImage {
  file: string;
  manifest: { name: string; version: string; bytes: { raw: number; rootfs: number } };
}

/** The built image of an architecture, or undefined (with the command that builds it). */
export function findApplianceImage(arch: VmArch, cache = labCacheDir()): ApplianceImage | undefined {
  const dir = join(cache, "appliance-image", arch === "x64" ? "amd64" : "arm64");
  if (!existsSync(join(dir, ".complete"))) return undefined;
  const manifest = JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8")) as ApplianceImage["manifest"];
  return { file: join(dir, `${manifest.name}.img`), manifest };
}

/** What the appliance VM showed, read over SSH just before it was stopped. */
export interface ApplianceVmReport {
  /** From QEMU's start until the appliance's API answered on its provisioning address. */
  readyMs: number;
  /** The esp-config unit's lines on the serial console. */
  consoleLines: string[];
  /** `systemd-analyze security netboot-appliance`'s overall exposure, e.g. 1.8. */
  securityExposure: number | undefined;
  /** The service's uid (a DynamicUser's come from 61184-65519), and the sockets on ports 67 and 69 (`ss`). */
  serviceUid: number;
  sockets: string[];
  /** How many of the unit's journal lines are JSON objects, of how many. */
  journalJsonLines: number;
  journalLines: number;
  /** The root filesystem's size inside the VM, and the image's root partition as built. */
  rootBytes: number;
  imageRootBytes: number;
  sessions?: BootSession[];
}

export interface ApplianceVmOptions {
  arch?: VmArch;
  onReport?: (report: ApplianceVmReport) => void;
  /** Disk bytes beyond the image's own size (as when flashed onto a larger disk). */
  growBy?: number;
}

/** Writes a file into the image's ESP (FAT at 1 MiB) with mtools: no loop device, no mount. */
async function espPut(image: string, from: string, to: string): Promise<void> {
  await run("mcopy", ["-o", "-i", `${image}@@1M`, from, `::${to}`], { timeoutMs: 60_000 });
}

async function espMkdir(image: string, dir: string): Promise<void> {
  await run("mmd", ["-D", "s", "-i", `${image}@@1M`, `::${dir}`]).catch(() => undefined);
}

/** SSH into the appliance VM from the lab namespace (its management NIC's port, forwarded by QEMU). */
export function sshArgv(net: LabNetwork, key: string, command: string): [string, string[]] {
  return net.exec(
    "ssh",
    "-i",
    key,
    "-p",
    String(SSH_PORT),
    "-o",
    "BatchMode=yes",
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "LogLevel=ERROR",
    "-o",
    "ConnectTimeout=10",
    "root@127.0.0.1",
    command,
  );
}

async function ssh(net: LabNetwork, key: string, command: string, timeoutMs = 60_000): Promise<string> {
  const [cmd, args] = sshArgv(net, key, command);
  return run(cmd, args, { timeoutMs });
}

/** A copy of the image to boot, with the ESP files the operator would write: network.conf, config.yaml, a key. */
export async function prepareApplianceDisk(opts: {
  image: ApplianceImage;
  dir: string;
  config?: Record<string, unknown> | string;
  networkConf?: string;
  files?: { from: string; to: string }[];
  growBy?: number;
}): Promise<{ disk: string; key: string }> {
  await mkdir(opts.dir, { recursive: true });
  const disk = join(opts.dir, "appliance.img");
  await run("cp", ["--sparse=always", opts.image.file, disk], { timeoutMs: 120_000 });
  if (opts.growBy) await run("truncate", ["-s", `+${opts.growBy}`, disk]);
  const key = join(opts.dir, "id_ed25519");
  await run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "nblab", "-f", key]);
  await espPut(disk, `${key}.pub`, "/netboot/authorized_keys");
  const networkConf = join(opts.dir, "network.conf");
  await writeFile(
    networkConf,
    opts.networkConf ?? `provisioning_nic = ${PROVISIONING_MAC}\nprovisioning_address = 10.77.0.2/24\n`,
  );
  await espPut(disk, networkConf, "/netboot/network.conf");
  if (opts.config !== undefined) {
    const configFile = join(opts.dir, "config.yaml");
    await writeFile(configFile, typeof opts.config === "string" ? opts.config : stringify(opts.config));
    await espPut(disk, configFile, "/netboot/config.yaml");
  }
  for (const f of opts.files ?? []) {
    const parts = f.to.split("/").filter(Boolean).slice(0, -1);
    for (let i = 1; i <= parts.length; i++) await espMkdir(disk, `/${parts.slice(0, i).join("/")}`);
    await espPut(disk, f.from, f.to);
  }
  return { disk, key };
}

/** Starts the appliance VM; its serial lines are kept (the esp-config unit writes to the console). */
export async function launchApplianceVm(opts: {
  net: LabNetwork;
  arch: VmArch;
  disk: string;
  dir: string;
  logger: Logger;
  timeLimitMs?: number;
  /** Where the serial log goes (default: dir/serial.log); a test keeps it under test-results. */
  serialLog?: string;
}): Promise<RunningVm> {
  const tap = await opts.net.addTap();
  const fw = await prepareFirmware(opts.arch, false, opts.dir);
  const accel = await probeAccel(opts.arch, opts.dir, opts.logger);
  return launchVm({
    net: opts.net,
    spec: {
      arch: opts.arch,
      secureBoot: false,
      accel,
      ...fw,
      tap,
      mac: PROVISIONING_MAC,
      disk: opts.disk,
      memoryMb: 1024,
      management: { mac: MANAGEMENT_MAC, hostForwards: [`tcp:127.0.0.1:${SSH_PORT}-:22`] },
    },
    timeLimitMs: opts.timeLimitMs ?? 900_000,
    serialLog: opts.serialLog ?? join(opts.dir, "serial.log"),
    logger: opts.logger,
  });
}

/** Polls until SSH answers (the esp-config unit starts sshd when the ESP has a key). */
export async function waitForSsh(
  net: LabNetwork,
  key: string,
  vm: RunningVm,
  limitMs: number,
): Promise<void> {
  const deadline = Date.now() + limitMs;
  let last = "";
  while (Date.now() < deadline) {
    try {
      await ssh(net, key, "true", 15_000);
      return;
    } catch (err) {
      last = (err as Error).message;
    }
    if ((await Promise.race([vm.done.then(() => true), sleep(2_000).then(() => false)])) === true)
      throw new Error("the appliance VM stopped before SSH answered");
  }
  throw new Error(`SSH into the appliance VM did not answer in ${limitMs} ms: ${last}`);
}

/** The appliance image as the lab's boot server: the client VM boots through a second VM. */
export function applianceVmServer(opts: ApplianceVmOptions = {}): BootServerFactory {
  return async (ctx) => {
    const arch = opts.arch ?? "x64";
    const image = findApplianceImage(arch);
    if (!image)
      throw new Error(
        `appliance image not built: run packaging/image/build.sh ${arch === "x64" ? "amd64" : "arm64"}`,
      );
    const { net, logger } = ctx;
    const volume = ctx.volume;
    if (!volume || !ctx.flavour) throw new Error("the appliance needs the boot's volume and flavour");
    const dir = join(ctx.workDir, "appliance-vm");
    const address = `${net.subnet}.2`;
    const config = applianceConfig(ctx, address);
    const { disk, key } = await prepareApplianceDisk({
      image,
      dir,
      config,
      growBy: opts.growBy ?? 0,
      files: [
        { from: ctx.boot.kernel, to: "/netboot/images/lab/vmlinuz" },
        { from: ctx.boot.initrd, to: "/netboot/images/lab/initrd.img" },
      ],
    });
    const vm = await launchApplianceVm({ net, arch, disk, dir, logger });
    let journal: Daemon | undefined;
    try {
      const adminUrl = `http://${address}:${LAB_ADMIN_PORT_NUMBER}`;
      const readyMs = await waitForApi(net, adminUrl, vm, 600_000);
      logger.info({ readyMs, qemuPid: vm.pid }, "appliance VM: service ready");
      await waitForSsh(net, key, vm, 60_000);
      const items: ServerLogItem[] = [];
      const [cmd, args] = sshArgv(net, key, "journalctl -u netboot-appliance -o cat -f -n all");
      journal = startDaemon(cmd, args, (line, at, stream) => {
        if (stream !== "stdout") return;
        const item = parseApplianceLine(line, at);
        if (item) items.push(item);
      });
      return {
        name: `netboot-appliance image (${arch}, systemd)`,
        pid: vm.pid,
        items,
        stop: async () => {
          try {
            const report = await readReport(net, key, vm, readyMs, image);
            report.sessions = await readSessions(net, adminUrl, ctx.mac).catch(() => undefined);
            opts.onReport?.(report);
          } catch (err) {
            logger.warn({ err: (err as Error).message }, "appliance VM report not read");
          }
          await journal?.stop(1_000);
          await vm.kill();
        },
      };
    } catch (err) {
      await journal?.stop(1_000);
      await vm.kill();
      throw err;
    }
  };
}

/** The lab's config, as the operator writes it for the image: its own paths, prov0, the ESP's images. */
function applianceConfig(ctx: BootServerContext, address: string): Record<string, unknown> {
  const volume = ctx.volume;
  if (!volume) throw new Error("no volume");
  const { image, machine } = labMachine(ctx, volume, "shim");
  image.kernel = { path: `${IMAGE_FILES}/lab/vmlinuz` };
  image.initrd = { path: `${IMAGE_FILES}/lab/initrd.img` };
  const config = labConfig(ctx, {
    root: IMAGE_TFTP_ROOT,
    loader: "shim",
    listen: { interface: "prov0", address },
    dhcp: fullDhcp(ctx, "prov0"),
    image,
    machines: [machine],
  });
  config.state_dir = "/var/lib/netboot-appliance";
  config.cache_dir = "/var/cache/netboot-appliance";
  return config;
}

/** Waits for the appliance's management API (on its provisioning address) to answer; ms since QEMU started. */
export async function waitForApi(
  net: LabNetwork,
  url: string,
  vm: RunningVm,
  limitMs: number,
): Promise<number> {
  const deadline = Date.now() + limitMs;
  while (Date.now() < deadline) {
    const [cmd, args] = net.exec("curl", "-sf", "-o", "/dev/null", "-m", "2", `${url}/metrics`);
    const ok = await run(cmd, args, { timeoutMs: 5_000 }).then(
      () => true,
      () => false,
    );
    if (ok) return Date.now() - vm.startedAt;
    if ((await Promise.race([vm.done.then(() => true), sleep(1_000).then(() => false)])) === true)
      throw new Error(`the appliance VM stopped before its API answered: ${consoleOf(vm).join(" | ")}`);
  }
  throw new Error(`the appliance's API did not answer in ${limitMs} ms: ${consoleOf(vm).join(" | ")}`);
}

/**
 * Waits for a console line, at most limitMs: a boot that stalls (a start job waiting, a unit that never ran)
 * fails with the console's last lines instead of hanging the test.
 */
export async function waitForConsole(vm: RunningVm, re: RegExp, limitMs: number): Promise<SerialLine> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<"expired">((resolve) => {
    timer = setTimeout(() => resolve("expired"), limitMs);
  });
  const hit = await Promise.race([vm.waitFor(re), expired]).finally(() => clearTimeout(timer));
  if (hit && hit !== "expired") return hit;
  const why = hit === "expired" ? `not in ${limitMs} ms` : "QEMU exited first";
  const tail = vm.lines
    .slice(-40)
    .map((l) => `${(l.t / 1000).toFixed(1).padStart(7)} ${l.text}`)
    .join("\n");
  throw new Error(`console line ${re} ${why}; the console's last lines:\n${tail}`);
}

function consoleOf(vm: RunningVm): string[] {
  return vm.lines.filter((l) => l.text.includes("netboot-image:")).map((l) => l.text);
}

async function readReport(
  net: LabNetwork,
  key: string,
  vm: RunningVm,
  readyMs: number,
  image: ApplianceImage,
): Promise<ApplianceVmReport> {
  const security = await ssh(
    net,
    key,
    "systemd-analyze security --no-pager netboot-appliance.service | tail -n 1",
  );
  const uid = await ssh(
    net,
    key,
    "ps -o uid= -p $(systemctl show -p MainPID --value netboot-appliance.service)",
  );
  const sockets = await ssh(net, key, "ss -Hulpn 'sport = :67 or sport = :69'");
  const journal = await ssh(net, key, "journalctl -u netboot-appliance -o cat --no-pager");
  const lines = journal.split("\n").filter((l) => l.trim() !== "");
  const rootBytes = Number((await ssh(net, key, "findmnt -bno SIZE /")).trim());
  return {
    readyMs,
    consoleLines: consoleOf(vm),
    securityExposure: Number(security.match(/level for \S+:\s*([0-9.]+)/)?.[1] ?? Number.NaN),
    serviceUid: Number(uid.trim()),
    sockets: sockets.split("\n").filter((l) => l.trim() !== ""),
    journalJsonLines: lines.filter((l) => l.startsWith("{") && isJson(l)).length,
    journalLines: lines.length,
    rootBytes,
    imageRootBytes: image.manifest.bytes.rootfs,
  };
}

function isJson(line: string): boolean {
  try {
    JSON.parse(line);
    return true;
  } catch {
    return false;
  }
}
