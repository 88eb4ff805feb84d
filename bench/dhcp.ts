/**
 * DHCP benchmark: perfdhcp (kea-admin) against this server, dnsmasq and kea-dhcp4 (memfile, persist),
 * and, on one PostgreSQL server started for the run, this server alone and as a load-balancing pair
 * beside kea-dhcp4's PostgreSQL backend. Each in its own namespaces, same /16 subnet and pool.
 * For each server: the highest DORA rate with no drops (a rate sweep, then one bisection step),
 * the latency at that rate, the server's peak RSS. Writes bench/results/dhcp.{md,json}.
 *
 *   npm run bench:dhcp        (= npm run build && node dist/bench/dhcp.js)
 *   node dist/bench/dhcp.js --serve CONFIG.json   (internal: runs this server in the namespace)
 */
import { type ChildProcess, execFileSync, spawn, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { postgresBinDir, TestPostgres } from "../test/support/postgres.js";

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = join(here, "..", "..");

/**
 * One perfdhcp namespace per server under test, with one server namespace (a veth pair) or, for an HA
 * pair, two (veths onto a bridge in the perfdhcp namespace). Every lane has the same addresses.
 */
interface Lane {
  srvNs: string[];
  cliNs: string;
  srvIf: string[];
  cliIf: string;
}
function makeLane(i: number, servers: number): Lane {
  const srv = Array.from({ length: servers }, (_, k) => k);
  return {
    srvNs: srv.map((k) => `nbdh-bs${i}${"ab"[k]}`),
    cliNs: `nbdh-bc${i}`,
    srvIf: srv.map((k) => `nbdh-b${i}${"ab"[k]}`),
    cliIf: servers === 1 ? `nbdh-b${i}c` : `nbdh-b${i}br`,
  };
}
let lanes: Lane[] = [];
/** The servers' addresses on every lane: the first server's is the next-server and router. */
const SERVER_ADDRESSES = ["10.90.0.1", "10.90.0.3"];
const SUBNET = "10.90.0.0/16";
const POOL = { start: "10.90.1.0", end: "10.90.200.255" };
const CLIENTS = 40_000;
const PERIOD_S = 4;
const RATES = [100, 250, 500, 1000, 1500, 2000, 3000, 4000, 6000, 8000, 12000];

async function serveMode(configPath: string): Promise<void> {
  const { pino } = await import("pino");
  const { dhcpConfigSchema } = await import("../src/dhcp/config.js");
  const { DhcpServer } = await import("../src/dhcp/server.js");
  const { makeBootPolicy } = await import("../src/dhcp/boot-policy.js");
  const { SharedState } = await import("../src/state/shared.js");
  const spec = JSON.parse(readFileSync(configPath, "utf8"));
  const logger = pino({ level: "warn" });
  const shared = spec.state ? SharedState.fromSections(spec.state, spec.ha, logger) : undefined;
  await shared?.start();
  const server = new DhcpServer({
    config: dhcpConfigSchema.parse(spec.dhcp),
    stateDir: spec.stateDir,
    logger,
    ...shared?.dhcpOptions(),
    bootPolicy: makeBootPolicy({
      loaders: { x64: { shim: "x64/shimx64.efi" }, aa64: { shim: "aa64/shimaa64.efi" } },
      nextServer: "10.90.0.1",
    }),
  });
  await server.start();
  process.stdout.write(`${JSON.stringify({ event: "ready" })}\n`);
  process.on("SIGTERM", () => {
    void server.stop().then(async () => {
      await shared?.stop();
      process.stdout.write(`${JSON.stringify({ event: "stopped", journal: server.journalStats() })}\n`);
      process.exit(0);
    });
  });
  process.on("SIGUSR2", () => {
    process.stdout.write(
      `${JSON.stringify({ event: "stats", journal: server.journalStats(), counters: server.counters() })}\n`,
    );
  });
}

function sh(cmd: string, args: string[], allowFail = false): string {
  try {
    return execFileSync(cmd, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  } catch (err) {
    if (allowFail) return "";
    throw new Error(`${cmd} ${args.join(" ")}: ${(err as { stderr?: string }).stderr ?? err}`);
  }
}

function setupNetwork(): void {
  teardownNetwork();
  for (const l of lanes) {
    for (const ns of [...l.srvNs, l.cliNs]) {
      sh("ip", ["netns", "add", ns]);
      sh("ip", ["-n", ns, "link", "set", "lo", "up"]);
    }
    const pair = l.srvNs.length > 1;
    if (pair) sh("ip", ["-n", l.cliNs, "link", "add", l.cliIf, "type", "bridge"]);
    l.srvNs.forEach((ns, k) => {
      const port = pair ? `${l.srvIf[k]}p` : l.cliIf;
      sh("ip", [
        "link",
        "add",
        l.srvIf[k] as string,
        "netns",
        ns,
        "type",
        "veth",
        "peer",
        "name",
        port,
        "netns",
        l.cliNs,
      ]);
      sh("ip", ["-n", ns, "addr", "add", `${SERVER_ADDRESSES[k]}/16`, "dev", l.srvIf[k] as string]);
      sh("ip", ["-n", ns, "link", "set", l.srvIf[k] as string, "up"]);
      if (pair) sh("ip", ["-n", l.cliNs, "link", "set", port, "master", l.cliIf]);
      sh("ip", ["-n", l.cliNs, "link", "set", port, "up"]);
    });
    sh("ip", ["-n", l.cliNs, "addr", "add", "10.90.0.2/16", "dev", l.cliIf]);
    sh("ip", ["-n", l.cliNs, "link", "set", l.cliIf, "up"]);
  }
}

function teardownNetwork(): void {
  for (const l of lanes) for (const ns of [...l.srvNs, l.cliNs]) sh("ip", ["netns", "del", ns], true);
}

interface ServerUnderTest {
  name: string;
  version: string;
  durability: string;
  /** Server processes on its lane: 2 for an HA pair. */
  servers?: number;
  start(stateDir: string, lane: Lane): ChildProcess[];
}

/** A PostgreSQL database for a server under test, on the run's one PostgreSQL server. */
interface Database {
  url: string;
  socketDir: string;
  /** Names the socket file (.s.PGSQL.<port>) as well as the TCP port. */
  port: number;
  name: string;
}

function nodeServer(
  variant: { name: string; durability: string; database?: Database; pair?: boolean } = {
    name: "netboot-appliance",
    durability: "journal, fdatasync before every ACK (group commit)",
  },
): ServerUnderTest {
  const count = variant.pair ? 2 : 1;
  return {
    name: variant.name,
    version: "this commit",
    durability: variant.durability,
    servers: count,
    start(stateDir, lane) {
      return Array.from({ length: count }, (_, k) => {
        const cfg = join(stateDir, `config-${k}.json`);
        const name = `appliance-${"ab"[k]}`;
        writeFileSync(
          cfg,
          JSON.stringify({
            stateDir: join(stateDir, name),
            ...(variant.database ? { state: { backend: "postgres", url: variant.database.url } } : {}),
            ...(variant.pair
              ? {
                  ha: {
                    mode: "load-balancing",
                    this: name,
                    peers: [
                      { name: "appliance-a", role: "primary" },
                      { name: "appliance-b", role: "secondary" },
                    ],
                  },
                }
              : {}),
            dhcp: {
              mode: "full",
              interfaces: [lane.srvIf[k]],
              subnets: [{ subnet: SUBNET, range: POOL, router: "10.90.0.1", lease_time: 7200 }],
            },
          }),
        );
        return spawn(
          "ip",
          [
            "netns",
            "exec",
            lane.srvNs[k] as string,
            process.execPath,
            fileURLToPath(import.meta.url),
            "--serve",
            cfg,
          ],
          { stdio: ["ignore", "pipe", "pipe"] },
        );
      });
    },
  };
}

function dnsmasqServer(): ServerUnderTest {
  const version = sh("dnsmasq", ["--version"]).split("\n")[0] ?? "";
  return {
    name: "dnsmasq",
    version,
    durability: "lease file rewritten, no fsync",
    start(stateDir, lane) {
      return [
        spawn(
          "ip",
          [
            "netns",
            "exec",
            lane.srvNs[0] as string,
            "dnsmasq",
            "--no-daemon",
            "--port=0",
            "--conf-file=/dev/null",
            `--interface=${lane.srvIf[0]}`,
            "--bind-interfaces",
            `--dhcp-range=${POOL.start},${POOL.end},255.255.0.0,2h`,
            `--dhcp-leasefile=${join(stateDir, "dnsmasq.leases")}`,
            `--pid-file=${join(stateDir, "dnsmasq.pid")}`,
            "--dhcp-lease-max=100000",
            "--no-ping",
            "--quiet-dhcp",
            "--user=root",
          ],
          { stdio: ["ignore", "pipe", "pipe"] },
        ),
      ];
    },
  };
}

function keaServer(database?: Database): ServerUnderTest {
  const version = sh("kea-dhcp4", ["-v"]).trim();
  return {
    name: database ? "kea-dhcp4 (postgresql)" : "kea-dhcp4",
    version,
    durability: database
      ? "PostgreSQL lease backend (synchronous commit), multi-threading 4 threads"
      : "memfile persist=true (CSV append, no fsync)",
    start(stateDir, lane) {
      const cfg = join(stateDir, "kea-dhcp4.json");
      writeFileSync(
        cfg,
        JSON.stringify({
          Dhcp4: {
            "interfaces-config": { interfaces: [lane.srvIf[0]] },
            "lease-database": database
              ? // libpq reads a host that starts with / as the socket directory
                {
                  type: "postgresql",
                  name: database.name,
                  host: database.socketDir,
                  port: database.port,
                  user: "postgres",
                }
              : {
                  type: "memfile",
                  persist: true,
                  name: join(stateDir, "kea-leases4.csv"),
                  "lfc-interval": 3600,
                },
            // A lease backend that waits on the database gains from Kea's threads (it is how Kea
            // is run on PostgreSQL); memfile stays on Kea 2.2's default, one thread.
            ...(database
              ? {
                  "multi-threading": {
                    "enable-multi-threading": true,
                    "thread-pool-size": 4,
                    "packet-queue-size": 64,
                  },
                }
              : {}),
            "valid-lifetime": 7200,
            "renew-timer": 3600,
            "rebind-timer": 6300,
            subnet4: [
              {
                id: 1,
                subnet: SUBNET,
                pools: [{ pool: `${POOL.start} - ${POOL.end}` }],
                "option-data": [{ name: "routers", data: "10.90.0.1" }],
              },
            ],
            loggers: [{ name: "kea-dhcp4", severity: "WARN", output_options: [{ output: "stderr" }] }],
          },
        }),
      );
      return [
        spawn("ip", ["netns", "exec", lane.srvNs[0] as string, "kea-dhcp4", "-c", cfg], {
          stdio: ["ignore", "pipe", "pipe"],
          env: { ...process.env, KEA_PIDFILE_DIR: stateDir, KEA_LOCKFILE_DIR: stateDir },
        }),
      ];
    },
  };
}

interface PerfResult {
  rate: number;
  sent: number;
  drops: number;
  doLatencyMs: number;
  raLatencyMs: number;
  doMaxMs: number;
  raMaxMs: number;
}

function parsePerf(rate: number, text: string): PerfResult {
  const section = (name: string): string =>
    text.split(`***Statistics for: ${name}***`)[1]?.split("***")[0] ?? "";
  const num = (sec: string, key: string): number =>
    Number(new RegExp(`${key}: ([0-9.]+)`).exec(sec)?.[1] ?? Number.NaN);
  const dO = section("DISCOVER-OFFER");
  const rA = section("REQUEST-ACK");
  return {
    rate,
    sent: num(dO, "sent packets"),
    drops: num(dO, "drops") + num(rA, "drops"),
    doLatencyMs: num(dO, "avg delay"),
    raLatencyMs: num(rA, "avg delay"),
    doMaxMs: num(dO, "max delay"),
    raMaxMs: num(rA, "max delay"),
  };
}

function perfdhcp(lane: Lane, rate: number, seed: number, periodS = PERIOD_S): PerfResult {
  // perfdhcp exits non-zero when packets were dropped: its report is on stdout either way.
  const out = run("ip", [
    "netns",
    "exec",
    lane.cliNs,
    "perfdhcp",
    "-4",
    "-l",
    lane.cliIf,
    "-r",
    String(rate),
    "-R",
    String(CLIENTS),
    "-s",
    String(seed),
    "-p",
    String(periodS),
    "-W",
    "1000000",
  ]);
  return parsePerf(rate, out);
}

function run(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: "utf8", timeout: (PERIOD_S + 30) * 1000 });
  if (r.error) throw r.error;
  return r.stdout;
}

