/**
 * TFTP benchmark: this server against tftpd-hpa and dnsmasq's TFTP, same files, same client (atftp),
 * over loopback (client inside the server's namespace) and over a veth pair between two namespaces.
 *   - single stream: blksize 512, 1428, 8192; windowsize 1, 4, 16 for us (the peers do not implement
 *     windowsize, so they run lockstep and are compared against at equal blksize);
 *   - 50 concurrent clients fetching one 64 MiB file.
 * Reports throughput, ratios to each peer, peak RSS and CPU time of each server, to bench/results/tftp.{md,json}.
 *
 *   npm run bench:tftp   (= npm run build && node dist/bench/tftp.js)
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { createNsPair, type NsPair } from "./lib/netns.js";
import { cpuSeconds, monitorTree, peakRss, processTree } from "./lib/proc.js";
import { markdownTable, median, mib, ratio } from "./lib/report.js";

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = join(here, "..", "..");
const resultsDir = join(repoRoot, "bench", "results");

// 32 MiB: with 8 MiB, starting atftp (about 15 ms) was a third of a fast windowed run and flattened the ratios.
const SINGLE_BYTES = 32 * 1024 * 1024;
const CONC_BYTES = 64 * 1024 * 1024;
const CONC_CLIENTS = 50;
const BLKSIZES = [512, 1428, 8192];
const WINDOWS = [1, 4, 16];
const REPEATS = 5;
const CONC_PATH = "veth";

/** ours-dgram: this server with node:dgram transfer sockets instead of the native channel (lockstep only). */
type ServerName = "ours" | "ours-dgram" | "tftpd-hpa" | "dnsmasq";
interface RunningServer {
  name: ServerName;
  proc: ChildProcess;
  pid: number;
  port: number;
  windowsizes: number[];
}
interface PathDef {
  name: "loopback" | "veth";
  clientNs: string;
  host: string;
}
interface SingleResult {
  path: string;
  server: ServerName;
  blksize: number;
  windowsize: number;
  /** Median of the repeats (they run interleaved with the other servers' so that drift hits all alike). */
  seconds: number;
  mbps: number;
  bestMbps: number;
  cpuSeconds: number;
  /** Ours only: blocks sent again over all repeats. */
  retransmits?: number;
}
interface ConcurrentResult {
  path: string;
  server: ServerName;
  clients: number;
  failed: number;
  seconds: number;
  aggregateMbps: number;
  cpuSeconds: number;
  peakTreeRss: number;
  retransmits?: number;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

const clients = new Set<ChildProcess>();
/** Totals from our server's transfer log lines. */
const ourLog = { retransmits: 0, notOk: 0, byServerAndWindow: new Map<string, number>() };

function atftp(
  ns: string,
  host: string,
  port: number,
  file: string,
  blksize: number,
  windowsize: number,
): Promise<number> {
  const args = [
    "netns",
    "exec",
    ns,
    "atftp",
    "--get",
    "-r",
    file,
    "-l",
    "/dev/null",
    "--option",
    `blksize ${blksize}`,
  ];
  if (windowsize > 1) args.push("--option", `windowsize ${windowsize}`);
  args.push(host, String(port));
  return new Promise((resolve) => {
    const p = spawn("ip", args, { stdio: "ignore" });
    clients.add(p);
    const timer = setTimeout(() => p.kill("SIGKILL"), 120_000);
    p.on("exit", (code) => {
      clients.delete(p);
      clearTimeout(timer);
      resolve(code ?? -1);
    });
  });
}

async function startOurs(
  ns: string,
  root: string,
  name: "ours" | "ours-dgram",
  port: number,
): Promise<RunningServer> {
  const transport = name === "ours" ? "native" : "dgram";
  const ours = spawn(
    "ip",
    [
      "netns",
      "exec",
      ns,
      process.execPath,
      join(here, "lib", "tftp-serve.js"),
      root,
      "0.0.0.0",
      String(port),
      "65464",
      "64",
      transport,
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  // Its transfer log lines tell how many blocks were sent again: a window too big for a path shows there.
  let pending = "";
  ours.stderr?.on("data", (d: Buffer) => {
    pending += d.toString();
    const lines = pending.split("\n");
    pending = lines.pop() ?? "";
    for (const line of lines)
      try {
        const rec = JSON.parse(line) as {
          msg?: string;
          retransmits?: number;
          outcome?: string;
          windowsize?: number;
        };
        if (rec.msg !== "tftp transfer") continue;
        ourLog.retransmits += rec.retransmits ?? 0;
        const key = `${name}|${rec.windowsize}`;
        ourLog.byServerAndWindow.set(key, (ourLog.byServerAndWindow.get(key) ?? 0) + (rec.retransmits ?? 0));
        if (rec.outcome !== "ok") ourLog.notOk++;
      } catch {
        // not JSON
      }
  });
  await new Promise<void>((resolve, reject) => {
    ours.stdout?.on("data", (d: Buffer) => d.toString().includes("ready") && resolve());
    ours.on("exit", (c) => reject(new Error(`our server exited ${c}`)));
  });
  const windowsizes = name === "ours" ? WINDOWS : [1];
  return { name, proc: ours, pid: ours.pid as number, port, windowsizes };
}

async function startServers(ns: string, root: string): Promise<RunningServer[]> {
  const servers: RunningServer[] = [];
  servers.push(await startOurs(ns, root, "ours", 6969));
  servers.push(await startOurs(ns, root, "ours-dgram", 6970));
  // tftpd-hpa 5.2: -L stays in the foreground and forks one child per transfer.
  const hpa = spawn(
    "ip",
    ["netns", "exec", ns, "in.tftpd", "-L", "-s", root, "-a", "0.0.0.0:7069", "-u", "nobody"],
    { stdio: "ignore" },
  );
  servers.push({ name: "tftpd-hpa", proc: hpa, pid: hpa.pid as number, port: 7069, windowsizes: [1] });
  // dnsmasq: TFTP only (DNS off with --port=0); its TFTP port is fixed at 69, free in our namespace.
  const dns = spawn(
    "ip",
    [
      "netns",
      "exec",
      ns,
      "dnsmasq",
      "-k",
      "--conf-file=/dev/null",
      "--port=0",
      "--enable-tftp",
      `--tftp-root=${root}`,
      "--tftp-max=1000",
      "--pid-file=",
      "--user=nobody",
      "--quiet-tftp",
      "--log-facility=-",
    ],
    { stdio: "ignore" },
  );
  servers.push({ name: "dnsmasq", proc: dns, pid: dns.pid as number, port: 69, windowsizes: [1] });
  await sleep(500);
  for (const s of servers)
    if (s.proc.exitCode !== null) throw new Error(`${s.name} exited with ${s.proc.exitCode}`);
  return servers;
}

async function stopServer(s: RunningServer): Promise<void> {
  if (s.proc.exitCode !== null) return;
  s.proc.kill("SIGTERM");
  for (let i = 0; i < 50 && s.proc.exitCode === null; i++) await sleep(100);
  if (s.proc.exitCode === null) s.proc.kill("SIGKILL");
}

/** One fetch; returns seconds and the server's CPU seconds. */
async function fetchOnce(
  path: PathDef,
  s: RunningServer,
  blksize: number,
  windowsize: number,
): Promise<{ secs: number; cpu: number }> {
  const mon = monitorTree(s.pid);
  const t0 = process.hrtime.bigint();
  const code = await atftp(path.clientNs, path.host, s.port, "single.bin", blksize, windowsize);
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = mon.stop().cpuSeconds;
  if (code !== 0)
    throw new Error(`${s.name} ${path.name} blksize ${blksize} windowsize ${windowsize}: atftp exit ${code}`);
  return { secs, cpu };
}

/**
 * Every (server, windowsize) at one blksize, REPEATS rounds, each round running every server once:
 * the machine's speed drifts over minutes here, and interleaving spreads that drift over all servers.
 */
async function singleStreams(
  path: PathDef,
  servers: RunningServer[],
  blksize: number,
): Promise<SingleResult[]> {
  const configs = servers.flatMap((s) =>
    s.windowsizes.map((ws) => ({ s, ws, times: [] as number[], cpu: 0 })),
  );
  const rtx0 = new Map(ourLog.byServerAndWindow);
  for (let i = 0; i < REPEATS; i++)
    for (const c of configs) {
      const { secs, cpu } = await fetchOnce(path, c.s, blksize, c.ws);
      c.times.push(secs);
      c.cpu += cpu;
    }
  // Log lines arrive on a pipe: give the last ones a moment.
  await sleep(200);
  return configs.map((c) => {
    const secs = median(c.times);
    const key = `${c.s.name}|${c.ws}`;
    const rtx = (ourLog.byServerAndWindow.get(key) ?? 0) - (rtx0.get(key) ?? 0);
    return {
      path: path.name,
      server: c.s.name,
      blksize,
      windowsize: c.ws,
      seconds: secs,
      mbps: SINGLE_BYTES / 1e6 / secs,
      bestMbps: SINGLE_BYTES / 1e6 / Math.min(...c.times),
      cpuSeconds: c.cpu / REPEATS,
      ...(c.s.name.startsWith("ours") ? { retransmits: rtx } : {}),
    };
  });
}

async function concurrent(path: PathDef, s: RunningServer): Promise<ConcurrentResult> {
  const mon = monitorTree(s.pid, 100);
  const rtx0 = ourLog.retransmits;
  const t0 = process.hrtime.bigint();
  const codes = await Promise.all(
    Array.from({ length: CONC_CLIENTS }, () => atftp(path.clientNs, path.host, s.port, "conc.bin", 1428, 4)),
  );
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  const { peakRss: peak, cpuSeconds: cpu } = mon.stop();
  const failed = codes.filter((c) => c !== 0).length;
  return {
    path: path.name,
    server: s.name,
    clients: CONC_CLIENTS,
    failed,
    seconds: secs,
    aggregateMbps: ((CONC_CLIENTS - failed) * CONC_BYTES) / 1e6 / secs,
    cpuSeconds: cpu,
    peakTreeRss: peak,
    ...(s.name === "ours" ? { retransmits: ourLog.retransmits - rtx0 } : {}),
  };
}

function writeRandom(path: string, size: number): void {
  const chunk = 4 * 1024 * 1024;
  const parts: Buffer[] = [];
  for (let left = size; left > 0; left -= chunk) parts.push(randomBytes(Math.min(chunk, left)));
  writeFileSync(path, Buffer.concat(parts));
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error("the TFTP benchmark needs root (network namespaces)");
  for (const cmd of ["ip", "atftp", "in.tftpd", "dnsmasq"])
    execFileSync("sh", ["-c", `command -v ${cmd}`], { stdio: "ignore" });
  const started = Date.now();
  const root = mkdtempSync(join(tmpdir(), "nbtf-bench-"));
  chmodSync(root, 0o755); // tftpd-hpa and dnsmasq read as nobody
  let pair: NsPair | undefined;
  let servers: RunningServer[] = [];
  const cleanup = () => {
    for (const c of clients) c.kill("SIGKILL");
    // tftpd-hpa's per-transfer children outlive a killed parent: kill the whole tree, by PID.
    for (const s of servers)
      if (s.proc.exitCode === null)
        for (const p of processTree(s.pid).reverse())
          try {
            process.kill(p, "SIGKILL");
          } catch {
            // gone
          }
    pair?.destroy();
    rmSync(root, { recursive: true, force: true });
  };
  process.on("SIGINT", () => {
    cleanup();
    process.exit(130);
  });
  try {
    writeRandom(join(root, "single.bin"), SINGLE_BYTES);
    writeRandom(join(root, "conc.bin"), CONC_BYTES);
    pair = createNsPair("nbtf", "10.205.4");
    servers = await startServers(pair.serverNs, root);
    const paths: PathDef[] = [
      { name: "loopback", clientNs: pair.serverNs, host: "127.0.0.1" },
      { name: "veth", clientNs: pair.clientNs, host: pair.serverAddress },
    ];
    const single: SingleResult[] = [];
    const conc: ConcurrentResult[] = [];
    for (const path of paths) {
      for (const blksize of BLKSIZES)
        for (const r of await singleStreams(path, servers, blksize)) {
          single.push(r);
          console.log(
            `${path.name} ${r.server} blksize ${r.blksize} ws ${r.windowsize}: ${r.mbps.toFixed(1)} MB/s (best ${r.bestMbps.toFixed(1)})`,
          );
        }
      // Concurrent clients over the veth only: three servers x 3.2 GB on both paths would not fit in 10 minutes.
      if (path.name !== CONC_PATH) continue;
      for (const s of servers) {
        if (s.name === "ours-dgram") continue;
        const r = await concurrent(path, s);
        conc.push(r);
        console.log(
          `${path.name} ${s.name} ${CONC_CLIENTS}x64MiB: ${r.aggregateMbps.toFixed(1)} MB/s, ${r.failed} failed, peak RSS ${mib(r.peakTreeRss)} MiB`,
        );
      }
    }
    const peaks = Object.fromEntries(servers.map((s) => [s.name, peakRss(s.pid)]));
    // Main-process CPU only (tftpd-hpa's children are in the per-row figures).
    const cpuTotal = Object.fromEntries(servers.map((s) => [s.name, cpuSeconds(s.pid)]));
    for (const s of servers) await stopServer(s);
    const report = buildReport(single, conc, peaks, cpuTotal, (Date.now() - started) / 1000);
    mkdirSync(resultsDir, { recursive: true });
    writeFileSync(join(resultsDir, "tftp.md"), report.md);
    writeFileSync(join(resultsDir, "tftp.json"), `${JSON.stringify(report.json, null, 2)}\n`);
    console.log(report.md);
  } finally {
    cleanup();
  }
}

function buildReport(
  single: SingleResult[],
  conc: ConcurrentResult[],
  peaks: Record<string, number | undefined>,
  cpuTotal: Record<string, number>,
  elapsed: number,
) {
  const find = (path: string, server: ServerName, blksize: number, ws: number) =>
    single.find(
      (r) => r.path === path && r.server === server && r.blksize === blksize && r.windowsize === ws,
    );
  const rows: (string | number)[][] = [];
  for (const r of single.filter((x) => x.server === "ours")) {
    const hpa = find(r.path, "tftpd-hpa", r.blksize, 1);
    const dns = find(r.path, "dnsmasq", r.blksize, 1);
    const viaDgram = find(r.path, "ours-dgram", r.blksize, r.windowsize);
    rows.push([
      r.path,
      r.blksize,
      r.windowsize,
      r.mbps.toFixed(1),
      hpa ? hpa.mbps.toFixed(1) : "n/a",
      dns ? dns.mbps.toFixed(1) : "n/a",
      ratio(r.mbps, hpa?.mbps),
      ratio(r.mbps, dns?.mbps),
      viaDgram ? `${viaDgram.mbps.toFixed(1)} (${ratio(viaDgram.mbps, hpa?.mbps)})` : "",
      r.cpuSeconds.toFixed(2),
      hpa ? hpa.cpuSeconds.toFixed(2) : "n/a",
      dns ? dns.cpuSeconds.toFixed(2) : "n/a",
      r.retransmits ?? 0,
    ]);
  }
  const concRows = conc.map((c) => {
    const ours = conc.find((x) => x.path === c.path && x.server === "ours");
    return [
      c.path,
      c.server,
      `${c.clients - c.failed}/${c.clients}`,
      c.seconds.toFixed(1),
      c.aggregateMbps.toFixed(1),
      c.server === "ours" ? "1.00x" : ratio(ours?.aggregateMbps, c.aggregateMbps),
      mib(c.peakTreeRss),
      c.cpuSeconds.toFixed(2),
      c.retransmits ?? "",
    ];
  });
  const md = [
    "# TFTP benchmark",
    "",
    `Run ${new Date().toISOString()} on ${cpus().length} CPU(s) (${cpus()[0]?.model ?? "?"}), ${elapsed.toFixed(0)} s.`,
    "Client: atftp, output to /dev/null. Servers: this one (`bench/lib/tftp-serve.ts`, max blksize 65464, max windowsize 64,",
    "window capped at 64 KiB) with its native transfer channel (`native/nbdh_udp.c`, lockstep pump), the same server with",
    "node:dgram transfer sockets (ours-dgram, lockstep rows only), tftpd-hpa (`in.tftpd -L`), dnsmasq (TFTP only). All run",
    "in one network namespace; loopback = client in the same namespace, veth = client in a second namespace over a veth",
    "pair (MTU 1500). tftpd-hpa 5.2 and dnsmasq do not implement windowsize (RFC 7440): they are measured lockstep and every",
    "one of our rows is compared with their lockstep run at the same blksize.",
    `Single stream: ${SINGLE_BYTES / 1048576} MiB file, median of ${REPEATS} runs; the runs of all servers at one blksize are interleaved`,
    "(round after round), so that the machine's drift over minutes hits every server alike. Best runs are in the JSON.",
    "CPU = server CPU seconds per transfer (tftpd-hpa: its forked children included, sampled every 50 ms).",
    "",
    "## Single stream (MB/s)",
    "",
    markdownTable(
      [
        "path",
        "blksize",
        "windowsize (ours)",
        "ours",
        "tftpd-hpa",
        "dnsmasq",
        "vs tftpd-hpa",
        "vs dnsmasq",
        "ours-dgram (vs tftpd-hpa)",
        "CPU s ours",
        "CPU s hpa",
        "CPU s dnsmasq",
        "our retransmits",
      ],
      rows,
    ),
    "",
    `## ${CONC_CLIENTS} concurrent clients, one ${CONC_BYTES / 1048576} MiB file, over the ${CONC_PATH} (blksize 1428, windowsize 4 where supported)`,
    "",
    "Peak RSS is the largest sum of VmRSS over the server's process tree seen while the clients ran (sampled every 100 ms).",
    "",
    markdownTable(
      [
        "path",
        "server",
        "ok",
        "seconds",
        "aggregate MB/s",
        "ours vs this",
        "peak RSS MiB",
        "CPU s",
        "our retransmits",
      ],
      concRows,
    ),
    "",
    "## Whole run, per server",
    "",
    markdownTable(
      ["server", "VmHWM MiB (main process)", "CPU s total (main process)"],
      Object.keys(cpuTotal).map((k) => [k, mib(peaks[k]), (cpuTotal[k] ?? 0).toFixed(1)]),
    ),
    "",
  ].join("\n");
  return {
    md,
    json: {
      date: new Date().toISOString(),
      elapsedSeconds: elapsed,
      cpus: cpus().length,
      single,
      concurrent: conc,
      peakRss: peaks,
      cpuTotal,
    },
  };
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
