import { existsSync } from "node:fs";
import { appendFile, copyFile, stat, truncate, writeFile } from "node:fs/promises";
import { arch as hostArch } from "node:os";
import { join } from "node:path";
import type { Logger } from "pino";
import type { LabNetwork } from "./netns.js";
import { killPid, sleep, startDaemon } from "./proc.js";

export type VmArch = "x64" | "aa64";
export type Accel = "kvm" | "tcg";

export interface Firmware {
  code: string;
  /** Template copied per run: the firmware writes its boot variables into it. */
  varsTemplate: string;
  /** pflash size both images must have (AAVMF on `virt` wants 64 MiB). */
  padTo?: number;
}

const OVMF = "/usr/share/OVMF";
const AAVMF = "/usr/share/AAVMF";

export function firmwareFor(arch: VmArch, secureBoot: boolean): Firmware {
  if (arch === "x64") {
    return secureBoot
      ? { code: `${OVMF}/OVMF_CODE_4M.secboot.fd`, varsTemplate: `${OVMF}/OVMF_VARS_4M.ms.fd` }
      : { code: `${OVMF}/OVMF_CODE_4M.fd`, varsTemplate: `${OVMF}/OVMF_VARS_4M.fd` };
  }
  const size = 64 * 1024 * 1024;
  return secureBoot
    ? { code: `${AAVMF}/AAVMF_CODE.ms.fd`, varsTemplate: `${AAVMF}/AAVMF_VARS.ms.fd`, padTo: size }
    : { code: `${AAVMF}/AAVMF_CODE.fd`, varsTemplate: `${AAVMF}/AAVMF_VARS.fd`, padTo: size };
}

export interface VmSpec {
  arch: VmArch;
  secureBoot: boolean;
  accel: Accel;
  /** Per-run pflash images (see prepareFirmware). */
  code: string;
  vars: string;
  tap: string;
  mac: string;
  /**
   * UEFI HTTP boot first: OVMF's PXE over IPv4 and IPv6 turned off with its fw_cfg knobs
   * (OvmfPkg/RUNTIME_CONFIG.md), so the NIC's HTTP boot options are the first that can start.
   */
  httpBoot?: boolean;
  memoryMb?: number;
  cpus?: number;
  /**
   * A machine that boots from its own disk (the appliance image) instead of the network: a virtio disk
   * first in boot order, and the tap NIC without a boot entry.
   */
  disk?: string;
  /** A second NIC on QEMU's user network (the appliance's management port), with host forwards. */
  management?: { mac: string; hostForwards: string[] };
}

/** The QEMU command line; pure, so it can be checked without running anything. */
export function qemuCommand(spec: VmSpec): [string, string[]] {
  const mem = String(spec.memoryMb ?? 1024);
  const cpus = String(spec.cpus ?? 2);
  const common = [
    "-accel",
    spec.accel,
    "-m",
    mem,
    "-smp",
    cpus,
    "-nodefaults",
    "-drive",
    `if=pflash,format=raw,unit=0,readonly=on,file=${spec.code}`,
    "-drive",
    `if=pflash,format=raw,unit=1,file=${spec.vars}`,
    "-netdev",
    `tap,id=n0,ifname=${spec.tap},script=no,downscript=no`,
    // romfile= keeps QEMU's iPXE ROM out: OVMF then uses its own virtio-net driver (shim rejects
    // GRUB loaded through iPXE).
    "-device",
    `virtio-net-pci,netdev=n0,mac=${spec.mac},romfile=${spec.disk ? "" : ",bootindex=1"}`,
    ...(spec.disk
      ? [
          "-drive",
          `if=none,id=d0,format=raw,file=${spec.disk}`,
          "-device",
          "virtio-blk-pci,drive=d0,bootindex=0",
        ]
      : []),
    ...(spec.management
      ? [
          "-netdev",
          ["user,id=m0", ...spec.management.hostForwards.map((f) => `hostfwd=${f}`)].join(","),
          "-device",
          `virtio-net-pci,netdev=m0,mac=${spec.management.mac},romfile=`,
        ]
      : []),
    "-serial",
    "stdio",
    "-display",
    "none",
    "-no-reboot",
    ...(spec.httpBoot
      ? [
          "-fw_cfg",
          "name=opt/org.tianocore/IPv4PXESupport,string=no",
          "-fw_cfg",
          "name=opt/org.tianocore/IPv6PXESupport,string=no",
        ]
      : []),
  ];
  if (spec.arch === "x64") {
    const machine = spec.secureBoot
      ? ["-M", "q35,smm=on", "-global", "driver=cfi.pflash01,property=secure,value=on"]
      : ["-M", "q35"];
    return ["qemu-system-x86_64", [...machine, ...common]];
  }
  const cpu = spec.accel === "kvm" ? "host" : "cortex-a57";
  return ["qemu-system-aarch64", ["-M", "virt", "-cpu", cpu, ...common]];
}

