/**
 * The per-MAC admission in front of the DHCP engine (native/nbdh_intake.c, the same code the intake
 * thread runs), on a clock the test moves.
 */
import { describe, expect, it } from "vitest";
import { createMacGuard } from "../../src/dhcp/intake.js";
import { emptyPacket, encodePacket, macToChaddr } from "../../src/dhcp/packet.js";

function discover(mac: string): Buffer {
  const p = emptyPacket();
  p.chaddr = macToChaddr(mac);
  p.options.set(53, Buffer.from([1]));
  const enc = encodePacket(p);
  if (!enc.ok) throw new Error(enc.error);
  return enc.buffer;
}

function guard(perMacPerSecond = 4, burst = 8, maxTracked?: number) {
  let t = 1_000_000;
  const native = createMacGuard({ perMacPerSecond, burst }, maxTracked);
  const g = { admit: (msg: Buffer) => native.admit(msg, t), summary: () => native.summary(), native };
  return { g, advance: (ms: number) => (t += ms) };
}

const A = discover("52:54:00:00:00:0a");
const B = discover("52:54:00:00:00:0b");

describe("DHCP flood guard", () => {
  it("admits a burst from one MAC, then holds it to its rate", () => {
    const { g, advance } = guard(4, 8);
    const first = Array.from({ length: 20 }, () => g.admit(A));
    expect(first.filter(Boolean)).toHaveLength(8);
    expect(first.slice(0, 8).every(Boolean)).toBe(true);
    advance(1000); // four more tokens
    expect(Array.from({ length: 10 }, () => g.admit(A)).filter(Boolean)).toHaveLength(4);
    advance(60_000); // a quiet minute refills the burst, no more
    expect(Array.from({ length: 20 }, () => g.admit(A)).filter(Boolean)).toHaveLength(8);
  });

  it("one MAC's flood does not take another's share", () => {
    const { g } = guard(4, 8);
    for (let i = 0; i < 1000; i++) g.admit(A);
    expect(Array.from({ length: 8 }, () => g.admit(B)).every(Boolean)).toBe(true);
  });

  it("reports what it dropped once per summary, with the worst MAC, then starts over", () => {
    const { g } = guard(4, 2);
    for (let i = 0; i < 12; i++) g.admit(A);
    for (let i = 0; i < 5; i++) g.admit(B);
    expect(g.summary()).toEqual({ dropped: 13, macs: 2, top: { mac: "52:54:00:00:00:0a", dropped: 10 } });
    expect(g.summary()).toBeUndefined();
  });

  it("is off at rate 0, and leaves datagrams too short for a chaddr to the decoder", () => {
    const off = guard(0, 1).g;
    expect(Array.from({ length: 100 }, () => off.admit(A)).every(Boolean)).toBe(true);
    const on = guard(4, 1).g;
    const short = Buffer.alloc(20);
    expect(Array.from({ length: 5 }, () => on.admit(short)).every(Boolean)).toBe(true);
  });

  it("a flood of fresh MACs only fills the table up to its cap", () => {
    const { g } = guard(4, 1, 100);
    for (let i = 0; i < 1000; i++) {
      const mac = `02:00:00:00:${((i >> 8) & 0xff).toString(16).padStart(2, "0")}:${(i & 0xff).toString(16).padStart(2, "0")}`;
      expect(g.admit(discover(mac))).toBe(true);
    }
    expect(g.native.tracked()).toBeLessThanOrEqual(100);
    expect(g.native.tracked()).toBeGreaterThan(0);
  });
});
