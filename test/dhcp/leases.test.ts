import { appendFileSync, existsSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { type Lease, LeaseStore, leaseFiles, readLeases } from "../../src/dhcp/leases.js";
import { tempDir } from "./helpers/netns.js";

const logger = pino({ level: "silent" });
const lease = (
  i: number,
  mac = `02:00:00:00:${(i >> 8).toString(16).padStart(2, "0")}:${(i & 255).toString(16).padStart(2, "0")}`,
): Lease => ({
  address: `10.0.${i >> 8}.${i & 255}`,
  mac,
  expires: Date.now() + 3_600_000,
  state: "bound",
  hostname: `host${i}`,
});

describe("lease store", () => {
  it("group-commits every record of one event-loop turn with one write and one fdatasync", async () => {
    const dir = tempDir("nbdh-leases-");
    const store = await LeaseStore.open(dir, logger);
    const all = Array.from({ length: 200 }, (_, i) => store.commit([lease(i)]));
    await Promise.all(all);
    expect(store.stats.records).toBe(200);
    expect(store.stats.batches).toBe(1);
    await store.close();
    expect(readLeases(dir)).toHaveLength(200);
  });

  it("keeps the last record per address, so one address never has two owners", async () => {
    const dir = tempDir("nbdh-leases-");
    const store = await LeaseStore.open(dir, logger);
    await store.commit([lease(1, "02:00:00:00:00:aa")]);
    await store.commit([{ ...lease(1, "02:00:00:00:00:aa"), state: "free" }]);
    await store.commit([lease(1, "02:00:00:00:00:bb")]);
    await store.close();
    const leases = readLeases(dir);
    expect(leases).toHaveLength(1);
    expect(leases[0]?.mac).toBe("02:00:00:00:00:bb");
    const reopened = await LeaseStore.open(dir, logger);
    expect(reopened.byMac("02:00:00:00:00:bb")?.address).toBe("10.0.0.1");
    expect(reopened.byMac("02:00:00:00:00:aa")).toBeUndefined();
    await reopened.close();
  });

  it("cuts a torn tail (never fsynced, never ACKed) and appends cleanly after it", async () => {
    const dir = tempDir("nbdh-leases-");
    const store = await LeaseStore.open(dir, logger);
    await store.commit([lease(1)]);
    await store.close();
    appendFileSync(join(dir, leaseFiles.JOURNAL), "10.0.0.2,02:00:00:00:00:02,17");
    const again = await LeaseStore.open(dir, logger);
    expect(again.get("10.0.0.2")).toBeUndefined();
    await again.commit([lease(3)]);
    await again.close();
    expect(
      readLeases(dir)
        .map((l) => l.address)
        .sort(),
    ).toEqual(["10.0.0.1", "10.0.0.3"]);
    expect(readFileSync(join(dir, leaseFiles.JOURNAL), "latin1").split("\n").filter(Boolean)).toHaveLength(2);
  });

  it("compacts in the background (journal rotated to .2, snapshot .completed) without losing records", async () => {
    const dir = tempDir("nbdh-leases-");
    const store = await LeaseStore.open(dir, logger, { compactAfter: 50 });
    for (let round = 0; round < 5; round++) {
      await Promise.all(Array.from({ length: 40 }, (_, i) => store.commit([lease(i + round * 10)])));
    }
    await store.close();
    expect(store.stats.compactions).toBeGreaterThan(0);
    expect(existsSync(join(dir, leaseFiles.COMPLETED))).toBe(true);
    expect(existsSync(join(dir, leaseFiles.ROTATED))).toBe(false);
    expect(readLeases(dir)).toHaveLength(80);
  });

  it("finishes a compaction interrupted by a crash (a .2 file left behind)", async () => {
    const dir = tempDir("nbdh-leases-");
    const store = await LeaseStore.open(dir, logger);
    await store.commit([lease(1), lease(2)]);
    await store.close();
    renameSync(join(dir, leaseFiles.JOURNAL), join(dir, leaseFiles.ROTATED));
    writeFileSync(join(dir, leaseFiles.JOURNAL), `${"10.0.0.3,02:00:00:00:00:03,99999999999999,b,\n"}`);
    const again = await LeaseStore.open(dir, logger);
    expect(
      again
        .all()
        .map((l) => l.address)
        .sort(),
    ).toEqual(["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
    expect(existsSync(join(dir, leaseFiles.ROTATED))).toBe(false);
    await again.close();
  });
});