function peakRssKb(pid: number): number {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    return Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0);
  } catch {
    return 0;
  }
}

/** User + system CPU seconds of a process so far (/proc/PID/stat, 100 ticks per second). */
function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return 0;
  }
}

function waitReady(child: ChildProcess, name: string): Promise<void> {
  return new Promise((resolve, reject) => {
    let err = "";
    child.stderr?.on("data", (d) => {
      err += d.toString();
    });
    child.on("exit", (code) => reject(new Error(`${name} exited (${code}): ${err.slice(-2000)}`)));
    // Every server is given 1.5 s to bind; ours also says so on stdout.
    setTimeout(resolve, 1500);
  });
}

interface ServerResult {
  name: string;
  version: string;
  durability: string;
  bestRate: number;
  latencyMs: { discoverOffer: number; requestAck: number; dora: number; maxRequestAck: number } | undefined;
  peakRssMb: number;
  cpuSeconds: number;
  cpuMsPerDora: number | undefined;
  steps: PerfResult[];
  journal?: unknown;
}

interface Running {
  s: ServerUnderTest;
  lane: Lane;
  children: ChildProcess[];
  stateDir: string;
  stdout: string;
  steps: PerfResult[];
  best: PerfResult | undefined;
  failedAt: number | undefined;
}

function step(r: Running, rate: number, seed: number): PerfResult {
  const res = perfdhcp(r.lane, rate, seed);
  r.steps.push(res);
  console.log(
    `${r.s.name} rate ${rate}/s: sent ${res.sent} drops ${res.drops} DO ${res.doLatencyMs} ms RA ${res.raLatencyMs} ms`,
  );
  if (res.drops === 0 && res.sent > 0) {
    if (!r.best || rate > r.best.rate) r.best = res;
  } else if (r.failedAt === undefined || rate < r.failedAt) {
    r.failedAt = rate;
  }
  return res;
}

