import { existsSync, readFileSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import pino, { type Logger } from "pino";
import type { BootServerFactory, RunningBootServer } from "./boot-server.js";
import { type InitramfsFlavour, kernelCommandLine, trailingArgs } from "./cmdline.js";
import { dnsmasqServer } from "./dnsmasq-server.js";
import { type ChapCredentials, type IscsiTarget, startIscsiTarget } from "./iscsi-target.js";
import { createLabNetwork, type LabNetwork } from "./netns.js";
import { run } from "./proc.js";
import { type BootTimeline, buildTimeline } from "./timeline.js";
import { type Accel, launchVm, prepareFirmware, probeAccel, type RunningVm, type VmArch } from "./vm.js";

export const MARKER = /NETBOOT-E2E-OK\b.*/;

export function labCacheDir(): string {
  return process.env.NETBOOT_LAB_CACHE ?? "/var/cache/netboot-lab";
}

/** The folder of a built image, or an error saying how to build it. */
export function imageDir(name: string, cache = labCacheDir()): string {
  const dir = join(cache, "images", name);
  if (!existsSync(join(dir, ".complete")))
    throw new Error(`image ${name} is not built: run qemu/images/build.sh ${name}`);
  return dir;
}

export function imageAvailable(name: string, cache = labCacheDir()): boolean {
  return existsSync(join(cache, "images", name, ".complete"));
}

export interface BootOptions {
  arch?: VmArch;
  secureBoot?: boolean;
  /** UEFI HTTP boot instead of PXE (the firmware's PXE is turned off); needs a server with HTTP. */
  httpBoot?: boolean;
  flavour?: InitramfsFlavour;
  /** Image name under $CACHE/images; default debian12-<arch>-<flavour>. */
  image?: string;
  /** Folder with x64/ and aa64/ loaders (firmware/fetch.sh OUTDIR). */
  loaderRoot: string;
  chap?: ChapCredentials;
  /** Default /sbin/netboot-marker (fast path); null boots systemd. */
  init?: string | null;
  server?: BootServerFactory;
  timeLimitMs?: number;
  accel?: Accel;
  mac?: string;
  /** Where to write the timeline JSON and a copy of the serial log (kept after teardown). */
  outDir?: string;
  logger?: Logger;
  /** Lets a test strike at a point of the boot (e.g. a failure in the middle). */
  onVmStarted?: (vm: RunningVm) => void;
}

export interface BootResult {
  ok: boolean;
  marker: string | undefined;
  durationMs: number;
  accel: Accel;
  timedOut: boolean;
  timeline: BootTimeline;
  targetSawLogin: boolean;
  initiators: string[];
  initiatorIqn: string;
  servedFiles: string[];
  /** Names of the lab's processes and namespace, for leak checks. */
  resources: { ns: string; pids: number[]; tgtControlPort?: number };
  serialLog: string | undefined;
  /** From runBoot's start to QEMU's: root image copy, namespace, tgtd, server, firmware copy. */
  setupMs: number;
}

type Cleanup = () => Promise<void>;
const active = new Set<Cleanup>();
let handlersInstalled = false;

/** Ctrl-C and SIGTERM tear down every running boot before the process exits. */
function installSignalHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  const onSignal = (sig: NodeJS.Signals) => {
    const all = [...active];
    void Promise.allSettled(all.map((c) => c())).then(() => process.exit(sig === "SIGINT" ? 130 : 143));
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
}

function macFor(arch: VmArch): string {
  return arch === "x64" ? "52:54:00:6e:62:01" : "52:54:00:6e:62:02";
}

/** Boots one VM through the lab, from firmware to the root filesystem's marker, and tears everything down. */
export async function runBoot(opts: BootOptions): Promise<BootResult> {
  const arch = opts.arch ?? "x64";
  const flavour = opts.flavour ?? "initramfs-tools";
  const image = opts.image ?? `debian12-${arch}-${flavour === "dracut" ? "dracut" : "initramfs"}`;
  const logger = opts.logger ?? pino({ level: process.env.NETBOOT_LAB_LOG ?? "warn" });
  const mac = opts.mac ?? macFor(arch);
  const dir = imageDir(image);
  const rootUuid = readFileSync(join(dir, "rootfs.uuid"), "utf8").trim();
  const initiatorIqn = `iqn.2026-11.lab.netboot:vm-${mac.replaceAll(":", "")}`;
  const targetIqn = `iqn.2026-11.lab.netboot:root-${image}`;

  const setupStartedAt = Date.now();
  const workDir = await mkdtemp(join(tmpdir(), "nblab-"));
  let net: LabNetwork | undefined;
  let target: IscsiTarget | undefined;
  let server: RunningBootServer | undefined;
  let vm: RunningVm | undefined;
  const pids: number[] = [];
  let cleaned: Promise<void> | undefined;
  const cleanup: Cleanup = () => {
    cleaned ??= (async () => {
      // Order: the VM first (it holds the tap and an iSCSI session), then the servers, then the network.
      await vm?.kill().catch(() => undefined);
      await server?.stop().catch(() => undefined);
      await target?.stop().catch(() => undefined);
      await net?.destroy().catch(() => undefined);
      await rm(workDir, { recursive: true, force: true });
      active.delete(cleanup);
    })();
    return cleaned;
  };
  active.add(cleanup);
  installSignalHandlers();

  try {
    // Each boot ends with a sysrq power-off and a dirty journal: never reuse a root image.
    const lunFile = join(workDir, "root.img");
    await run("cp", ["--sparse=always", join(dir, "root.img"), lunFile], { timeoutMs: 120_000 });

    net = await createLabNetwork();
    const tap = await net.addTap();
    target = await startIscsiTarget({
      net,
      backingFile: lunFile,
      targetIqn,
      ...(opts.chap ? { chap: opts.chap } : {}),
      logger,
    });
    if (target.pid) pids.push(target.pid);
    target.startWatching(500);

    const accel = opts.accel ?? (await probeAccel(arch, workDir, logger));
    const volume = {
      portalIp: target.portalIp,
      port: target.port,
      targetIqn,
      lun: target.lun,
      initiatorIqn,
      rootUuid,
      ...(opts.chap ? { chap: opts.chap } : {}),
    };
    const lineOptions = {
      arch,
      flavour,
      volume,
      ...(opts.init === null ? {} : { init: opts.init ?? "/sbin/netboot-marker" }),
    };
    const cmdline = kernelCommandLine(lineOptions);
    const serverFactory = opts.server ?? dnsmasqServer;
    server = await serverFactory({
      net,
      workDir,
      mac,
      logger,
      volume,
      flavour,
      extraArgs: trailingArgs(lineOptions),
      boot: {
        arch,
        loaderDir: join(opts.loaderRoot, arch),
        kernel: join(dir, "vmlinuz"),
        initrd: join(dir, "initrd.img"),
        cmdline,
      },
    });
    pids.push(server.pid);

    const fw = await prepareFirmware(arch, opts.secureBoot ?? false, workDir);
    const serialLog = join(workDir, "serial.log");
    vm = await launchVm({
      net,
      spec: {
        arch,
        secureBoot: opts.secureBoot ?? false,
        httpBoot: opts.httpBoot ?? false,
        accel,
        ...fw,
        tap,
        mac,
      },
      timeLimitMs: opts.timeLimitMs ?? 600_000,
      serialLog,
      logger,
    });
    pids.push(vm.pid);
    opts.onVmStarted?.(vm);

    const markerLine = await vm.waitFor(MARKER);
    // The marker powers the VM off with sysrq; give it a moment, then the cleanup kills it anyway.
    const exit = await Promise.race([
      vm.done,
      new Promise<undefined>((r) => setTimeout(() => r(undefined), 15_000)),
    ]);
    const durationMs = markerLine?.t ?? Date.now() - vm.startedAt;
    const timedOut = exit?.timedOut ?? false;
    await target.sessions().catch(() => undefined);
    const initiators = [...target.seenInitiators];

    const timeline = buildTimeline({
      startedAt: vm.startedAt,
      arch: opts.secureBoot ? `${arch} secure-boot` : arch,
      accel,
      server: server.name,
      durationMs,
      ok: markerLine !== undefined,
      serial: vm.lines,
      serverItems: [...server.items],
      ...(target.firstLoginAt() !== undefined ? { targetFirstLoginAt: target.firstLoginAt() as number } : {}),
      timedOut,
    });
    const servedFiles = timeline.tftp.filter((r) => r.outcome === "ok").map((r) => r.file);
    let keptSerial: string | undefined;
    if (opts.outDir) {
      await mkdir(opts.outDir, { recursive: true });
      const base = join(
        opts.outDir,
        `${timeline.startedAt.replace(/[:.]/g, "-")}-${arch}${opts.secureBoot ? "-sb" : ""}-${flavour}`,
      );
      await writeFile(`${base}.timeline.json`, `${JSON.stringify(timeline, null, 2)}\n`);
      await writeFile(
        `${base}.serial.log`,
        vm.lines.map((l) => `${(l.t / 1000).toFixed(3).padStart(8)} ${l.text}`).join("\n"),
      );
      keptSerial = `${base}.serial.log`;
      await mkdir(dirname(keptSerial), { recursive: true });
    }
    return {
      ok: markerLine !== undefined,
      marker: markerLine?.text.match(MARKER)?.[0],
      durationMs,
      accel,
      timedOut,
      timeline,
      targetSawLogin: initiators.includes(initiatorIqn),
      initiators,
      initiatorIqn,
      servedFiles,
      resources: { ns: net.ns, pids: [...pids] },
      serialLog: keptSerial,
      setupMs: vm.startedAt - setupStartedAt,
    };
  } finally {
    await cleanup();
  }
}
