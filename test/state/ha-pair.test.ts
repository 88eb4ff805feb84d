/**
 * An HA pair on one real PostgreSQL: two DHCP servers in two namespaces on one bridge, clients in a
 * third, a scripted flood that records every ACK (with the server that sent it) and perfdhcp beside it.
 *   nbha-a [nbha-a0 10.82.0.1] ─┐
 *                               ├─ nbha-br 10.82.0.3 (nbha-c: flood, perfdhcp, renewing clients)
 *   nbha-b [nbha-b0 10.82.0.2] ─┘
 * Checked against the database: no address has two owners, every ACK is a committed lease, kill -9 of
 * one server hands its clients to the other (keeping their addresses), a PostgreSQL restart loses no
 * ACKed lease, and hot-standby's standby takes over when the primary stops.
 */
import type { ChildProcess } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HaScope } from "../../src/ha/scope.js";
import {
  buildFixtures,
  clientJs,
  JsonLines,
  Lab,
  runClient,
  startServer,
  tempDir,
} from "../dhcp/helpers/netns.js";
import { postgresAvailable, TestPostgres } from "../support/postgres.js";
import { commandsAvailable, isRoot, resourceAvailable } from "../support/require.js";

const ready =
  resourceAvailable("root (network namespaces)", isRoot()) &&
  commandsAvailable("ip", "perfdhcp") &&
  postgresAvailable();

const FAILOVER_MS = 2000;
const HEARTBEAT_MS = 250;
const ADDRESS = { a: "10.82.0.1", b: "10.82.0.2" } as const;

interface Ack {
  mac: string;
  address: string;
  server: string;
}

