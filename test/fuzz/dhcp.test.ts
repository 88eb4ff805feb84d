/** Fuzzing the DHCP codec and engine: never throws, round-trips, and keeps one owner per address. */
import { mkdtempSync, rmSync } from "node:fs";
import { join } from "node:path";
import fc from "fast-check";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { makeBootPolicy } from "../../src/dhcp/boot-policy.js";
import { dhcpConfigSchema } from "../../src/dhcp/config.js";
import { DhcpEngine, type ExchangeContext } from "../../src/dhcp/engine.js";
import { LeaseStore } from "../../src/dhcp/leases.js";
import { enc, getU8, intToIp, MessageType, Opt } from "../../src/dhcp/options.js";
import {
  type DhcpPacket,
  decodePacket,
  emptyPacket,
  encodePacket,
  macOf,
  macToChaddr,
} from "../../src/dhcp/packet.js";
import { FUZZ_RUNS, fuzz, fuzzTimeout } from "./harness.js";

const logger = pino({ level: "silent" });
const ip = fc.integer({ min: 0, max: 0xffffffff }).map((n) => intToIp(n >>> 0));
const latin1 = (max: number) =>
  fc.array(fc.integer({ min: 1, max: 255 }), { maxLength: max }).map((a) => String.fromCharCode(...a));

/** Any option except Pad, End and Overload (which the codec owns), with any bytes. */
const options = (maxTotal: number) =>
  fc
    .uniqueArray(
      fc.tuple(
        fc.integer({ min: 1, max: 254 }).filter((c) => c !== Opt.Overload),
        fc.uint8Array({ maxLength: 40 }),
      ),
      { selector: ([code]) => code, maxLength: Math.max(1, Math.floor(maxTotal / 42)) },
    )
    .map((list) => new Map(list.map(([c, v]) => [c, Buffer.from(v)])));

const packet = (maxOptions: number): fc.Arbitrary<DhcpPacket> =>
  fc.record({
    op: fc.constantFrom(1, 2),
    htype: fc.integer({ min: 0, max: 255 }),
    hlen: fc.integer({ min: 0, max: 16 }),
    hops: fc.integer({ min: 0, max: 255 }),
    xid: fc.integer({ min: 0, max: 0xffffffff }).map((n) => n >>> 0),
    secs: fc.integer({ min: 0, max: 0xffff }),
    flags: fc.integer({ min: 0, max: 0xffff }),
    ciaddr: ip,
    yiaddr: ip,
    siaddr: ip,
    giaddr: ip,
    chaddr: fc.uint8Array({ minLength: 16, maxLength: 16 }).map((b) => Buffer.from(b)),
    sname: latin1(63),
    file: latin1(127),
    options: options(maxOptions),
  });

/** A valid DISCOVER to mutate: most random bytes are rejected at the cookie, mutations go deeper. */
function seedPacket(): Buffer {
  const p = emptyPacket();
  p.chaddr = macToChaddr("52:54:00:12:34:56");
  p.options.set(Opt.MessageType, enc.u8(MessageType.Discover));
  p.options.set(Opt.VendorClass, enc.string("PXEClient:Arch:00007:UNDI:003016"));
  p.options.set(Opt.ClientArch, Buffer.from([0, 7]));
  p.options.set(Opt.ParameterRequestList, Buffer.from([1, 3, 43, 60, 66, 67, 93, 97]));
  const r = encodePacket(p);
  if (!r.ok) throw new Error(r.error);
  return r.buffer;
}

const mutated = fc
  .array(fc.tuple(fc.nat({ max: 599 }), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 12 })
  .chain((edits) =>
    fc.nat({ max: 700 }).map((cut) => {
      const b = Buffer.concat([seedPacket(), Buffer.alloc(300)]);
      for (const [at, value] of edits) b[at] = value;
      return b.subarray(0, Math.max(0, Math.min(b.length, 240 + cut)));
    }),
  );

describe("fuzz: DHCP codec", () => {
  it(
    "decodes any datagram without throwing (random bytes and mutations of a real DISCOVER)",
    async () => {
      const record = await fuzz(
        "dhcp-decode",
        fc.property(
          fc.oneof(
            fc.uint8Array({ maxLength: 1500 }).map((a) => Buffer.from(a)),
            mutated,
          ),
          (buf) => {
            const r = decodePacket(buf);
            expect(typeof r.ok).toBe("boolean");
            if (!r.ok) expect(typeof r.error).toBe("string");
          },
        ),
      );
      expect(record.runs).toBe(FUZZ_RUNS);
    },
    fuzzTimeout(0.05),
  );

  it(
    "what is encoded decodes back (options spilling into file/sname included)",
    async () => {
      await fuzz(
        "dhcp-roundtrip",
        fc.property(
          fc.oneof(
            packet(300),
            packet(1200).map((p) => ({ ...p, sname: "", file: "" })),
          ),
          (p) => {
            const encoded = encodePacket(p, { maxMessageSize: 1500 });
            if (!encoded.ok) return; // too large for 1500 bytes: refused, not truncated
            const d = decodePacket(encoded.buffer);
            expect(d.ok).toBe(true);
            if (!d.ok) return;
            const { options: got, sname, file, ...header } = d.packet;
            const { options: want, sname: wantSname, file: wantFile, ...wantHeader } = p;
            expect(header).toEqual(wantHeader);
            expect([...got.entries()].sort(([a], [b]) => a - b)).toEqual(
              [...want.entries()].sort(([a], [b]) => a - b),
            );
            if (got.size === want.size && !encoded.buffer.includes(Buffer.from([Opt.Overload, 1]))) {
              expect(sname).toBe(wantSname);
              expect(file).toBe(wantFile);
            }
          },
        ),
      );
    },
    fuzzTimeout(0.1),
  );
});

