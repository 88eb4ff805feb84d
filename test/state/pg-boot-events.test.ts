/**
 * Boot events shared through a real PostgreSQL: what one appliance serves reaches its peer's machine state
 * in order, a restart resumes at the persisted cursor without repeating, a malformed row is skipped, and
 * events served while the database is away go out when it returns.
 */
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { BootEvent, DhcpEvent, FileEvent } from "../../src/machines/events.js";
import { PgBootEvents, parseEvent } from "../../src/state/pg-boot-events.js";
import { connect, migrate, type Sql } from "../../src/state/postgres.js";
import { postgresAvailable, TestPostgres } from "../support/postgres.js";

const logger = pino({ level: process.env.TEST_LOG ?? "silent" });

async function until(cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 20));
  }
}

const dhcp = (n: number): DhcpEvent => ({
  kind: "dhcp",
  at: Date.now(),
  mac: `52:54:00:00:00:${n.toString(16).padStart(2, "0")}`,
  message: "discover",
  outcome: "offer",
  client: "firmware",
  ip: `10.0.0.${n}`,
  archCode: 7,
});
const file = (n: number): FileEvent => ({
  kind: "file",
  at: Date.now(),
  protocol: "tftp",
  client: `10.0.0.${n}`,
  file: "x64/shimx64.efi",
  bytes: 1048504,
  ms: 90,
  outcome: "ok",
  blksize: 1468,
  windowsize: 4,
  transferKey: `10.0.0.${n}:1000 x64/shimx64.efi`,
});

describe.runIf(postgresAvailable())("boot events shared on postgres", () => {
  let pg: TestPostgres;
  const conns: Sql[] = [];
  const open = (): Sql => {
    const sql = connect({ url: pg.url, maxConnections: 2, applicationName: "events-test", logger });
    conns.push(sql);
    return sql;
  };
  const feed = (sql: Sql, serverName: string) => new PgBootEvents({ sql: () => sql, serverName, logger });

  beforeAll(async () => {
    pg = new TestPostgres();
    pg.init();
    await migrate(open(), logger);
  }, 120_000);
  afterAll(async () => {
    await Promise.allSettled(conns.map((c) => c.end({ timeout: 1 })));
    pg?.destroy();
  });

  it("the peer receives what one appliance served, in order, without its local transfer keys", async () => {
    const a = feed(open(), "a");
    const b = feed(open(), "b");
    const atA: BootEvent[] = [];
    const atB: BootEvent[] = [];
    await a.start(0, (e) => atA.push(e));
    await b.start(0, (e) => atB.push(e));
    const sent: BootEvent[] = [];
    for (let i = 1; i <= 120; i++) sent.push(i % 2 ? dhcp(i) : file(i));
    for (const e of sent) a.publish(e);
    await until(() => atB.length === sent.length);
    expect(atB.map((e) => (e.kind === "dhcp" ? e.ip : e.client))).toEqual(
      sent.map((e) => (e.kind === "dhcp" ? e.ip : e.client)),
    );
    expect(atB.some((e) => e.kind === "file" && e.transferKey !== undefined)).toBe(false);
    // Nobody is told its own events back.
    expect(atA).toEqual([]);
    expect(pg.psql("SELECT count(*) FROM netboot_boot_events WHERE served_by = 'a'")).toBe("120");
    const cursor = b.cursor;
    await b.stop();

    // b restarts at its cursor: it gets what a served meanwhile, and nothing twice.
    a.publish(dhcp(200));
    await until(() => Number(pg.psql("SELECT count(*) FROM netboot_boot_events")) === 121);
    // A row another process wrote badly is skipped, and the next one still arrives.
    pg.psql(
      `INSERT INTO netboot_boot_events (served_by, at_ms, event) VALUES ('a', ${Date.now()}, '{"kind":"dhcp","at":1,"mac":"nope"}')`,
    );
    a.publish(dhcp(201));
    const again: BootEvent[] = [];
    const b2 = feed(open(), "b");
    await b2.start(cursor, (e) => again.push(e));
    await until(() => again.length === 2);
    expect(again.map((e) => (e as DhcpEvent).ip)).toEqual(["10.0.0.200", "10.0.0.201"]);
    expect(b2.stats.malformed).toBe(1);
    await a.stop();
    await b2.stop();
  });

  it("events served while the database is down are sent once it is back", async () => {
    const a = feed(open(), "a2");
    const b = feed(open(), "b2");
    const atB: BootEvent[] = [];
    // From now on: the first test's rows are not this one's.
    const now = Number(pg.psql("SELECT coalesce(max(id), 0) FROM netboot_boot_events"));
    await a.start(now, () => undefined);
    await b.start(now, (e) => atB.push(e));
    pg.stop("immediate");
    try {
      for (let i = 1; i <= 5; i++) a.publish(dhcp(i));
      await new Promise((r) => setTimeout(r, 1500));
      expect(atB).toEqual([]);
    } finally {
      pg.start();
    }
    await until(() => atB.length === 5, 20_000);
    expect(atB.map((e) => (e as DhcpEvent).ip)).toEqual([1, 2, 3, 4, 5].map((i) => `10.0.0.${i}`));
    await a.stop();
    await b.stop();
  }, 60_000);

  it("parses only well-formed events", () => {
    expect(parseEvent(JSON.stringify(dhcp(1)))).toMatchObject({ kind: "dhcp", ip: "10.0.0.1" });
    const { transferKey: _key, ...shared } = file(2);
    expect(parseEvent(JSON.stringify(shared))).toMatchObject({ kind: "file", client: "10.0.0.2" });
    expect(parseEvent(JSON.stringify(file(2)))).toBeUndefined();
    expect(parseEvent(JSON.stringify({ ...dhcp(1), client: "router" }))).toBeUndefined();
    expect(
      parseEvent(JSON.stringify({ ...file(2), transferKey: undefined, outcome: "exploded" })),
    ).toBeUndefined();
    expect(parseEvent(JSON.stringify({ ...dhcp(1), at: "yesterday" }))).toBeUndefined();
    expect(parseEvent("not json")).toBeUndefined();
    expect(parseEvent(JSON.stringify({ ...dhcp(1), file: "x".repeat(5000) }))).toBeUndefined();
  });
});
