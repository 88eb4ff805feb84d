/**
 * kill -9 loop: NETBOOT_KILL_CYCLES cycles (8 in CI, 100 in `npm run soak`) of a DHCP flood, a SIGKILL
 * at a random moment, and a restart on the same state directory. After each restart: the journal loads,
 * every ACK any client ever received is in the lease store, and no MAC holds two addresses. Reports the
 * leases lost (target 0) and how long the server takes to serve again, in test-results/kill-loop.json.
 *   nbdh-ks [nbdh-q0 10.80.0.1/12] ── [nbdh-q1 10.80.0.2/12] nbdh-kc   (scripted flood + perfdhcp)
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readLeases } from "../../src/dhcp/leases.js";
import { commandsAvailable, isRoot, resourceAvailable } from "../support/require.js";
import { buildFixtures, clientJs, JsonLines, Lab, startServer, tempDir } from "./helpers/netns.js";

const ready = resourceAvailable("root (network namespaces)", isRoot()) && commandsAvailable("ip", "perfdhcp");
const CYCLES = Number(process.env.NETBOOT_KILL_CYCLES ?? 8);

interface Cycle {
  cycle: number;
  killAfterMs: number;
  acks: number;
  readyMs: number;
  firstAckMs: number | undefined;
  lost: number;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? undefined : (s[Math.floor((s.length - 1) / 2)] as number);
};

describe.runIf(ready)(`kill -9 loop (${CYCLES} cycles)`, () => {
  const lab = new Lab();
  const dir = tempDir("nbdh-killloop-");
  const stateDir = join(dir, "state");
  const spec = {
    stateDir,
    logLevel: "warn",
    nextServer: "10.80.0.1",
    leaseStore: { compactAfter: 500 }, // so that kills also land in rotations and compactions
    dhcp: {
      mode: "full",
      interfaces: ["nbdh-q0"],
      subnets: [
        // About a million addresses: 100 cycles of the flood and perfdhcp ACK some 70,000 leases of 2 h.
        { subnet: "10.80.0.0/12", range: { start: "10.81.0.0", end: "10.95.255.255" }, lease_time: 7200 },
      ],
    },
  };

  beforeAll(() => {
    buildFixtures();
    lab.ns("nbdh-ks");
    lab.ns("nbdh-kc");
    lab.link("nbdh-ks", "nbdh-q0", "10.80.0.1/12", "nbdh-kc", "nbdh-q1", "10.80.0.2/12");
  });
  afterAll(() => lab.cleanup());

  it(
    "every ACKed lease survives every SIGKILL; the server serves again after each restart",
    async () => {
      const acked = new Map<string, string>();
      const cycles: Cycle[] = [];
      for (let cycle = 0; cycle < CYCLES; cycle++) {
        const spawnedAt = performance.now();
        const { child, out } = startServer(lab, "nbdh-ks", spec, dir);
        await out.waitFor((l) => l.event === "ready", 20_000);
        const readyMs = performance.now() - spawnedAt;
        const flood = lab.spawn("nbdh-kc", process.execPath, [
          clientJs,
          JSON.stringify({
            iface: "nbdh-q1",
            mac: "02:00:00:00:00:00",
            mode: "crash-flood",
            clients: 3000,
            paceMs: 10,
            timeoutMs: 1000,
            macSeed: cycle,
          }),
        ]);
        const floodOut = new JsonLines(flood);
        let firstAckAt: number | undefined;
        floodOut
          .waitFor((l) => l.event === "ack", 20_000)
          .then(() => {
            firstAckAt ??= performance.now();
          })
          .catch(() => {});
        await floodOut.waitFor((l) => l.event === "started");
        const perf = lab.spawn("nbdh-kc", "perfdhcp", [
          "-4",
          "-l",
          "nbdh-q1",
          "-r",
          "400",
          "-R",
          "50000",
          "-p",
          "3",
        ]);
        // A random moment: during DISCOVERs, REQUESTs, journal batches, rotations or compactions.
        const killAfterMs = 100 + Math.floor(Math.random() * 1400);
        await new Promise((r) => setTimeout(r, killAfterMs));
        child.kill("SIGKILL");
        await new Promise((r) => (child.exitCode !== null ? r(undefined) : child.on("exit", r)));
        flood.kill("SIGTERM");
        perf.kill("SIGTERM");
        await Promise.all(
          [flood, perf].map(
            (p) => new Promise<void>((r) => (p.exitCode !== null ? r() : p.on("exit", () => r()))),
          ),
        );
        const acks = floodOut.lines.filter((l) => l.event === "ack");
        for (const l of acks) acked.set(l.mac as string, l.address as string);

        // The journal loads, holds every ACK ever received, and gives each MAC one address.
        const leases = readLeases(stateDir);
        const bound = leases.filter((l) => l.state === "bound");
        const byAddress = new Map(bound.map((l) => [l.address, l.mac]));
        let lost = 0;
        for (const [mac, address] of acked) if (byAddress.get(address) !== mac) lost++;
        const macs = bound.map((l) => l.mac);
        expect(new Set(macs).size, `cycle ${cycle}: a MAC holds two addresses`).toBe(macs.length);
        cycles.push({
          cycle,
          killAfterMs,
          acks: acks.length,
          readyMs: Math.round(readyMs),
          firstAckMs: firstAckAt === undefined ? undefined : Math.round(firstAckAt - spawnedAt),
          lost,
        });
        expect(lost, `cycle ${cycle}: ACKed leases missing from the journal`).toBe(0);
      }
      // Cycles after the first restarted on a journal a kill left behind: their readiness is recovery time.
      const restarts = cycles.slice(1).map((c) => c.readyMs);
      const served = cycles.slice(1).flatMap((c) => (c.firstAckMs === undefined ? [] : [c.firstAckMs]));
      const summary = {
        cycles: CYCLES,
        acksSeen: cycles.reduce((n, c) => n + c.acks, 0),
        distinctAckedLeases: acked.size,
        leasesLost: cycles.reduce((n, c) => n + c.lost, 0),
        restartToReadyMs: { median: median(restarts), max: Math.max(0, ...restarts) },
        restartToFirstAckMs: { median: median(served), max: Math.max(0, ...served) },
        journalRecords: readLeases(stateDir).length,
      };
      mkdirSync(join(import.meta.dirname, "..", "..", "test-results"), { recursive: true });
      writeFileSync(
        join(import.meta.dirname, "..", "..", "test-results", "kill-loop.json"),
        `${JSON.stringify({ summary, cycles }, null, 2)}\n`,
      );
      console.log(`kill-loop: ${JSON.stringify(summary)}`);
      expect(summary.acksSeen).toBeGreaterThan(CYCLES * 10);
      // Every cycle's kill landed while ACKs were flowing (a full pool would test nothing).
      expect(cycles.filter((c) => c.acks === 0).length).toBeLessThanOrEqual(Math.floor(CYCLES / 10));
      expect(summary.leasesLost).toBe(0);
    },
    CYCLES * 30_000,
  );
});