/** Copies the code and VARS images for one run (VARS is written by the firmware), padded where needed. */
export async function prepareFirmware(
  arch: VmArch,
  secureBoot: boolean,
  workDir: string,
): Promise<{ code: string; vars: string }> {
  const fw = firmwareFor(arch, secureBoot);
  for (const f of [fw.code, fw.varsTemplate])
    if (!existsSync(f))
      throw new Error(`firmware missing: ${f} (install ${arch === "x64" ? "ovmf" : "qemu-efi-aarch64"})`);
  const vars = join(workDir, `vars-${arch}.fd`);
  await copyFile(fw.varsTemplate, vars);
  let code = fw.code;
  if (fw.padTo !== undefined) {
    if ((await stat(vars)).size < fw.padTo) await truncate(vars, fw.padTo);
    if ((await stat(code)).size < fw.padTo) {
      code = join(workDir, `code-${arch}.fd`);
      await copyFile(fw.code, code);
      await truncate(code, fw.padTo);
    }
  }
  return { code, vars };
}

let probed: Promise<Accel> | undefined;

/**
 * KVM only where it really runs firmware: some hosts have /dev/kvm but stop OVMF at once with
 * "KVM internal error ... emulation failure". A short OVMF run decides; NETBOOT_LAB_ACCEL overrides.
 */
export function probeAccel(arch: VmArch, workDir: string, logger: Logger): Promise<Accel> {
  const forced = process.env.NETBOOT_LAB_ACCEL;
  if (forced === "kvm" || forced === "tcg") return Promise.resolve(forced);
  const native = (arch === "x64" && hostArch() === "x64") || (arch === "aa64" && hostArch() === "arm64");
  if (!native || !existsSync("/dev/kvm")) return Promise.resolve("tcg");
  probed ??= probeKvm(arch, workDir, logger);
  return probed;
}

async function probeKvm(arch: VmArch, workDir: string, logger: Logger): Promise<Accel> {
  const fw = await prepareFirmware(arch, false, workDir);
  const [cmd, args] = qemuCommand({
    arch,
    secureBoot: false,
    accel: "kvm",
    ...fw,
    tap: "none",
    mac: "52:54:00:00:00:01",
  });
  // No network for the probe: drop the -netdev/-device pairs.
  const noNet: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const next = args[i + 1] ?? "";
    if (
      (args[i] === "-netdev" || args[i] === "-device") &&
      (next.startsWith("tap,") || next.startsWith("virtio-net"))
    )
      i++;
    else noNet.push(args[i] ?? "");
  }
  let output = "";
  const d = startDaemon(cmd, noNet, (line) => {
    output += `${line}\n`;
  });
  const deadline = Date.now() + 8_000;
  let verdict: Accel = "tcg";
  while (Date.now() < deadline) {
    if (/KVM internal error|emulation failure/i.test(output)) break;
    if (/BdsDxe|Shell|>>Start/.test(output)) {
      verdict = "kvm";
      break;
    }
    if (!d.alive()) break;
    await sleep(100);
  }
  await d.stop(500);
  logger.info({ accel: verdict, output: output.slice(0, 300) }, "KVM probe");
  return verdict;
}