/**
 * All servers run at once, each in its own namespace pair, and each rate step is run against every
 * server in turn: on a shared, busy machine the load then drifts over all of them alike.
 */
async function benchAll(servers: ServerUnderTest[]): Promise<ServerResult[]> {
  const running: Running[] = servers.map((s, i) => {
    const lane = lanes[i] as Lane;
    const stateDir = mkdtempSync(join(tmpdir(), `nbdh-bench-${s.name}-`));
    const r: Running = {
      s,
      lane,
      children: s.start(stateDir, lane),
      stateDir,
      stdout: "",
      steps: [],
      best: undefined,
      failedAt: undefined,
    };
    r.children[0]?.stdout?.on("data", (d) => {
      r.stdout += d.toString();
    });
    return r;
  });
  try {
    for (const r of running) {
      for (const c of r.children) await waitReady(c, r.s.name);
      // Warm-up, not reported: a slow trickle until the server answers everything.
      for (let i = 0; i < 10; i++) {
        const warm = perfdhcp(r.lane, 20, 1000 + i, 1);
        if (warm.sent > 0 && warm.drops === 0) break;
        if (i === 9) console.log(`${r.s.name}: warm-up still dropping`);
      }
    }
    let seed = 1;
    for (const rate of RATES) {
      const active = running.filter((r) => r.failedAt === undefined);
      if (active.length === 0) break;
      for (const r of active) step(r, rate, seed++);
    }
    // One bisection step between the best rate and the first failing one.
    for (const r of running) {
      if (r.failedAt === undefined) continue;
      const low = r.best?.rate ?? 0;
      const mid = Math.round((low + r.failedAt) / 2 / 50) * 50;
      if (mid > low && mid < r.failedAt) step(r, mid, seed++);
    }
    const results: ServerResult[] = [];
    for (const r of running) {
      // A pair: both servers' peaks and CPU, added.
      const rss = r.children.reduce((n, c) => n + peakRssKb(c.pid as number), 0);
      const cpu = +r.children.reduce((n, c) => n + cpuSeconds(c.pid as number), 0).toFixed(2);
      const exchanges = r.steps.reduce((n, st) => n + (Number.isFinite(st.sent) ? st.sent : 0), 0);
      for (const c of r.children) {
        c.kill("SIGTERM");
        await new Promise((res) => (c.exitCode !== null ? res(undefined) : c.on("exit", res)));
      }
      const journal = r.stdout
        .split("\n")
        .map((l) => {
          try {
            return JSON.parse(l);
          } catch {
            return undefined;
          }
        })
        .find((l) => l?.event === "stopped")?.journal;
      const best = r.best;
      results.push({
        name: r.s.name,
        version: r.s.version,
        durability: r.s.durability,
        bestRate: best?.rate ?? 0,
        latencyMs: best
          ? {
              discoverOffer: best.doLatencyMs,
              requestAck: best.raLatencyMs,
              dora: +(best.doLatencyMs + best.raLatencyMs).toFixed(3),
              maxRequestAck: best.raMaxMs,
            }
          : undefined,
        peakRssMb: +(rss / 1024).toFixed(1),
        cpuSeconds: cpu,
        cpuMsPerDora: exchanges > 0 ? +((cpu * 1000) / exchanges).toFixed(3) : undefined,
        steps: r.steps,
        journal,
      });
    }
    return results;
  } finally {
    for (const r of running) {
      for (const c of r.children) if (c.exitCode === null) c.kill("SIGKILL");
      rmSync(r.stateDir, { recursive: true, force: true });
    }
  }
}

