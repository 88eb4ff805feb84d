/**
 * Boot storm: N UEFI x64 machines power on at once and boot through DHCP and TFTP as OVMF, shim and GRUB
 * do (bench/lib/storm-machine.ts), played by real clients (udhcpc, atftp) in one namespace each on one
 * bridge. The appliance and dnsmasq serve the same storm in turn, runs interleaved, each server pinned to
 * one core and to two (taskset), with and without 20% loss on the bridge ports, and once more beside a
 * DISCOVER flood. Reports the time until the last machine had its initrd, failed boots, retransmits,
 * server CPU seconds (utime + stime) and peak RSS; medians over the repeats.
 *
 *   npm run bench:storm       env: NETBOOT_STORM_CLIENTS (200), NETBOOT_STORM_REPEATS (3),
 *                             NETBOOT_STORM_ROWS (base,loss,flood), NETBOOT_STORM_CORES (2,1),
 *                             NETBOOT_STORM_SERVERS (appliance,dnsmasq), NETBOOT_STORM_FLOOD_RATE (10000),
 *                             NETBOOT_STORM_REPEATS_1CORE (as REPEATS), NETBOOT_STORM_LOSS_1CORE (1),
 *                             NETBOOT_STORM_KEEP (keep the work folder and logs),
 *                             NETBOOT_STORM_OUT (storm: the results' file name)
 * Writes bench/results/storm.{md,json} (or NETBOOT_STORM_OUT.{md,json}). Root only; the lab images must be built (qemu/ci-prepare.sh).
 */

import { execFileSync } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { packageRoot } from "../src/package-root.js";
import { markdownTable, median, mib, ratio } from "./lib/report.js";
import { type StormTftpClient, writeMachineScript } from "./lib/storm-machine.js";
import { createStormNet, FLOOD_ADDRESS, STORM_SERVER_ADDRESS, type StormNet } from "./lib/storm-net.js";
import { runStorm, type StormResult } from "./lib/storm-run.js";
import {
  applianceConfig,
  dnsmasqRoot,
  SERVER_NICE,
  type StormInputs,
  type StormServerName,
  serverSequence,
  startAppliance,
  startDnsmasq,
} from "./lib/storm-servers.js";

const CLIENTS = Number(process.env.NETBOOT_STORM_CLIENTS ?? 200);
const REPEATS = Number(process.env.NETBOOT_STORM_REPEATS ?? 3);
const ROWS = new Set((process.env.NETBOOT_STORM_ROWS ?? "base,loss,flood").split(","));
const SERVERS = new Set((process.env.NETBOOT_STORM_SERVERS ?? "appliance,dnsmasq").split(","));
/** Repeats of the 1-core row (a 200-machine storm takes minutes: the ratio may get fewer runs). */
const REPEATS_1CORE = Number(process.env.NETBOOT_STORM_REPEATS_1CORE ?? REPEATS);
const LOSS_1CORE = process.env.NETBOOT_STORM_LOSS_1CORE !== "0";
/** Core counts to pin the server to (taskset): 2, 1, or both. */
const CORES = new Set((process.env.NETBOOT_STORM_CORES ?? "2,1").split(","));
const FLOOD_RATE = Number(process.env.NETBOOT_STORM_FLOOD_RATE ?? 10_000);
const LOSS_PERCENT = 20;
/** The appliance's pump threads (tftp.pump_threads "auto": one per core the server is pinned to). */
const PUMP_THREADS = process.env.NETBOOT_TFTP_PUMP_THREADS
  ? `NETBOOT_TFTP_PUMP_THREADS=${process.env.NETBOOT_TFTP_PUMP_THREADS}`
  : 'tftp.pump_threads "auto": on the event loop up to 2 cores, else cores - 1 threads';
/** Under loss every file is cut to this fraction: lockstep at a 1 s timeout loses ~0.5 s per block at 20%. */
const LOSS_SCALE = 1 / 256;
/** The results' file name: a run of some rows only can be kept beside the full table (storm-base.md, say). */
const OUT_NAME = process.env.NETBOOT_STORM_OUT ?? "storm";
if (!/^[a-z0-9-]+$/.test(OUT_NAME))
  throw new Error(`NETBOOT_STORM_OUT: "${OUT_NAME}" is not a plain name ([a-z0-9-]+)`);
const LAB = process.env.NETBOOT_LAB_CACHE ?? "/var/cache/netboot-lab";
const REAL: StormInputs = {
  shim: join(LAB, "loaders/x64/shimx64.efi"),
  grub: join(LAB, "loaders/x64/grubx64.efi"),
  kernel: join(LAB, "images/debian12-x64-initramfs/vmlinuz"),
  initrd: join(LAB, "images/debian12-x64-initramfs/initrd.img"),
};