describe.runIf(ready)("HA pair on PostgreSQL", () => {
  const lab = new Lab();
  const dir = tempDir("nbha-");
  let pg: TestPostgres;
  const running: { child: ChildProcess; out: JsonLines }[] = [];

  function serverSpec(side: "a" | "b", mode: "load-balancing" | "hot-standby") {
    const roles = mode === "load-balancing" ? ["primary", "secondary"] : ["primary", "standby"];
    return {
      stateDir: `${dir}/state-${side}`,
      logLevel: "warn",
      nextServer: ADDRESS[side],
      state: { backend: "postgres", url: pg.url, commit_timeout_ms: 2000 },
      ha: {
        mode,
        this: `appliance-${side}`,
        peers: [
          { name: "appliance-a", role: roles[0] },
          { name: "appliance-b", role: roles[1] },
        ],
        failover_ms: FAILOVER_MS,
        heartbeat_ms: HEARTBEAT_MS,
      },
      dhcp: {
        mode: "full",
        interfaces: [`nbha-${side}0`],
        rate_limit: { per_mac_per_second: 50, burst: 100 },
        subnets: [
          { subnet: "10.82.0.0/16", range: { start: "10.82.1.0", end: "10.82.40.255" }, lease_time: 3600 },
        ],
      },
    };
  }

  async function start(side: "a" | "b", mode: "load-balancing" | "hot-standby") {
    const s = startServer(lab, `nbha-${side}`, serverSpec(side, mode), dir);
    await s.out.waitFor((l) => l.event === "ready", 20_000);
    running.push(s);
    return s;
  }

  async function stop(s: { child: ChildProcess }, signal: NodeJS.Signals): Promise<void> {
    if (s.child.exitCode !== null || s.child.signalCode !== null) return;
    const exited = new Promise((r) => s.child.on("exit", r));
    s.child.kill(signal);
    await exited;
  }

  function flood(seed: number, clients: number, paceMs = 20): JsonLines & { child: ChildProcess } {
    const child = lab.spawn("nbha-c", process.execPath, [
      clientJs,
      JSON.stringify({
        iface: "nbha-br",
        mac: "02:00:00:00:00:00",
        mode: "crash-flood",
        clients,
        paceMs,
        timeoutMs: 3000,
        macSeed: seed,
      }),
    ]);
    return Object.assign(new JsonLines(child), { child });
  }

  /** Each has read the other's heartbeat: until then a server that started first serves everyone. */
  const pairUp = (...servers: { out: JsonLines }[]) =>
    Promise.all(
      servers.map((s) =>
        s.out.waitFor((l) => l.msg === "ha: peer is up: serving this appliance's share", 10_000),
      ),
    );

  const exited = (c: ChildProcess) =>
    new Promise<void>((r) => (c.exitCode !== null || c.signalCode !== null ? r() : c.on("exit", () => r())));
  const acksOf = (f: JsonLines): Ack[] => f.lines.filter((l) => l.event === "ack") as unknown as Ack[];

  /** Every ACKed binding is the database's, and no address or MAC is ACKed twice over. */
  function checkAgainstDatabase(acks: Ack[]): Map<string, string> {
    const rows = pg.psql("SELECT host(address)||' '||mac||' '||state||' '||served_by FROM netboot_leases");
    const db = new Map(
      rows
        .split("\n")
        .filter(Boolean)
        .map((l) => {
          const [address, mac, state, by] = l.split(" ") as [string, string, string, string];
          return [address, { mac, state, by }];
        }),
    );
    const ownerOf = new Map<string, string>();
    for (const ack of acks) {
      const other = ownerOf.get(ack.address);
      expect(
        other === undefined || other === ack.mac,
        `${ack.address} ACKed to ${other} and ${ack.mac}`,
      ).toBe(true);
      ownerOf.set(ack.address, ack.mac);
      expect(db.get(ack.address), `${ack.mac} ACKed ${ack.address} by ${ack.server}`).toMatchObject({
        mac: ack.mac,
        state: "b",
      });
    }
    const bound = [...db.values()].filter((r) => r.state === "b").map((r) => r.mac);
    expect(new Set(bound).size).toBe(bound.length);
    return new Map([...db].map(([a, r]) => [a, r.by]));
  }

  beforeAll(() => {
    buildFixtures();
    pg = new TestPostgres();
    pg.init();
    for (const ns of ["nbha-a", "nbha-b", "nbha-c"]) lab.ns(ns);
    lab.link("nbha-a", "nbha-a0", "10.82.0.1/16", "nbha-c", "nbha-pa", undefined);
    lab.link("nbha-b", "nbha-b0", "10.82.0.2/16", "nbha-c", "nbha-pb", undefined);
    lab.exec("nbha-c", "ip", ["link", "add", "nbha-br", "type", "bridge"]);
    for (const port of ["nbha-pa", "nbha-pb"])
      lab.exec("nbha-c", "ip", ["link", "set", port, "master", "nbha-br"]);
    lab.exec("nbha-c", "ip", ["addr", "add", "10.82.0.3/16", "dev", "nbha-br"]);
    lab.exec("nbha-c", "ip", ["link", "set", "nbha-br", "up"]);
  }, 180_000);
  afterAll(async () => {
    for (const s of running) await stop(s, "SIGKILL").catch(() => undefined);
    lab.cleanup();
    pg?.destroy();
  });

  let firstAcks: Ack[] = [];

  it("load-balancing: both answer their share of a flood; no address has two owners", async () => {
    const a = await start("a", "load-balancing");
    const b = await start("b", "load-balancing");
    await pairUp(a, b);
    const f = flood(1, 800);
    const perf = lab.spawn("nbha-c", "perfdhcp", [
      "-4",
      "-l",
      "nbha-br",
      "-r",
      "300",
      "-R",
      "20000",
      "-p",
      "6",
    ]);
    let perfOut = "";
    perf.stdout?.on("data", (d) => (perfOut += d.toString()));
    await Promise.all([exited(f.child), exited(perf)]);
    firstAcks = acksOf(f);
    console.log(
      `load-balancing flood: ${firstAcks.length} of 800 scripted clients ACKed; perfdhcp:\n${perfOut.trim()}`,
    );
    expect(perfOut).toMatch(/received packets: [1-9]/);
    expect(firstAcks.length).toBeGreaterThan(700);
    const byServer = { a: 0, b: 0 };
    for (const ack of firstAcks) byServer[ack.server === ADDRESS.a ? "a" : "b"]++;
    // RFC 3074 buckets split clients about evenly; each server answered only its own.
    expect(byServer.a).toBeGreaterThan(firstAcks.length * 0.35);
    expect(byServer.b).toBeGreaterThan(firstAcks.length * 0.35);
    // ... and each ACK came from the server owning the client's RFC 3074 bucket (the MAC, no option 61).
    for (const ack of firstAcks) {
      const owner = HaScope.bucketOwner(Buffer.from(ack.mac.split(":").map((h) => Number.parseInt(h, 16))));
      expect(ack.server, ack.mac).toBe(owner === 0 ? ADDRESS.a : ADDRESS.b);
    }
    const servedBy = checkAgainstDatabase(firstAcks);
    for (const ack of firstAcks)
      expect(servedBy.get(ack.address)).toBe(ack.server === ADDRESS.a ? "appliance-a" : "appliance-b");
    expect(a.child.exitCode).toBeNull();
    expect(b.child.exitCode).toBeNull();
  }, 120_000);

  it("kill -9 of one server mid-flood: the other takes over its clients, and renewals keep their addresses", async () => {
    const [a, b] = running as [(typeof running)[number], (typeof running)[number]];
    const f = flood(2, 1200, 40);
    while (acksOf(f).length < 150) await new Promise((r) => setTimeout(r, 5));
    const killedAt = Date.now();
    await stop(a, "SIGKILL");
    const takeover = await b.out.waitFor(
      (l) => l.msg === "ha: peer is down: serving all clients",
      FAILOVER_MS * 5,
    );
    const failoverMs = (takeover.time as number) - killedAt;
    console.log(
      `failover: appliance-b serves all clients ${failoverMs} ms after kill -9 (failover_ms ${FAILOVER_MS}, heartbeat ${HEARTBEAT_MS} ms); peer heartbeat age then ${takeover.peerHeartbeatAgeMs} ms`,
    );
    expect(takeover.peerHeartbeatAgeMs as number).toBeGreaterThan(FAILOVER_MS);
    await exited(f.child);
    const acks = acksOf(f);
    const byA = acks.filter((x) => x.server === ADDRESS.a).length;
    const byB = acks.length - byA;
    console.log(`kill flood: ${acks.length} of 1200 ACKed, ${byA} by a before the kill, ${byB} by b`);
    // Clients of a's buckets that DISCOVERed after the takeover were answered by b: more than its half.
    expect(byB).toBeGreaterThan(acks.length * 0.55);
    checkAgainstDatabase([...firstAcks, ...acks]);

    // Clients a had ACKed renew (INIT-REBOOT, broadcast): b confirms the same address from the shared store.
    const ofA = firstAcks.filter((x) => x.server === ADDRESS.a).slice(0, 12);
    expect(ofA.length).toBe(12);
    for (const ack of ofA) {
      const reply = runClient(lab, "nbha-c", {
        iface: "nbha-br",
        mac: ack.mac,
        mode: "request",
        requested: ack.address,
        broadcastFlag: true,
      });
      expect(
        reply.find((l) => l.event === "reply"),
        ack.mac,
      ).toMatchObject({ type: 5, yiaddr: ack.address });
    }
    const moved = pg.psql(
      `SELECT count(*) FROM netboot_leases WHERE served_by = 'appliance-b' AND mac IN (${ofA.map((x) => `'${x.mac}'`).join(",")})`,
    );
    expect(moved).toBe("12");
  }, 120_000);

  it("PostgreSQL restarts under load: no ACK without a committed lease, and the server recovers", async () => {
    const b = running[1] as (typeof running)[number];
    const f = flood(3, 1500, 40);
    while (acksOf(f).length < 80) await new Promise((r) => setTimeout(r, 5));
    pg.stop("fast");
    const stoppedAt = acksOf(f).length;
    await new Promise((r) => setTimeout(r, 2000));
    const duringOutage = acksOf(f).length - stoppedAt;
    pg.start();
    await exited(f.child);
    const acks = acksOf(f);
    console.log(
      `postgres restart: ${acks.length} of 1500 ACKed; ${duringOutage} ACKs arrived in the 2 s outage (sent before it began)`,
    );
    checkAgainstDatabase([...firstAcks, ...acks]);
    // After the restart, a new client gets a lease again (the pool reconnects by itself).
    let ack: Record<string, unknown> | undefined;
    for (let i = 0; i < 20 && !ack; i++) {
      const reply = runClient(lab, "nbha-c", {
        iface: "nbha-br",
        mac: `02:fd:00:00:00:${i.toString(16).padStart(2, "0")}`,
        mode: "dora",
        timeoutMs: 2000,
      });
      ack = reply.find((l) => l.event === "reply" && l.type === 5);
    }
    expect(ack?.yiaddr).toMatch(/^10\.82\./);
    expect(pg.psql(`SELECT mac FROM netboot_leases WHERE address = '${ack?.yiaddr}'`)).toMatch(/^02:fd:/);
    expect(b.out.lines.some((l) => String(l.msg).startsWith("lease database write failed"))).toBe(true);
    await stop(b, "SIGTERM");
  }, 120_000);

  it("hot-standby: only the primary answers; a clean stop hands over at the next heartbeat", async () => {
    const a = await start("a", "hot-standby");
    const b = await start("b", "hot-standby");
    await pairUp(a, b);
    const f = flood(4, 200);
    await exited(f.child);
    const acks = acksOf(f);
    expect(acks.length).toBeGreaterThan(180);
    expect(acks.every((x) => x.server === ADDRESS.a)).toBe(true);
    const stoppedAt = Date.now();
    await stop(a, "SIGTERM");
    const takeover = await b.out.waitFor(
      (l) => l.msg === "ha: peer is down: serving all clients",
      FAILOVER_MS * 3,
    );
    console.log(
      `hot-standby: standby serves ${(takeover.time as number) - stoppedAt} ms after the primary's clean stop`,
    );
    const g = flood(5, 200);
    await exited(g.child);
    const after = acksOf(g);
    expect(after.length).toBeGreaterThan(180);
    expect(after.every((x) => x.server === ADDRESS.b)).toBe(true);
    checkAgainstDatabase([...acks, ...after]);
    await stop(b, "SIGTERM");
  }, 120_000);
});