function markdown(results: ServerResult[], meta: Record<string, unknown>): string {
  const ours = results.find((r) => r.name === "netboot-appliance");
  const lines = [
    "# DHCP benchmark (perfdhcp DORA, no drops)",
    "",
    `${meta.date} · ${meta.cpu} · ${meta.cores} cores (shared; 1-min load average ${meta.loadavg1mBefore} before, ${meta.loadavg1mAfter} after) · perfdhcp ${meta.perfdhcp} · ${PERIOD_S} s per rate step, ${CLIENTS} simulated clients, pool ${POOL.start}-${POOL.end}`,
    "All servers run at once in their own namespaces; each rate step is run against each server in turn. A pair's RSS and CPU are its two servers' added.",
    "",
    "| server | durability | max DORA/s without drops | DISCOVER→OFFER avg ms | REQUEST→ACK avg ms | REQUEST→ACK max ms | peak RSS MB | server CPU ms per DORA | ours ÷ this |",
    "|---|---|---:|---:|---:|---:|---:|---:|---:|",
  ];
  for (const r of results) {
    const ratio = ours && r.bestRate > 0 ? (ours.bestRate / r.bestRate).toFixed(2) : "-";
    lines.push(
      `| ${r.name} (${r.version}) | ${r.durability} | ${r.bestRate} | ${r.latencyMs?.discoverOffer ?? "-"} | ${r.latencyMs?.requestAck ?? "-"} | ${r.latencyMs?.maxRequestAck ?? "-"} | ${r.peakRssMb} | ${r.cpuMsPerDora ?? "-"} | ${ratio} |`,
    );
  }
  const onPg = (n: string) => results.find((r) => r.name === n);
  const keaPg = onPg("kea-dhcp4 (postgresql)");
  if (keaPg && keaPg.bestRate > 0)
    for (const n of ["netboot-appliance (postgres)", "netboot-appliance pair (postgres)"]) {
      const r = onPg(n);
      if (r)
        lines.push(
          "",
          `On PostgreSQL: ${n} ÷ kea-dhcp4 (postgresql) = ${(r.bestRate / keaPg.bestRate).toFixed(2)}x the DORA rate.`,
        );
    }
  lines.push("", "Rate steps (rate: drops):", "");
  for (const r of results)
    lines.push(`- ${r.name}: ${r.steps.map((s) => `${s.rate}: ${s.drops}`).join(", ")}`);
  if (ours?.journal) lines.push("", `Journal (ours): ${JSON.stringify(ours.journal)}`);
  lines.push("");
  return lines.join("\n");
}

