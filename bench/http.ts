/**
 * HTTP benchmark: `netboot serve --http-port` against nginx (Debian's package, its default
 * `worker_processes auto`, `sendfile on`) serving the same files on loopback, with curl as the client,
 * runs of the two servers interleaved:
 *   - one stream of a 256 MiB file (median of 5);
 *   - 50 and 200 clients at once, each fetching a 28 MB initrd (median of 3): aggregate throughput,
 *     p50 and p99 of the per-client time, peak RSS of each server's process tree.
 * Writes bench/results/http.{md,json}.   npm run bench:http
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { packageRoot } from "../src/package-root.js";
import { monitorTree } from "./lib/proc.js";
import { markdownTable, median, mib, ratio } from "./lib/report.js";

const run = promisify(execFile);
const root = packageRoot();
const SINGLE_BYTES = 256 * 1024 * 1024;
const INITRD_BYTES = 28 * 1000 * 1000;
const SINGLE_REPEATS = 5;
const CONC_REPEATS = 3;
const CONCURRENCY = [50, 200];

type Name = "netboot-appliance" | "nginx";
interface Server {
  name: Name;
  pid: number;
  port: number;
  proc: ChildProcess;
}

const quantile = (xs: number[], q: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)] ?? 0;
};

async function waitForPort(port: number): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const ok = await run("curl", ["-s", "-o", "/dev/null", `http://127.0.0.1:${port}/`]).then(
      () => true,
      (e: { code?: number }) => e.code === 22 || e.code === 0,
    );
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`nothing listening on ${port}`);
}

async function startOurs(dir: string, files: string, port: number): Promise<Server> {
  const proc = spawn(
    process.execPath,
    [
      join(root, "dist/src/bin.js"),
      "serve",
      "--no-dhcp",
      "--tftp-root",
      files,
      "--tftp-port",
      String(port + 1),
      "--http-port",
      String(port),
      "--listen",
      "127.0.0.1",
    ],
    { stdio: ["ignore", "ignore", "inherit"], cwd: dir },
  );
  await waitForPort(port);
  return { name: "netboot-appliance", pid: proc.pid as number, port, proc };
}

async function startNginx(dir: string, files: string, port: number): Promise<Server> {
  const conf = join(dir, "nginx.conf");
  writeFileSync(
    conf,
    `worker_processes auto;
daemon off;
master_process on;
pid ${dir}/nginx.pid;
error_log ${dir}/nginx-error.log;
events { worker_connections 4096; }
http {
  sendfile on;
  tcp_nopush on;
  access_log ${dir}/nginx-access.log;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  default_type application/octet-stream;
  server { listen 127.0.0.1:${port}; root ${files}; }
}
`,
  );
  const proc = spawn("nginx", ["-c", conf, "-p", dir], { stdio: ["ignore", "ignore", "inherit"] });
  await waitForPort(port);
  return { name: "nginx", pid: proc.pid as number, port, proc };
}

async function stop(s: Server): Promise<void> {
  const exited = new Promise((r) => s.proc.once("exit", r));
  s.proc.kill(s.name === "nginx" ? "SIGQUIT" : "SIGTERM");
  await exited;
}

/** One curl: seconds and bytes, as curl measured them. */
async function fetch(port: number, path: string): Promise<{ seconds: number; bytes: number }> {
  const { stdout } = await run(
    "curl",
    [
      "-sS",
      "--fail",
      "-o",
      "/dev/null",
      "-w",
      "%{time_total} %{size_download}",
      `http://127.0.0.1:${port}/${path}`,
    ],
    {
      maxBuffer: 1024 * 1024,
    },
  );
  const [seconds, bytes] = stdout.trim().split(" ").map(Number);
  return { seconds: seconds ?? 0, bytes: bytes ?? 0 };
}

interface Concurrent {
  clients: number;
  mbps: number;
  p50: number;
  p99: number;
  failed: number;
}

