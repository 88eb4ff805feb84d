/** Who answers in a pair (pure): RFC 3074 buckets, Kea's set of split message types, takeover. */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { type HaConfig, haConfigSchema } from "../../src/ha/config.js";
import { loadBalanceHash } from "../../src/ha/lb-hash.js";
import { HaScope } from "../../src/ha/scope.js";

function pair(mode: HaConfig["mode"], me: string): HaConfig {
  const second = mode === "load-balancing" ? "secondary" : "standby";
  return haConfigSchema.parse({
    mode,
    this: me,
    peers: [
      { name: "a", role: "primary" },
      { name: "b", role: second },
    ],
  });
}

describe("RFC 3074 hash", () => {
  it("follows the RFC's loadb_p_hash on hand-computed keys", () => {
    expect(loadBalanceHash(new Uint8Array([]))).toBe(0);
    // len 1: hash = MIX[1 ^ 0x00] = MIX[1] = 175; MIX[1 ^ 0x01] = MIX[0] = 251
    expect(loadBalanceHash(new Uint8Array([0x00]))).toBe(175);
    expect(loadBalanceHash(new Uint8Array([0x01]))).toBe(251);
    // len 2, walked from the end: MIX[2 ^ 0] = 119, then MIX[119 ^ 0] = MIX[119] = 150
    expect(loadBalanceHash(new Uint8Array([0x00, 0x00]))).toBe(150);
  });

  it("splits random MACs about evenly between the two servers", () => {
    const counts = [0, 0];
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 6, maxLength: 6 }), (mac) => {
        const owner = HaScope.bucketOwner(mac);
        counts[owner] = (counts[owner] ?? 0) + 1;
      }),
      { numRuns: 4000, seed: 7 },
    );
    expect(Math.min(...counts) / 4000).toBeGreaterThan(0.45);
  });
});

describe("HaScope", () => {
  const mac = (b: number) => new Uint8Array([0x52, 0x54, 0, 0, 0, b]);

  it("load-balancing: exactly one of the pair answers each split message while both are up", () => {
    const a = new HaScope(pair("load-balancing", "a"));
    const b = new HaScope(pair("load-balancing", "b"));
    for (let i = 0; i < 256; i++)
      for (const type of [1, 3, 4, 7, 8])
        expect(a.serves(type, mac(i), true)).not.toBe(b.serves(type, mac(i), true));
  });

  it("load-balancing: the survivor answers everyone while the peer is down", () => {
    const b = new HaScope(pair("load-balancing", "b"));
    for (let i = 0; i < 64; i++) expect(b.serves(1, mac(i), false)).toBe(true);
  });

  it("hot-standby: the standby is silent until the primary is down", () => {
    const a = new HaScope(pair("hot-standby", "a"));
    const b = new HaScope(pair("hot-standby", "b"));
    expect(a.serves(1, mac(1), true)).toBe(true);
    expect(b.serves(1, mac(1), true)).toBe(false);
    expect(b.serves(3, mac(1), false)).toBe(true);
  });

  it("answers types outside the split (as Kea's QueryFilter)", () => {
    const b = new HaScope(pair("hot-standby", "b"));
    expect(b.serves(2, mac(1), true)).toBe(true);
  });
});

describe("ha config", () => {
  const base = {
    mode: "load-balancing",
    this: "a",
    peers: [
      { name: "a", role: "primary" },
      { name: "b", role: "secondary" },
    ],
  };
  const errors = (raw: unknown) => {
    const r = haConfigSchema.safeParse(raw);
    return r.success ? [] : r.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`);
  };
  it("accepts a consistent pair", () => expect(errors(base)).toEqual([]));
  it("refuses inconsistent pairs with a clear message", () => {
    expect(errors({ ...base, this: "c" })).toEqual(["this: c is not one of the peers (a, b)"]);
    expect(errors({ ...base, mode: "hot-standby" })).toEqual([
      "peers: hot-standby needs one primary and one standby, not primary and secondary",
    ]);
    expect(
      errors({
        ...base,
        peers: [
          { name: "a", role: "primary" },
          { name: "a", role: "secondary" },
        ],
      }),
    ).toEqual(["peers: peer names repeat: a, a"]);
    expect(errors({ ...base, failover_ms: 1000, heartbeat_ms: 600 })).toEqual([
      "heartbeat_ms: 600 ms is more than half of failover_ms (1000): one late beat would fail over",
    ]);
  });
});
