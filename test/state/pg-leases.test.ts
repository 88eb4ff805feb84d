/**
 * The PostgreSQL lease store against a real PostgreSQL (initdb + pg_ctl in a temporary directory):
 * migrations, one owner per address under concurrent commits from two stores, the peer's memory
 * following by NOTIFY, and the database going away and coming back.
 */
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Lease, LeaseConflictError } from "../../src/dhcp/lease-types.js";
import { MIGRATIONS, SCHEMA_VERSION } from "../../src/state/migrations.js";
import { PgLeaseStore, readLeasesFromDatabase } from "../../src/state/pg-leases.js";
import { connect, migrate, type Sql } from "../../src/state/postgres.js";
import { postgresAvailable, TestPostgres } from "../support/postgres.js";

const logger = pino({ level: "silent" });
const run = postgresAvailable();
const HOUR = 3_600_000;

async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 20));
  }
}

function bound(address: string, mac: string, expires = Date.now() + HOUR): Lease {
  return { address, mac, expires, state: "bound" };
}

describe.runIf(run)("postgres lease store", () => {
  let pg: TestPostgres;
  const conns: Sql[] = [];
  const open = (name = "test"): Sql => {
    const sql = connect({ url: pg.url, maxConnections: 4, applicationName: name, logger });
    conns.push(sql);
    return sql;
  };

  beforeAll(() => {
    pg = new TestPostgres();
    pg.init();
  }, 120_000);
  afterAll(async () => {
    await Promise.allSettled(conns.map((c) => c.end({ timeout: 1 })));
    pg?.destroy();
  });

  it("migrates an empty database once, even when two appliances start at the same moment", async () => {
    pg.psql("CREATE DATABASE race");
    const url = pg.url.replace("/netboot?", "/race?");
    const a = connect({ url, maxConnections: 2, applicationName: "a", logger });
    const b = connect({ url, maxConnections: 2, applicationName: "b", logger });
    conns.push(a, b);
    const versions = await Promise.all([migrate(a, logger), migrate(b, logger)]);
    expect(versions).toEqual([SCHEMA_VERSION, SCHEMA_VERSION]);
    const rows = await a`SELECT version FROM netboot_schema ORDER BY version`;
    expect(rows.map((r) => r.version)).toEqual(MIGRATIONS.map((m) => m.version));
    expect(await migrate(a, logger)).toBe(SCHEMA_VERSION);
  });

  it("migrates from the previous schema version and keeps its leases", async () => {
    pg.psql("CREATE DATABASE old");
    const sql = connect({
      url: pg.url.replace("/netboot?", "/old?"),
      maxConnections: 2,
      applicationName: "o",
      logger,
    });
    conns.push(sql);
    expect(await migrate(sql, logger, MIGRATIONS, SCHEMA_VERSION - 1)).toBe(SCHEMA_VERSION - 1);
    await sql`INSERT INTO netboot_leases (address, mac, expires_ms, state, hostname)
              VALUES ('10.0.0.5', '52:54:00:00:00:05', 4102444800000, 'b', 'old-host')`;
    expect(await migrate(sql, logger)).toBe(SCHEMA_VERSION);
    const store = await PgLeaseStore.open({ sql, serverName: "a", commitTimeoutMs: 3000, logger });
    expect(store.get("10.0.0.5")).toEqual({
      address: "10.0.0.5",
      mac: "52:54:00:00:00:05",
      expires: 4102444800000,
      state: "bound",
      hostname: "old-host",
    });
    // `netboot leases` reads the same rows without a running server.
    expect(await readLeasesFromDatabase(sql)).toEqual([store.get("10.0.0.5")]);
    await store.close();
  });

  it("refuses a schema newer than the appliance knows", async () => {
    pg.psql("CREATE DATABASE newer");
    const sql = connect({
      url: pg.url.replace("/netboot?", "/newer?"),
      maxConnections: 2,
      applicationName: "n",
      logger,
    });
    conns.push(sql);
    await migrate(sql, logger);
    await sql`INSERT INTO netboot_schema (version, name) VALUES (${SCHEMA_VERSION + 1}, 'future')`;
    await expect(migrate(sql, logger)).rejects.toThrow(/newer than this appliance knows/);
  });

  it("gives one address one owner; the peer learns the owner by NOTIFY", async () => {
    const a = await PgLeaseStore.open({
      sql: await migrated(open("a")),
      serverName: "a",
      commitTimeoutMs: 3000,
      logger,
    });
    const b = await PgLeaseStore.open({ sql: open("b"), serverName: "b", commitTimeoutMs: 3000, logger });
    await a.commit([bound("10.1.0.10", "52:54:00:00:01:01")]);
    await until(() => b.get("10.1.0.10")?.mac === "52:54:00:00:01:01");
    // b has an old view of nothing there (as if the notification were still on its way).
    const err = await b.commit([bound("10.1.0.11", "52:54:00:00:01:02")]).then(() => undefined);
    expect(err).toBeUndefined();
    const conflict = await b.commit([bound("10.1.0.10", "52:54:00:00:01:03")]).catch((e) => e);
    expect(conflict).toBeInstanceOf(LeaseConflictError);
    expect(b.get("10.1.0.10")?.mac).toBe("52:54:00:00:01:01");
    // The holder renewing through the other appliance is its own row: allowed.
    await b.commit([bound("10.1.0.10", "52:54:00:00:01:01", Date.now() + 2 * HOUR)]);
    // An expired lease may go to another client.
    await a.commit([bound("10.1.0.12", "52:54:00:00:01:04", Date.now() - 1)]);
    await b.commit([bound("10.1.0.12", "52:54:00:00:01:05")]);
    // The declining client's own row becomes a quarantine record; another client's does not.
    await a
      .commit([{ address: "10.1.0.11", mac: "", expires: Date.now() + HOUR, state: "declined" }])
      .catch((e) => expect(e).toBeInstanceOf(LeaseConflictError));
    await b.commit([{ address: "10.1.0.11", mac: "", expires: Date.now() + HOUR, state: "declined" }]);
    const rows = pg.psql(
      "SELECT host(address)||' '||mac||' '||state FROM netboot_leases WHERE address << '10.1.0.0/24' ORDER BY address",
    );
    expect(rows.split("\n")).toEqual([
      "10.1.0.10 52:54:00:00:01:01 b",
      "10.1.0.11  d",
      "10.1.0.12 52:54:00:00:01:05 b",
    ]);
    await a.close();
    await b.close();
  });

  it("two stores racing for the same 150 addresses: each address is committed to exactly one MAC", async () => {
    const a = await PgLeaseStore.open({ sql: open("a2"), serverName: "a", commitTimeoutMs: 5000, logger });
    const b = await PgLeaseStore.open({ sql: open("b2"), serverName: "b", commitTimeoutMs: 5000, logger });
    const addresses = Array.from({ length: 150 }, (_, i) => `10.2.${i >> 8}.${i & 255}`);
    const mac = (side: string, i: number) =>
      `52:54:00:${side}:${(i >> 8).toString(16).padStart(2, "0")}:${(i & 255).toString(16).padStart(2, "0")}`;
    const won = new Map<string, string[]>();
    await Promise.all(
      addresses.flatMap((addr, i) =>
        (["a", "b"] as const).map((side) => {
          const store = side === "a" ? a : b;
          const m = mac(side === "a" ? "0a" : "0b", i);
          return store.commit([bound(addr, m)]).then(
            () => won.set(addr, [...(won.get(addr) ?? []), m]),
            (e) => expect(e).toBeInstanceOf(LeaseConflictError),
          );
        }),
      ),
    );
    for (const addr of addresses) expect(won.get(addr)?.length, addr).toBe(1);
    const inDb = pg.psql("SELECT host(address)||' '||mac FROM netboot_leases WHERE address << '10.2.0.0/16'");
    const dbOwner = new Map(inDb.split("\n").map((l) => l.split(" ") as [string, string]));
    for (const addr of addresses) expect(dbOwner.get(addr)).toBe(won.get(addr)?.[0]);
    expect(a.stats.conflicts + b.stats.conflicts).toBe(150);
    await until(() =>
      addresses.every((x) => a.get(x)?.mac === dbOwner.get(x) && b.get(x)?.mac === dbOwner.get(x)),
    );
    await a.close();
    await b.close();
  });

  it("no commit succeeds while PostgreSQL is down; the store recovers and reloads when it returns", async () => {
    const a = await PgLeaseStore.open({ sql: open("a3"), serverName: "a", commitTimeoutMs: 2000, logger });
    const b = await PgLeaseStore.open({ sql: open("b3"), serverName: "b", commitTimeoutMs: 2000, logger });
    await a.commit([bound("10.3.0.1", "52:54:00:00:03:01")]);
    pg.stop("fast");
    const down = await a.commit([bound("10.3.0.2", "52:54:00:00:03:02")]).then(
      () => "committed",
      (e) => e,
    );
    expect(down).toBeInstanceOf(Error);
    expect(a.available).toBe(false);
    expect(a.get("10.3.0.2")).toBeUndefined(); // memory forgot what the database did not take
    expect(a.get("10.3.0.1")?.mac).toBe("52:54:00:00:03:01"); // known leases stay (TFTP, HTTP ownership)
    pg.start();
    // A row written while b's listening session was away reaches b by the reload on reconnect.
    pg.psql(
      "INSERT INTO netboot_leases (address, mac, expires_ms, state) VALUES ('10.3.0.9', '52:54:00:00:03:09', 4102444800000, 'b')",
    );
    let committed = false;
    const end = Date.now() + 20_000;
    while (!committed && Date.now() < end) {
      committed = await a.commit([bound("10.3.0.2", "52:54:00:00:03:02")]).then(
        () => true,
        () => false,
      );
      if (!committed) await new Promise((r) => setTimeout(r, 250));
    }
    expect(committed).toBe(true);
    expect(a.available).toBe(true);
    await until(
      () => b.get("10.3.0.2")?.mac === "52:54:00:00:03:02" && b.get("10.3.0.9") !== undefined,
      20_000,
    );
    expect(pg.psql("SELECT count(*) FROM netboot_leases WHERE address << '10.3.0.0/24'")).toBe("3");
    await a.close();
    await b.close();
  }, 60_000);
});

async function migrated(sql: Sql): Promise<Sql> {
  await migrate(sql, logger);
  return sql;
}