async function concurrent(port: number, clients: number): Promise<Concurrent> {
  const started = performance.now();
  const results = await Promise.allSettled(Array.from({ length: clients }, () => fetch(port, "initrd.img")));
  const wall = (performance.now() - started) / 1000;
  const ok = results.flatMap((r) =>
    r.status === "fulfilled" && r.value.bytes === INITRD_BYTES ? [r.value] : [],
  );
  const times = ok.map((r) => r.seconds);
  return {
    clients,
    mbps: (ok.length * INITRD_BYTES) / 1e6 / wall,
    p50: quantile(times, 0.5),
    p99: quantile(times, 0.99),
    failed: clients - ok.length,
  };
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "nbbench-http-"));
  const files = join(dir, "files");
  mkdirSync(files);
  chmodSync(dir, 0o755); // nginx's workers run as www-data
  writeFileSync(join(files, "big.bin"), randomBytes(SINGLE_BYTES));
  writeFileSync(join(files, "initrd.img"), randomBytes(INITRD_BYTES));
  const starters: Record<Name, (port: number) => Promise<Server>> = {
    "netboot-appliance": (p) => startOurs(dir, files, p),
    nginx: (p) => startNginx(dir, files, p),
  };
  const names: Name[] = ["netboot-appliance", "nginx"];
  const single: Record<Name, number[]> = { "netboot-appliance": [], nginx: [] };
  const conc: Record<Name, Record<number, Concurrent[]>> = { "netboot-appliance": {}, nginx: {} };
  const rss: Record<Name, Record<string, number>> = { "netboot-appliance": {}, nginx: {} };
  let port = 18080;
  try {
    for (let round = 0; round < SINGLE_REPEATS; round++) {
      for (const name of names) {
        port += 2;
        const s = await starters[name](port);
        const mon = monitorTree(s.pid);
        const r = await fetch(s.port, "big.bin");
        rss[name].single = Math.max(rss[name].single ?? 0, mon.stop().peakRss);
        single[name].push(r.bytes / 1e6 / r.seconds);
        await stop(s);
      }
    }
    for (const clients of CONCURRENCY) {
      for (let round = 0; round < CONC_REPEATS; round++) {
        for (const name of names) {
          port += 2;
          const s = await starters[name](port);
          const mon = monitorTree(s.pid);
          const r = await concurrent(s.port, clients);
          rss[name][`c${clients}`] = Math.max(rss[name][`c${clients}`] ?? 0, mon.stop().peakRss);
          conc[name][clients] = [...(conc[name][clients] ?? []), r];
          await stop(s);
          console.error(
            `${name} ${clients} clients: ${r.mbps.toFixed(0)} MB/s, p99 ${r.p99.toFixed(2)} s, ${r.failed} failed`,
          );
        }
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }

  const pick = (name: Name, clients: number) => {
    const runs = conc[name][clients] ?? [];
    const m = median(runs.map((r) => r.mbps));
    return runs.find((r) => r.mbps === m) ?? runs[0];
  };
  const rows: (string | number)[][] = [];
  rows.push([
    "1 stream, 256 MiB",
    `${median(single["netboot-appliance"]).toFixed(0)} MB/s`,
    `${median(single.nginx).toFixed(0)} MB/s`,
    ratio(median(single["netboot-appliance"]), median(single.nginx)),
    "",
    "",
    `${mib(rss["netboot-appliance"].single)} / ${mib(rss.nginx.single)}`,
  ]);
  for (const clients of CONCURRENCY) {
    const a = pick("netboot-appliance", clients);
    const b = pick("nginx", clients);
    rows.push([
      `${clients} clients × 28 MB`,
      `${a?.mbps.toFixed(0)} MB/s (${a?.failed} failed)`,
      `${b?.mbps.toFixed(0)} MB/s (${b?.failed} failed)`,
      ratio(a?.mbps, b?.mbps),
      `${a?.p50.toFixed(2)} / ${a?.p99.toFixed(2)} s`,
      `${b?.p50.toFixed(2)} / ${b?.p99.toFixed(2)} s`,
      `${mib(rss["netboot-appliance"][`c${clients}`])} / ${mib(rss.nginx[`c${clients}`])}`,
    ]);
  }
  const meta = {
    date: new Date().toISOString(),
    node: process.version,
    loopback: true,
    singleRepeats: SINGLE_REPEATS,
    concurrentRepeats: CONC_REPEATS,
  };
  const md = [
    `# HTTP: netboot-appliance vs nginx (${meta.date}, loopback, curl, medians of interleaved runs)`,
    "",
    markdownTable(
      [
        "case",
        "netboot-appliance",
        "nginx",
        "ratio",
        "ours p50 / p99",
        "nginx p50 / p99",
        "peak RSS MiB (ours / nginx)",
      ],
      rows,
    ),
    "",
  ].join("\n");
  const out = join(root, "bench", "results");
  mkdirSync(out, { recursive: true });
  writeFileSync(
    join(out, "http.json"),
    `${JSON.stringify({ meta, single, concurrent: conc, rss }, null, 2)}\n`,
  );
  writeFileSync(join(out, "http.md"), md);
  process.stdout.write(md);
}

await main();
