/**
 * Crash safety: kill -9 the server during a flood (perfdhcp plus a scripted client that records every
 * ACK it receives), restart it on the same state directory, and check the journal against the ACKs:
 * every ACKed lease is there, no address has two owners, no client holds two addresses, and the
 * restarted server does not hand an ACKed address to anyone else.
 *   nbdh-cs [nbdh-k0 10.81.0.1/16] ── [nbdh-k1 10.81.0.2/16] nbdh-cc   (scripted flood + perfdhcp)
 */
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readLeases } from "../../src/dhcp/leases.js";
import { commandsAvailable, isRoot, resourceAvailable } from "../support/require.js";
import { buildFixtures, clientJs, JsonLines, Lab, runClient, startServer, tempDir } from "./helpers/netns.js";

const ready = resourceAvailable("root (network namespaces)", isRoot()) && commandsAvailable("ip", "perfdhcp");

describe.runIf(ready)("lease journal survives kill -9 during a flood", () => {
  const lab = new Lab();
  const dir = tempDir("nbdh-crash-");
  const stateDir = join(dir, "state");
  const spec = {
    stateDir,
    logLevel: "warn",
    nextServer: "10.81.0.1",
    // compact often, so that kills also land during rotations and compactions
    leaseStore: { compactAfter: 300 },
    dhcp: {
      mode: "full",
      interfaces: ["nbdh-k0"],
      subnets: [
        { subnet: "10.81.0.0/16", range: { start: "10.81.1.0", end: "10.81.200.255" }, lease_time: 3600 },
      ],
    },
  };

  beforeAll(() => {
    buildFixtures();
    lab.ns("nbdh-cs");
    lab.ns("nbdh-cc");
    lab.link("nbdh-cs", "nbdh-k0", "10.81.0.1/16", "nbdh-cc", "nbdh-k1", "10.81.0.2/16");
  });
  afterAll(() => lab.cleanup());

  const acked = new Map<string, string>();

  // Killed once a number of ACKs have been seen (not after a fixed time: on a busy machine that could
  // land before the first ACK), while DISCOVERs, REQUESTs and journal batches are still in flight.
  it.each([25, 400])("kill -9 after %i ACKs of the flood, restart, compare", async (killAfterAcks) => {
    const { child, out } = startServer(lab, "nbdh-cs", spec, dir);
    await out.waitFor((l) => l.event === "ready", 15_000);
    // The scripted client (port 68, SO_REUSEADDR) starts first; perfdhcp adds load beside it.
    const flood = lab.spawn("nbdh-cc", process.execPath, [
      clientJs,
      JSON.stringify({
        iface: "nbdh-k1",
        mac: "02:00:00:00:00:00",
        mode: "crash-flood",
        clients: 1500,
        paceMs: 20,
        timeoutMs: 1500,
        macSeed: killAfterAcks,
      }),
    ]);
    const floodOut = new JsonLines(flood);
    await floodOut.waitFor((l) => l.event === "started");
    const perf = lab.spawn("nbdh-cc", "perfdhcp", [
      "-4",
      "-l",
      "nbdh-k1",
      "-r",
      "800",
      "-R",
      "30000",
      "-p",
      "4",
    ]);
    let perfOut = "";
    perf.stdout?.on("data", (d) => {
      perfOut += d.toString();
    });
    const deadline = Date.now() + 30_000;
    while (floodOut.lines.filter((l) => l.event === "ack").length < killAfterAcks && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 5));
    child.kill("SIGKILL");
    await new Promise((r) => child.on("exit", r));
    await new Promise<void>((r) => (flood.exitCode !== null ? r() : flood.on("exit", () => r())));
    await new Promise<void>((r) => (perf.exitCode !== null ? r() : perf.on("exit", () => r())));
    for (const l of floodOut.lines) if (l.event === "ack") acked.set(l.mac as string, l.address as string);
    expect(acked.size).toBeGreaterThan(0);
    // the scripted flood was still going when the server died: some of its clients got no ACK
    expect(floodOut.lines.filter((l) => l.event === "ack").length).toBeLessThan(1500);
    expect(perfOut).toMatch(/sent packets: [1-9]/);

    const leases = readLeases(stateDir);
    const bound = leases.filter((l) => l.state === "bound");
    const byAddress = new Map(bound.map((l) => [l.address, l.mac]));
    for (const [mac, address] of acked) expect(byAddress.get(address), `${mac} ACKed ${address}`).toBe(mac);
    const macs = bound.map((l) => l.mac);
    expect(new Set(macs).size).toBe(macs.length);

    // Restarted, the server keeps every ACKed binding: a new client never gets one of those addresses.
    const again = startServer(lab, "nbdh-cs", spec, dir);
    await again.out.waitFor((l) => l.event === "ready", 15_000);
    const fresh = runClient(lab, "nbdh-cc", {
      iface: "nbdh-k1",
      mac: `02:fe:00:00:00:${(killAfterAcks % 256).toString(16).padStart(2, "0")}`,
      mode: "dora",
    });
    const ack = fresh.find((l) => l.event === "reply" && l.type === 5) as { yiaddr: string } | undefined;
    expect(ack?.yiaddr).toMatch(/^10\.81\./);
    expect([...acked.values()]).not.toContain(ack?.yiaddr);
    // and an ACKed client renewing (INIT-REBOOT) gets its own address back
    const [someMac, someAddress] = [...acked.entries()][0] as [string, string];
    const reboot = runClient(lab, "nbdh-cc", {
      iface: "nbdh-k1",
      mac: someMac,
      mode: "request",
      requested: someAddress,
      broadcastFlag: true,
    });
    expect(reboot.find((l) => l.event === "reply")).toMatchObject({ type: 5, yiaddr: someAddress });
    again.child.kill("SIGTERM");
    await new Promise((r) => again.child.on("exit", r));
  });
});