interface Variant {
  label: string;
  cores: "0" | "0,1";
  loss: boolean;
  flood: boolean;
  repeats: number;
}

/** The first bytes of each file (at least 4 KiB, so loaders keep their PE headers). */
function scaledInputs(dir: string): StormInputs {
  mkdirSync(dir, { recursive: true });
  const cut = (from: string, name: string) => {
    const to = join(dir, name);
    const bytes = Math.max(4096, Math.floor(statSync(from).size * LOSS_SCALE));
    const buf = Buffer.alloc(bytes);
    const fd = openSync(from, "r");
    readSync(fd, buf, 0, bytes, 0);
    writeFileSync(to, buf);
    return to;
  };
  return {
    shim: cut(REAL.shim, "shimx64.efi"),
    grub: cut(REAL.grub, "grubx64.efi"),
    kernel: cut(REAL.kernel, "vmlinuz"),
    initrd: cut(REAL.initrd, "initrd.img"),
  };
}

interface Setup {
  configFile: string;
  applianceRoot: string;
  dnsmasqRoot: string;
  applianceScript: string;
  dnsmasqScript: string;
}

/** Both servers' files and the machine scripts (the expected sizes differ: each serves its own configs). */
async function prepare(
  dir: string,
  inputs: StormInputs,
  net: StormNet,
  client: StormTftpClient,
): Promise<Setup> {
  mkdirSync(dir, { recursive: true });
  const configFile = applianceConfig(dir, inputs, net);
  const dnsRoot = await dnsmasqRoot(dir, configFile, inputs, net);
  const mac = net.machines[0]?.mac as string;
  const scriptFor = (name: string, root: string) => {
    const sub = join(dir, `${name}-script`);
    mkdirSync(sub, { recursive: true });
    return writeMachineScript(sub, STORM_SERVER_ADDRESS, serverSequence(root, mac), client);
  };
  // The appliance serves the same rendered configs; its TFTP root has only the loaders.
  return {
    configFile,
    applianceRoot: dnsRoot,
    dnsmasqRoot: dnsRoot,
    applianceScript: scriptFor("appliance", dnsRoot),
    dnsmasqScript: scriptFor("dnsmasq", dnsRoot),
  };
}

async function storm(
  name: StormServerName,
  v: Variant,
  setup: Setup,
  net: StormNet,
  dir: string,
): Promise<StormResult> {
  const floodNs = v.flood ? `${PREFIX}-flood` : undefined;
  return runStorm({
    net,
    script: name === "appliance" ? setup.applianceScript : setup.dnsmasqScript,
    sequence: (mac) => serverSequence(setup.dnsmasqRoot, mac),
    outDir: join("/dev/shm", `${PREFIX}-out`),
    machineTimeoutMs: v.loss ? 1_800_000 : 900_000,
    ...(floodNs ? { flood: { ns: floodNs, rate: FLOOD_RATE, clients: 100 } } : {}),
    start: async () => {
      rmSync(join(dir, "state"), { recursive: true, force: true });
      return name === "appliance"
        ? startAppliance(net, setup.configFile, join(dir, "appliance.log"), v.cores)
        : startDnsmasq(net, dir, setup.dnsmasqRoot, join(dir, "dnsmasq.log"), v.cores);
    },
  });
}

const PREFIX = "nbst";

