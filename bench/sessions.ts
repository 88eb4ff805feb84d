/**
 * What recording boot sessions costs:
 *   - memory: 10,000 machines each with one whole boot as the lab's x64 row records it (DHCP, shim and its
 *     three revocation probes, GRUB and its four module-list probes, both configs, kernel, initrd, the OS's
 *     DHCP: 17 steps), heap measured after a full GC, and the size of the persisted file;
 *   - the hot path: the 20-machine boot storm (udhcpc + atftp in namespaces, the real kernel and initrd in
 *     lockstep) through `netboot serve` with `sessions.record` on and off, runs interleaved: wall time and
 *     server CPU seconds, medians.
 * Writes bench/results/sessions.{md,json}.   npm run bench:sessions   (root; NETBOOT_SESSIONS_REPEATS, 3)
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { MachineRegistry } from "../src/machines/registry.js";
import { MachineState } from "../src/machines/state.js";
import { packageRoot } from "../src/package-root.js";
import { markdownTable, median, ratio } from "./lib/report.js";
import { writeMachineScript } from "./lib/storm-machine.js";
import { createStormNet, STORM_SERVER_ADDRESS } from "./lib/storm-net.js";
import { runStorm } from "./lib/storm-run.js";
import { applianceConfig, dnsmasqRoot, serverSequence, startAppliance } from "./lib/storm-servers.js";

const MACHINES = 10_000;
const REPEATS = Number(process.env.NETBOOT_SESSIONS_REPEATS ?? 3);
const STORM = 20;
const LAB = process.env.NETBOOT_LAB_CACHE ?? "/var/cache/netboot-lab";

const mac = (i: number) =>
  `52:54:01:${((i >> 16) & 0xff).toString(16).padStart(2, "0")}:${((i >> 8) & 0xff).toString(16).padStart(2, "0")}:${(i & 0xff).toString(16).padStart(2, "0")}`;

async function memory(): Promise<{ heapBytes: number; fileBytes: number; sessions: number }> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error("run with node --expose-gc");
  const dir = mkdtempSync(join(tmpdir(), "nbsess-"));
  const files = [
    ["x64/shimx64.efi", "shim", 1_048_504],
    ["x64/revocations_sku.efi", "other", 0],
    ["x64/revocations_sbat.efi", "other", 0],
    ["x64/shim_certificate_0.efi", "other", 0],
    ["x64/grubx64.efi", "grub", 3_843_520],
    ["grub/x86_64-efi/command.lst", "other", 0],
    ["grub/x86_64-efi/fs.lst", "other", 0],
    ["grub/x86_64-efi/crypto.lst", "other", 0],
    ["grub/x86_64-efi/terminal.lst", "other", 0],
    ["grub/grub.cfg", "grub-master", 617],
    ["grub/<MAC>.conf", "grub-config", 719],
    ["images/lab/kernel", "kernel", 8_222_656],
    ["images/lab/initrd", "initrd", 28_027_950],
  ] as const;
  gc();
  const before = process.memoryUsage().heapUsed;
  const state = new MachineState({
    registry: new MachineRegistry({ role: "off" }),
    nameOf: (m) => `machine-${m.replaceAll(":", "")}`,
    roleOf: (p) =>
      files.find(([name]) => name === p || (name.includes("<MAC>") && p.endsWith(".conf")))?.[1] ?? "other",
    stateDir: dir,
    limits: { perMachine: 10, total: MACHINES, stallAfterMs: 120_000 },
    logger: pino({ level: "silent" }),
  });
  for (let i = 0; i < MACHINES; i++) {
    const m = mac(i);
    const ip = `10.${(i >> 16) & 0xff}.${(i >> 8) & 0xff}.${i & 0xff}`;
    const t = 1_800_000_000_000 + i * 10;
    const dhcp = (at: number, message: string, outcome: string, client: "firmware" | "os") =>
      state.record({
        kind: "dhcp",
        at,
        mac: m,
        message,
        outcome,
        client,
        ip,
        archCode: 7,
        file: "x64/shimx64.efi",
      });
    dhcp(t, "discover", "offer", "firmware");
    dhcp(t + 3700, "request", "ack", "firmware");
    files.forEach(([name, , bytes], k) => {
      state.record({
        kind: "file",
        at: t + 3800 + k * 100,
        protocol: "tftp",
        client: ip,
        file: name.replace("<MAC>", m),
        bytes,
        ms: 90,
        outcome: bytes > 0 ? "ok" : "not-found",
        blksize: 1024,
        windowsize: 1,
        retransmits: 0,
      });
    });
    dhcp(t + 20_000, "discover", "offer", "os");
    dhcp(t + 20_100, "request", "ack", "os");
  }
  gc();
  const heapBytes = process.memoryUsage().heapUsed - before;
  await state.persist();
  const { statSync } = await import("node:fs");
  const fileBytes = statSync(join(dir, "boot-sessions.json")).size;
  const sessions = state.sessions.size;
  rmSync(dir, { recursive: true, force: true });
  return { heapBytes, fileBytes, sessions };
}

async function storms(): Promise<{ record: boolean; wallS: number; cpuS: number; failed: number }[]> {
  const inputs = {
    shim: join(LAB, "loaders/x64/shimx64.efi"),
    grub: join(LAB, "loaders/x64/grubx64.efi"),
    kernel: join(LAB, "images/debian12-x64-initramfs/vmlinuz"),
    initrd: join(LAB, "images/debian12-x64-initramfs/initrd.img"),
  };
  const dir = mkdtempSync(join(tmpdir(), "nbsess-storm-"));
  const net = createStormNet("nbss", STORM);
  const out: { record: boolean; wallS: number; cpuS: number; failed: number }[] = [];
  try {
    const configs = {
      on: applianceConfig(join(dir, "on"), inputs, net, { sessions: { record: true } }),
      off: applianceConfig(join(dir, "off"), inputs, net, { sessions: { record: false } }),
    };
    const root = await dnsmasqRoot(dir, configs.on, inputs, net);
    const script = writeMachineScript(
      dir,
      STORM_SERVER_ADDRESS,
      serverSequence(root, net.machines[0]?.mac as string),
    );
    for (let i = 0; i < REPEATS; i++) {
      for (const record of [true, false]) {
        const r = await runStorm({
          net,
          script,
          sequence: (m) => serverSequence(root, m),
          outDir: join(dir, "out"),
          machineTimeoutMs: 240_000,
          start: () =>
            startAppliance(net, record ? configs.on : configs.off, join(dir, `appliance-${i}.log`)),
        });
        out.push({ record, wallS: r.wallS, cpuS: r.serverCpuS, failed: r.failed });
        console.log(
          `round ${i + 1}/${REPEATS} record=${record}: ${r.wallS.toFixed(1)} s, CPU ${r.serverCpuS.toFixed(2)} s, failed ${r.failed}`,
        );
      }
    }
  } finally {
    net.destroy();
    rmSync(dir, { recursive: true, force: true });
  }
  return out;
}

const mem = await memory();
console.log(
  `memory: ${mem.sessions} sessions, heap ${(mem.heapBytes / 1e6).toFixed(1)} MB, file ${(mem.fileBytes / 1e6).toFixed(1)} MB`,
);
const runs = process.env.NETBOOT_SESSIONS_STORM === "0" ? [] : await storms();
const side = (record: boolean) => runs.filter((r) => r.record === record);
const on = { wall: median(side(true).map((r) => r.wallS)), cpu: median(side(true).map((r) => r.cpuS)) };
const off = { wall: median(side(false).map((r) => r.wallS)), cpu: median(side(false).map((r) => r.cpuS)) };
const md = [
  `# bench:sessions (${new Date().toISOString().slice(0, 10)})`,
  "",
  `Memory: ${mem.sessions} machines, one 17-step boot session each: ${(mem.heapBytes / 1e6).toFixed(1)} MB of heap after GC; persisted as ${(mem.fileBytes / 1e6).toFixed(1)} MB of JSON.`,
  "",
  `Hot path: ${STORM}-machine boot storm through netboot serve, sessions.record on and off, ${REPEATS} interleaved rounds (medians):`,
  "",
  markdownTable(
    ["sessions.record", "storm wall (s)", "server CPU (s)", "failed", "runs wall (s)", "runs CPU (s)"],
    [true, false].map((record) => [
      record ? "on" : "off",
      (record ? on : off).wall.toFixed(1),
      (record ? on : off).cpu.toFixed(2),
      side(record).reduce((n, r) => n + r.failed, 0),
      side(record)
        .map((r) => r.wallS.toFixed(1))
        .join(", "),
      side(record)
        .map((r) => r.cpuS.toFixed(2))
        .join(", "),
    ]),
  ),
  "",
  `on/off: wall ${ratio(on.wall, off.wall)}, CPU ${ratio(on.cpu, off.cpu)}`,
  "",
].join("\n");
const outDir = join(packageRoot(), "bench", "results");
mkdirSync(outDir, { recursive: true });
writeFileSync(join(outDir, "sessions.md"), md);
writeFileSync(join(outDir, "sessions.json"), `${JSON.stringify({ memory: mem, runs }, null, 2)}\n`);
console.log(md);
