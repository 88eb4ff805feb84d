/**
 * One boot storm: a fresh server process, every machine's script started at once, and what it cost.
 * Shared by the benchmark (bench/storm.ts) and the CI test (test/e2e/storm.test.ts).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { packageRoot } from "../../src/package-root.js";
import { cpuSeconds, peakRss, systemCpuSeconds, threadCpuDelta, threadCpuSeconds } from "./proc.js";
import { minimumPackets, type StormFile } from "./storm-machine.js";
import { FLOOD_ADDRESS, STORM_SERVER_ADDRESS, type StormNet } from "./storm-net.js";
import type { RunningServer } from "./storm-servers.js";

export interface MachineOutcome {
  ok: boolean;
  /** The step that failed, when one did. */
  failedStep?: string;
  totalMs: number;
  steps: Record<string, number>;
}

export interface StormResult {
  /** From the start of the storm until the last machine had its initrd (or gave up). */
  wallS: number;
  failed: number;
  failures: string[];
  /** Server datagrams beyond what a loss-free storm needs (OACKs and DATA sent again). */
  retransmits: number;
  serverCpuS: number;
  /** Of serverCpuS, the kernel's part (stime): system calls and the network stack they run. */
  serverSysS: number;
  /** The server's CPU seconds over the storm by thread name (single-threaded servers: one entry). */
  serverThreadCpuS: Record<string, number>;
  /** Datagrams the kernel dropped at the server's full receive buffers during the storm. */
  receiveDrops: number;
  peakRssBytes: number | undefined;
  machines: MachineOutcome[];
  flood?: FloodResult;
}

export interface FloodResult {
  sent: number;
  answered: number;
  /** What the flood asked for, per second, and what it got. */
  sentPerS: number;
  answeredPerS: number;
}

export function parseMachineLine(line: string): MachineOutcome {
  const [word, second, third, ...rest] = line.trim().split(/\s+/);
  if (word === "fail") {
    const why = rest.join(" ");
    return {
      ok: false,
      failedStep: `${second ?? "?"}${why ? ` (${why})` : ""}`,
      totalMs: Number(third),
      steps: {},
    };
  }
  if (word !== "ok")
    return { ok: false, failedStep: `no report (${line.trim().slice(0, 80)})`, totalMs: 0, steps: {} };
  const steps: Record<string, number> = {};
  for (const kv of [third, ...rest]) {
    const [k, v] = (kv ?? "").split("=");
    if (k && v) steps[k] = Number(v);
  }
  return { ok: true, totalMs: Number(second), steps };
}

/** Runs one machine's script in its namespace; resolves with what it reported. */
export function runMachine(
  net: StormNet,
  index: number,
  opts: Pick<StormOptions, "script" | "sequence" | "outDir" | "machineTimeoutMs">,
) {
  const m = net.machines[index] as { ns: string; mac: string };
  const own = opts.sequence(m.mac).find((f) => f.path.includes("<MAC>"))?.size ?? 0;
  const { script, outDir, machineTimeoutMs: timeoutMs } = opts;
  const [cmd, args] = net.exec(m.ns, "sh", script);
  return new Promise<MachineOutcome>((resolve) => {
    const child = spawn(cmd, args, {
      stdio: ["ignore", "pipe", "ignore"],
      env: {
        PATH: process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin",
        MAC: m.mac,
        OWN_SIZE: String(own),
        OUT: join(outDir, String(index)),
      },
    });
    let out = "";
    child.stdout?.on("data", (d: Buffer) => {
      out += d.toString();
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.once("close", () => {
      clearTimeout(timer);
      resolve(parseMachineLine(out.split("\n").filter(Boolean).pop() ?? "timeout"));
    });
  });
}

/** bench/lib/dhcp-flood.ts in `floodNs`: relayed DISCOVERs from `clients` MACs at `rate` per second. */
export function startFlood(net: StormNet, floodNs: string, rate: number, clients: number) {
  const flooder = join(packageRoot(), "dist/bench/lib/dhcp-flood.js");
  const [cmd, args] = net.exec(
    floodNs,
    process.execPath,
    flooder,
    STORM_SERVER_ADDRESS,
    FLOOD_ADDRESS,
    String(rate),
    String(clients),
  );
  const child: ChildProcess = spawn(cmd, args, { stdio: ["ignore", "pipe", "inherit"] });
  let out = "";
  child.stdout?.on("data", (d: Buffer) => {
    out += d.toString();
  });
  const closed = new Promise<void>((resolve) => child.once("close", () => resolve()));
  return {
    stop: async (): Promise<FloodResult> => {
      child.kill("SIGTERM");
      await closed;
      const m = /sent (\d+) received (\d+) seconds ([\d.]+)/.exec(out);
      if (!m) throw new Error(`the DHCP flood reported nothing: ${out}`);
      const [sent, answered, seconds] = [Number(m[1]), Number(m[2]), Number(m[3])];
      return { sent, answered, sentPerS: sent / seconds, answeredPerS: answered / seconds };
    },
  };
}

export interface StormOptions {
  net: StormNet;
  script: string;
  /** Each machine's files, for the loss-free packet count. */
  sequence: (mac: string) => StormFile[];
  start: () => Promise<RunningServer>;
  outDir: string;
  machineTimeoutMs: number;
  flood?: { ns: string; rate: number; clients: number };
  /** Runs after the storm, while the server still runs (a test reading the server's API). */
  beforeStop?: (() => Promise<void>) | undefined;
}

export async function runStorm(opts: StormOptions): Promise<StormResult> {
  const { net } = opts;
  net.flushMachineAddresses();
  rmSync(opts.outDir, { recursive: true, force: true });
  const server = await opts.start();
  try {
    const flood = opts.flood
      ? startFlood(net, opts.flood.ns, opts.flood.rate, opts.flood.clients)
      : undefined;
    if (flood) await new Promise((r) => setTimeout(r, 1000)); // the flood is on before the rack powers up
    net.resetCounters();
    const drops0 = net.serverReceiveBufferDrops();
    const cpu0 = cpuSeconds(server.pid);
    const sys0 = systemCpuSeconds(server.pid);
    const threads0 = threadCpuSeconds(server.pid);
    const t0 = process.hrtime.bigint();
    const machines = await Promise.all(net.machines.map((_, i) => runMachine(net, i, opts)));
    const wallS = Number(process.hrtime.bigint() - t0) / 1e9;
    const serverCpuS = cpuSeconds(server.pid) - cpu0;
    const serverSysS = systemCpuSeconds(server.pid) - sys0;
    const serverThreadCpuS = threadCpuDelta(threads0, threadCpuSeconds(server.pid));
    const sent = net.serverSent();
    const receiveDrops = net.serverReceiveBufferDrops() - drops0;
    const floodResult = await flood?.stop();
    await opts.beforeStop?.();
    const expected = net.machines.reduce((n, m) => n + minimumPackets(opts.sequence(m.mac)), 0);
    const failures = machines.flatMap((m, i) => (m.ok ? [] : [`${net.machines[i]?.mac}: ${m.failedStep}`]));
    return {
      wallS,
      failed: failures.length,
      failures,
      retransmits: Math.max(0, sent.other - expected),
      serverCpuS,
      serverSysS,
      serverThreadCpuS,
      receiveDrops,
      peakRssBytes: peakRss(server.pid),
      machines,
      ...(floodResult ? { flood: floodResult } : {}),
    };
  } finally {
    await server.stop();
    rmSync(opts.outDir, { recursive: true, force: true });
  }
}