async function main(): Promise<void> {
  for (const f of Object.values(REAL))
    if (!existsSync(f))
      throw new Error(`${f} is missing: build the lab images first (bash qemu/ci-prepare.sh)`);
  const work = mkdtempSync(join(tmpdir(), "nbst-"));
  const net = createStormNet(PREFIX, CLIENTS);
  const loadBefore = loadavg()[0]?.toFixed(2);
  const variants: Variant[] = [];
  if (ROWS.has("base")) {
    variants.push({ label: "2 cores", cores: "0,1", loss: false, flood: false, repeats: REPEATS });
    variants.push({ label: "1 core", cores: "0", loss: false, flood: false, repeats: REPEATS_1CORE });
  }
  if (ROWS.has("loss")) {
    variants.push({
      label: `2 cores, ${LOSS_PERCENT}% loss`,
      cores: "0,1",
      loss: true,
      flood: false,
      repeats: 1,
    });
    if (LOSS_1CORE)
      variants.push({
        label: `1 core, ${LOSS_PERCENT}% loss`,
        cores: "0",
        loss: true,
        flood: false,
        repeats: 1,
      });
  }
  if (ROWS.has("flood")) {
    net.addHost("flood", "52:54:00:9f:ff:01", FLOOD_ADDRESS);
    variants.push({
      label: `2 cores, ${FLOOD_RATE}/s DISCOVER flood`,
      cores: "0,1",
      loss: false,
      flood: true,
      repeats: 1,
    });
  }
  variants.splice(0, variants.length, ...variants.filter((v) => CORES.has(v.cores === "0" ? "1" : "2")));
  const real = await prepare(join(work, "real"), REAL, net, "atftp");
  // Under loss the files are fetched as firmware does (atftp aborts on a repeated OACK).
  const scaled = ROWS.has("loss")
    ? await prepare(join(work, "scaled"), scaledInputs(join(work, "scaled-in")), net, "firmware")
    : undefined;
  const results: Record<string, Record<StormServerName, StormResult[]>> = {};
  try {
    for (const v of variants) {
      results[v.label] = { appliance: [], dnsmasq: [] };
      net.setLoss(v.loss ? LOSS_PERCENT : 0);
      const setup = v.loss ? (scaled as Setup) : real;
      for (let r = 0; r < v.repeats; r++) {
        // Interleaved, the order swapped each repeat.
        const order: StormServerName[] = r % 2 === 0 ? ["appliance", "dnsmasq"] : ["dnsmasq", "appliance"];
        for (const name of order.filter((n) => SERVERS.has(n))) {
          const res = await storm(name, v, setup, net, join(work, v.loss ? "scaled" : "real"));
          results[v.label]?.[name].push(res);
          console.log(
            `${v.label} ${name} #${r + 1}: ${res.wallS.toFixed(1)} s, failed ${res.failed}, cpu ${res.serverCpuS.toFixed(1)} s (sys ${res.serverSysS.toFixed(1)}), retransmits ${res.retransmits}, receive drops ${res.receiveDrops}, rss ${mib(res.peakRssBytes)} MiB${
              Object.keys(res.serverThreadCpuS).length > 1
                ? ` (threads: ${Object.entries(res.serverThreadCpuS)
                    .map(([n, s]) => `${n} ${s.toFixed(1)}`)
                    .join(", ")})`
                : ""
            }${res.flood ? `, flood ${Math.round(res.flood.sentPerS)}/s sent ${Math.round(res.flood.answeredPerS)}/s answered` : ""}${res.failures.length ? ` [${res.failures.slice(0, 5).join("; ")}]` : ""}`,
          );
        }
      }
      // Written after every row: a long run that is stopped keeps the rows it finished.
      report(results, done(variants, results), real, loadBefore);
    }
  } finally {
    net.setLoss(0);
    net.destroy();
  }
  console.log(report(results, variants, real, loadBefore));
  if (!process.env.NETBOOT_STORM_KEEP) rmSync(work, { recursive: true, force: true });
  else console.log(`kept ${work}`);
}

/** The variants whose runs are all done. */
function done(variants: Variant[], results: Record<string, Record<StormServerName, StormResult[]>>): Variant[] {
  return variants.filter((v) => {
    const per = results[v.label];
    return per !== undefined && [...SERVERS].every((n) => per[n as StormServerName]?.length === v.repeats);
  });
}

