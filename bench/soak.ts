/**
 * The reliability campaign at full scale (`npm run soak`): the fuzz targets at 10^6 cases each, the kill -9
 * loop at 100 cycles, the full-disk, mid-transfer replacement and OpenStack fault tests, each through the
 * same vitest files CI runs at small scale. Writes bench/results/soak.{md,json}.
 *   NETBOOT_SOAK_FUZZ_RUNS (default 1000000), NETBOOT_SOAK_KILL_CYCLES (default 100)
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { packageRoot } from "../src/package-root.js";
import { markdownTable } from "./lib/report.js";

const root = packageRoot();
const fuzzRuns = Number(process.env.NETBOOT_SOAK_FUZZ_RUNS ?? 1_000_000);
const killCycles = Number(process.env.NETBOOT_SOAK_KILL_CYCLES ?? 100);
const results = join(root, "test-results");

interface Step {
  key: "fuzz" | "kill" | "faults";
  name: string;
  files: string[];
  env: Record<string, string>;
  ok?: boolean;
  seconds?: number;
  tests?: { passed: number; failed: number };
}

const steps: Step[] = [
  { key: "fuzz", name: "fuzz", files: ["test/fuzz"], env: { NETBOOT_FUZZ_RUNS: String(fuzzRuns) } },
  {
    key: "kill",
    name: "kill -9 loop",
    files: ["test/dhcp/kill-loop.test.ts"],
    env: { NETBOOT_KILL_CYCLES: String(killCycles) },
  },
  {
    key: "faults",
    name: "full disk, file replaced mid-transfer, OpenStack faults",
    files: ["test/dhcp/full-disk.test.ts", "test/tftp/replaced.test.ts", "test/bootplan/cinder.test.ts"],
    env: {},
  },
];

// NETBOOT_SOAK_STEPS=kill,faults reruns only those; the other steps keep their last recorded results.
const only = process.env.NETBOOT_SOAK_STEPS?.split(",");
const outDir = join(root, "bench", "results");
const previous = existsSync(join(outDir, "soak.json"))
  ? (JSON.parse(readFileSync(join(outDir, "soak.json"), "utf8")) as {
      steps: Step[];
      fuzz: Record<string, unknown>[];
    })
  : undefined;
if (!only || only.includes("fuzz")) rmSync(join(results, "fuzz"), { recursive: true, force: true });
for (const step of steps) {
  if (only && !only.includes(step.key)) {
    Object.assign(step, previous?.steps.find((s) => s.name === step.name) ?? {});
    continue;
  }
  const started = Date.now();
  const report = join(results, `soak-${step.name.replace(/\W+/g, "-")}.json`);
  const run = spawnSync(
    process.execPath,
    [
      join(root, "node_modules/vitest/vitest.mjs"),
      "run",
      ...step.files,
      "--reporter=default",
      "--reporter=json",
      `--outputFile=${report}`,
    ],
    { cwd: root, stdio: "inherit", env: { ...process.env, ...step.env } },
  );
  step.ok = run.status === 0;
  step.seconds = Math.round((Date.now() - started) / 1000);
  if (existsSync(report)) {
    const r = JSON.parse(readFileSync(report, "utf8")) as { numPassedTests: number; numFailedTests: number };
    step.tests = { passed: r.numPassedTests, failed: r.numFailedTests };
  }
}

const fuzzDir = join(results, "fuzz");
const fuzz = existsSync(fuzzDir)
  ? readdirSync(fuzzDir).map(
      (f) => JSON.parse(readFileSync(join(fuzzDir, f), "utf8")) as Record<string, unknown>,
    )
  : [];
const killPath = join(results, "kill-loop.json");
const kill = existsSync(killPath)
  ? (JSON.parse(readFileSync(killPath, "utf8")) as { summary: Record<string, unknown> })
  : undefined;

mkdirSync(outDir, { recursive: true });
const meta = { date: new Date().toISOString(), fuzzRuns, killCycles, node: process.version };
writeFileSync(
  join(outDir, "soak.json"),
  `${JSON.stringify({ meta, steps, fuzz, killLoop: kill?.summary }, null, 2)}\n`,
);
const k = kill?.summary as
  | {
      cycles: number;
      acksSeen: number;
      leasesLost: number;
      restartToReadyMs: { median: number; max: number };
      restartToFirstAckMs: { median: number; max: number };
    }
  | undefined;
const md = [
  `# Reliability campaign (npm run soak), ${meta.date}`,
  "",
  markdownTable(
    ["fuzz target", "cases", "failures", "seconds"],
    fuzz
      .sort((a, b) => String(a.target).localeCompare(String(b.target)))
      .map((f) => [String(f.target), Number(f.runs), Number(f.failures), (Number(f.ms) / 1000).toFixed(1)]),
  ),
  "",
  k
    ? markdownTable(
        [
          "kill -9 cycles",
          "ACKs seen",
          "leases lost",
          "restart to ready (median / max)",
          "restart to first ACK (median / max)",
        ],
        [
          [
            k.cycles,
            k.acksSeen,
            k.leasesLost,
            `${k.restartToReadyMs.median} / ${k.restartToReadyMs.max} ms`,
            `${k.restartToFirstAckMs.median} / ${k.restartToFirstAckMs.max} ms`,
          ],
        ],
      )
    : "kill -9 loop: no result",
  "",
  markdownTable(
    ["step", "tests passed", "failed", "seconds"],
    steps.map((s) => [s.name, s.tests?.passed ?? "n/a", s.tests?.failed ?? "n/a", s.seconds ?? 0]),
  ),
  "",
].join("\n");
writeFileSync(join(outDir, "soak.md"), md);
process.stdout.write(md);
process.exit(steps.every((s) => s.ok) ? 0 : 1);