const SERVER = "10.0.0.1";
const ctx: ExchangeContext = {
  iface: "eth1",
  serverAddress: SERVER,
  localPort: 67,
  from: { address: "0.0.0.0", port: 68 },
};
const MACS = ["02:00:00:00:00:01", "02:00:00:00:00:02", "02:00:00:00:00:03", "02:00:00:00:00:04"];
const ADDRESSES = ["10.0.0.10", "10.0.0.11", "10.0.0.12", "10.0.0.50", "10.0.1.7", "0.0.0.0"];

/** A client's message as a state machine might send it, or a forged or broken one. */
const message = fc.record({
  type: fc.integer({ min: 0, max: 9 }),
  mac: fc.constantFrom(...MACS),
  requested: fc.option(fc.constantFrom(...ADDRESSES), { nil: undefined }),
  serverId: fc.option(fc.constantFrom(SERVER, "10.0.0.2"), { nil: undefined }),
  ciaddr: fc.constantFrom(...ADDRESSES),
  pxe: fc.boolean(),
  /** A REQUEST for the address last offered to this MAC, as a real client in SELECTING sends. */
  followOffer: fc.boolean(),
  garbage: fc.option(fc.uint8Array({ maxLength: 64 }), { nil: undefined }),
});

type Message = typeof message extends fc.Arbitrary<infer T> ? T : never;

function build(m: Message, offered: Map<string, string>): Buffer {
  const p = emptyPacket();
  const offer = offered.get(m.mac);
  if (m.followOffer && offer)
    m = { ...m, type: MessageType.Request, requested: offer, serverId: SERVER, garbage: undefined };
  p.xid = 1;
  p.chaddr = macToChaddr(m.mac);
  p.ciaddr = m.ciaddr;
  if (m.type > 0) p.options.set(Opt.MessageType, enc.u8(m.type));
  if (m.requested) p.options.set(Opt.RequestedAddress, enc.ip(m.requested));
  if (m.serverId) p.options.set(Opt.ServerId, enc.ip(m.serverId));
  if (m.pxe) {
    p.options.set(Opt.VendorClass, enc.string("PXEClient:Arch:00007:UNDI:003016"));
    p.options.set(Opt.ClientArch, Buffer.from([0, 7]));
  }
  const r = encodePacket(p);
  if (!r.ok) throw new Error(r.error);
  return m.garbage
    ? Buffer.concat([r.buffer.subarray(0, 240 + (m.garbage.length % 20)), Buffer.from(m.garbage)])
    : r.buffer;
}

describe("fuzz: DHCP engine", () => {
  it(
    "any sequence of messages: never throws, every ACK is the client's stored lease, no MAC holds two",
    async () => {
      const shm = mkdtempSync(join("/dev/shm", "nbfz-"));
      let acks = 0;
      try {
        await fuzz(
          "dhcp-engine",
          fc.asyncProperty(fc.array(message, { minLength: 1, maxLength: 24 }), async (messages) => {
            const dir = mkdtempSync(join(shm, "s-"));
            const store = await LeaseStore.open(dir, logger);
            const engine = new DhcpEngine({
              config: dhcpConfigSchema.parse({
                mode: "full",
                interfaces: ["eth1"],
                subnets: [
                  {
                    subnet: "10.0.0.0/24",
                    interface: "eth1",
                    range: { start: "10.0.0.10", end: "10.0.0.12" },
                  },
                ],
                reservations: [{ mac: MACS[3], address: "10.0.0.50" }],
              }),
              store,
              bootPolicy: makeBootPolicy({
                loaders: { x64: { shim: "x64/shimx64.efi" } },
                nextServer: SERVER,
              }),
              logger,
            });
            const offered = new Map<string, string>();
            try {
              for (const m of messages) {
                const out = await engine.handle(build(m, offered), ctx);
                if (!out) continue;
                const d = decodePacket(out.buffer);
                expect(d.ok).toBe(true);
                if (!d.ok) continue;
                const type = getU8(d.packet.options, Opt.MessageType);
                if (type === MessageType.Offer) offered.set(m.mac, d.packet.yiaddr);
                if (type !== MessageType.Ack) continue;
                acks++;
                if (d.packet.yiaddr === "0.0.0.0") continue; // INFORM: no lease
                const lease = store.get(d.packet.yiaddr);
                expect(lease).toMatchObject({ mac: macOf(d.packet), state: "bound" });
              }
              const now = Date.now();
              const bound = store.all().filter((l) => l.state === "bound" && l.expires > now);
              expect(new Set(bound.map((l) => l.mac)).size).toBe(bound.length);
            } finally {
              await store.close();
              rmSync(dir, { recursive: true, force: true });
            }
          }),
        );
      } finally {
        rmSync(shm, { recursive: true, force: true });
      }
      // The sequences reach the lease path, not only the refusals.
      expect(acks).toBeGreaterThan(FUZZ_RUNS / 20);
      console.log(`dhcp-engine fuzz: ${acks} ACKs checked against the store`);
    },
    fuzzTimeout(3),
  );
});