/** Writes bench/results/<OUT_NAME>.{md,json} for `variants`; returns the markdown. */
function report(
  results: Record<string, Record<StormServerName, StormResult[]>>,
  variants: Variant[],
  setup: Setup,
  loadBefore: string | undefined,
): string {
  const bytesPerBoot = serverSequence(setup.dnsmasqRoot, "52:54:00:90:00:01").reduce((n, f) => n + f.size, 0);
  const rows: (string | number)[][] = [];
  const summary: Record<string, unknown>[] = [];
  for (const v of variants) {
    const per = results[v.label];
    if (!per) continue;
    const m = (name: StormServerName, f: (r: StormResult) => number) => median(per[name].map(f));
    for (const name of ["appliance", "dnsmasq"] as const) {
      if (per[name].length === 0) continue;
      const flood = per[name][0]?.flood;
      const row = {
        variant: v.label,
        server: name,
        runs: per[name].length,
        wallS: m(name, (r) => r.wallS),
        failed: per[name].reduce((n, r) => n + r.failed, 0),
        retransmits: m(name, (r) => r.retransmits),
        serverCpuS: m(name, (r) => r.serverCpuS),
        serverSysS: m(name, (r) => r.serverSysS),
        peakRssMiB: Number(mib(m(name, (r) => r.peakRssBytes ?? 0))),
        ...(flood
          ? { floodSentPerS: Math.round(flood.sentPerS), floodAnsweredPerS: Math.round(flood.answeredPerS) }
          : {}),
      };
      summary.push(row);
      rows.push([
        v.label,
        name,
        row.runs,
        row.wallS.toFixed(1),
        row.failed,
        row.retransmits,
        row.serverCpuS.toFixed(1),
        row.serverSysS.toFixed(1),
        row.peakRssMiB,
        flood ? `${row.floodSentPerS}/s sent, ${row.floodAnsweredPerS}/s answered` : "",
      ]);
    }
    rows.push([
      v.label,
      "appliance / dnsmasq",
      "",
      ratio(
        m("appliance", (r) => r.wallS),
        m("dnsmasq", (r) => r.wallS),
      ),
      "",
      "",
      ratio(
        m("appliance", (r) => r.serverCpuS),
        m("dnsmasq", (r) => r.serverCpuS),
      ),
      ratio(
        m("appliance", (r) => r.serverSysS),
        m("dnsmasq", (r) => r.serverSysS),
      ),
      "",
      "",
    ]);
  }
  const wallOf = (label: string) => median(results[label]?.appliance.map((r) => r.wallS) ?? []);
  const meta = {
    date: new Date().toISOString(),
    cpu: cpus()[0]?.model ?? "?",
    cores: cpus().length,
    clients: CLIENTS,
    bytesPerBoot,
    loadavg1mBefore: loadBefore,
    loadavg1mAfter: loadavg()[0]?.toFixed(2),
    dnsmasq: execFileSync("dnsmasq", ["--version"], { encoding: "utf8" }).split("\n")[0],
    lossScale: LOSS_SCALE,
  };
  const scaling = ratio(wallOf("1 core"), wallOf("2 cores"));
  const threadLines = variants.flatMap((v) =>
    (results[v.label]?.appliance ?? []).map(
      (r, i) =>
        `- ${v.label}, run ${i + 1}: ${Object.entries(r.serverThreadCpuS)
          .map(([name, s]) => `${name} ${s.toFixed(1)}`)
          .join(", ")}`,
    ),
  );
  const md = [
    `# Boot storm: ${CLIENTS} UEFI x64 machines at once (${meta.date})`,
    "",
    `${meta.cpu} · ${meta.cores} cores, shared by the server and all clients · ${meta.dnsmasq} · ${(bytesPerBoot / 1e6).toFixed(1)} MB per boot (shim, GRUB, two configs, kernel, initrd) · load average ${meta.loadavg1mBefore} before, ${meta.loadavg1mAfter} after`,
    "",
    `Each machine: udhcpc (option 93 = 7), a tsize probe, shim at blksize 1468 windowsize 4, GRUB at 512 windowsize 4, grub.cfg and its own config, kernel and initrd at 1024 in lockstep (atftp). Time: until the last machine has its initrd. CPU: the server's utime + stime over the storm. Retransmits: server datagrams beyond a loss-free storm's, counted by nftables. Medians of the runs (of two: their mean); runs of the two servers interleaved; every run is in ${OUT_NAME}.json.`,
    `Both servers run at nice ${SERVER_NICE} over the machines' processes (they share this host's cores; a real rack's machines do not).`,
    `Loss rows: ${LOSS_PERCENT}% of frames dropped each way on every machine's bridge port, every file cut to 1/${1 / LOSS_SCALE} of its size (lockstep at a 1 s timeout would take hours for the real initrd), fetched by bench/lib/firmware-tftp.ts, which retries as EDK2 and GRUB do (atftp aborts when an OACK is sent again after a lost ACK 0).`,
    "",
    markdownTable(
      [
        "variant",
        "server",
        "runs",
        "time (s)",
        "failed boots",
        "retransmits",
        "server CPU (s)",
        "of which kernel (s)",
        "peak RSS (MiB)",
        "flood",
      ],
      rows,
    ),
    "",
    `Appliance, 1 core / 2 cores (time): ${scaling}.`,
    "",
    `Appliance CPU seconds by thread (${PUMP_THREADS}; "node" is the event loop, "nbdh-pump" the lockstep pump threads together, "nbdh-dhcp-in" the DHCP intake):`,
    "",
    ...threadLines,
    "",
  ].join("\n");
  const out = join(packageRoot(), "bench/results");
  mkdirSync(out, { recursive: true });
  writeFileSync(join(out, `${OUT_NAME}.md`), md);
  writeFileSync(
    join(out, `${OUT_NAME}.json`),
    `${JSON.stringify({ meta, rows: summary, runs: results }, (k, val) => (k === "machines" ? undefined : val), 2)}\n`,
  );
  return md;
}

await main();