export interface SerialLine {
  /** ms since QEMU started */
  t: number;
  text: string;
}

export interface RunningVm {
  readonly pid: number;
  readonly startedAt: number;
  readonly lines: SerialLine[];
  /** Resolves when QEMU has exited (powered off, killed, or the time limit struck). */
  readonly done: Promise<{ code: number | null; signal: NodeJS.Signals | null; timedOut: boolean }>;
  /** Resolves with the first serial line matching, or undefined when QEMU exits first. */
  waitFor(re: RegExp): Promise<SerialLine | undefined>;
  kill(): Promise<void>;
}

export interface LaunchOptions {
  net: LabNetwork;
  spec: VmSpec;
  timeLimitMs: number;
  serialLog: string;
  logger: Logger;
  onSerial?: (line: SerialLine) => void;
}

// OVMF draws with ANSI escapes; keep only the text.
// (built from a string: biome rejects control characters in regex literals)
const ESC = "\u001b";
const ANSI = new RegExp(
  `${ESC}\\[[0-9;=?]*[A-Za-z]|${ESC}[()][AB0-2]|[\\u0000-\\u0008\\u000b-\\u001f\\u007f]`,
  "g",
);

export function cleanSerial(raw: string): string {
  return raw.replace(ANSI, "").trimEnd();
}

export async function launchVm(opts: LaunchOptions): Promise<RunningVm> {
  const [qemu, qargs] = qemuCommand(opts.spec);
  const [cmd, args] = opts.net.exec(qemu, ...qargs);
  await writeFile(opts.serialLog, "");
  const lines: SerialLine[] = [];
  const waiters: { re: RegExp; resolve: (l: SerialLine | undefined) => void }[] = [];
  const startedAt = Date.now();
  let pending = Promise.resolve();
  const d = startDaemon(cmd, args, (raw, at, stream) => {
    const text = cleanSerial(raw);
    if (stream === "stderr") {
      // Our own kill at the end of a boot is not worth a warning.
      if (text)
        opts.logger[/terminating on signal/.test(text) ? "debug" : "warn"]({ qemu: text }, "qemu stderr");
      return;
    }
    if (text === "") return;
    const line = { t: at - startedAt, text };
    lines.push(line);
    pending = pending.then(() =>
      appendFile(opts.serialLog, `${(line.t / 1000).toFixed(3).padStart(8)} ${text}\n`),
    );
    opts.onSerial?.(line);
    for (let i = waiters.length - 1; i >= 0; i--) {
      const w = waiters[i];
      if (w?.re.test(text)) {
        waiters.splice(i, 1);
        w.resolve(line);
      }
    }
  });
  opts.logger.info({ qemuPid: d.pid, cmd: `${qemu} ${qargs.join(" ")}` }, "qemu started");
  let timedOut = false;
  const limit = setTimeout(() => {
    timedOut = true;
    opts.logger.warn({ qemuPid: d.pid, limitMs: opts.timeLimitMs }, "boot time limit reached: killing QEMU");
    killPid(d.pid, "SIGKILL");
  }, opts.timeLimitMs);
  const done = d.exited.then(async (r) => {
    clearTimeout(limit);
    await pending;
    for (const w of waiters.splice(0)) w.resolve(undefined);
    return { ...r, timedOut };
  });
  return {
    pid: d.pid,
    startedAt,
    lines,
    done,
    waitFor(re) {
      const hit = lines.find((l) => re.test(l.text));
      if (hit) return Promise.resolve(hit);
      if (!d.alive()) return Promise.resolve(undefined);
      return new Promise((resolve) => waiters.push({ re, resolve }));
    },
    async kill() {
      await d.stop(1_000);
      await done;
    },
  };
}