async function main(): Promise<void> {
  const serveIdx = process.argv.indexOf("--serve");
  if (serveIdx !== -1) {
    await serveMode(process.argv[serveIdx + 1] as string);
    return;
  }
  if (process.getuid?.() !== 0) throw new Error("bench:dhcp needs root (network namespaces)");
  const started = Date.now();
  const loadBefore = loadavg();
  const servers = [nodeServer(), keaServer(), dnsmasqServer()];
  // The same PostgreSQL server (fsync and synchronous commit on, its defaults) for every server on it.
  const pg = postgresBinDir() ? new TestPostgres() : undefined;
  if (pg) {
    pg.init();
    const db = (name: string): Database => {
      pg.psql(`CREATE DATABASE ${name}`);
      return { name, socketDir: pg.dir, port: pg.port, url: pg.url.replace("/netboot?", `/${name}?`) };
    };
    const kea = db("kea");
    sh("kea-admin", ["db-init", "pgsql", "-h", pg.dir, "-P", String(pg.port), "-u", "postgres", "-n", "kea"]);
    servers.push(
      nodeServer({
        name: "netboot-appliance (postgres)",
        durability: "PostgreSQL, a committed row before every ACK (group commit)",
        database: db("single"),
      }),
      nodeServer({
        name: "netboot-appliance pair (postgres)",
        durability: "two servers, load-balancing, one PostgreSQL database",
        database: db("pair"),
        pair: true,
      }),
      keaServer(kea),
    );
  } else console.log("SKIP postgres columns: PostgreSQL is not installed (apt-get install postgresql)");
  lanes = servers.map((s, i) => makeLane(i, s.servers ?? 1));
  setupNetwork();
  let results: ServerResult[];
  try {
    results = await benchAll(servers);
  } finally {
    teardownNetwork();
    pg?.destroy();
  }
  const meta = {
    date: new Date().toISOString(),
    cpu: cpus()[0]?.model ?? "unknown",
    cores: cpus().length,
    perfdhcp: sh("perfdhcp", ["-v"], true).trim() || "?",
    seconds: Math.round((Date.now() - started) / 1000),
    loadavg1mBefore: +(loadBefore[0] ?? 0).toFixed(1),
    loadavg1mAfter: +(loadavg()[0] ?? 0).toFixed(1),
  };
  const outDir = join(repoRoot, "bench", "results");
  mkdirSync(outDir, { recursive: true });
  writeFileSync(join(outDir, "dhcp.json"), `${JSON.stringify({ meta, results }, null, 2)}\n`);
  const md = markdown(results, meta);
  writeFileSync(join(outDir, "dhcp.md"), md);
  console.log(md);
}

await main();
