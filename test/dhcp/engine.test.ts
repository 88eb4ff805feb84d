/** The protocol engine without sockets: datagrams in, datagrams out (reload, renew, exhaustion). */
import { type Logger, pino } from "pino";
import { afterEach, describe, expect, it, vi } from "vitest";
import { makeBootPolicy } from "../../src/dhcp/boot-policy.js";
import { type DhcpConfigInput, dhcpConfigSchema } from "../../src/dhcp/config.js";
import { DhcpEngine, type ExchangeContext } from "../../src/dhcp/engine.js";
import { LeaseStore } from "../../src/dhcp/leases.js";
import { enc, getIp, getU8, getU32, MessageType, Opt } from "../../src/dhcp/options.js";
import {
  type DhcpPacket,
  decodePacket,
  emptyPacket,
  encodePacket,
  macToChaddr,
} from "../../src/dhcp/packet.js";
import type { DhcpEvent } from "../../src/machines/events.js";
import { MachineRegistry } from "../../src/machines/registry.js";
import { MachineState } from "../../src/machines/state.js";
import { captureLogger } from "../bootplan/helpers.js";
import { tempDir } from "./helpers/netns.js";

const logger = pino({ level: "silent" });
const ctx: ExchangeContext = {
  iface: "eth1",
  serverAddress: "10.0.0.1",
  localPort: 67,
  from: { address: "0.0.0.0", port: 68 },
};
const input: DhcpConfigInput = {
  mode: "full",
  interfaces: ["eth1"],
  subnets: [
    {
      subnet: "10.0.0.0/24",
      interface: "eth1",
      range: { start: "10.0.0.10", end: "10.0.0.12" },
      lease_time: 600,
    },
  ],
};

let stores: LeaseStore[] = [];
afterEach(async () => {
  for (const s of stores) await s.close();
  stores = [];
});

async function engine(dir = tempDir("nbdh-engine-"), config: DhcpConfigInput = input, log: Logger = logger) {
  const store = await LeaseStore.open(dir, logger);
  stores.push(store);
  const e = new DhcpEngine({
    config: dhcpConfigSchema.parse(config),
    store,
    bootPolicy: makeBootPolicy({ loaders: { x64: { shim: "x64/shimx64.efi" } }, nextServer: "10.0.0.1" }),
    logger: log,
  });
  return { e, store, dir };
}

function packet(type: number, mac: string, extra: [number, Buffer][] = [], ciaddr = "0.0.0.0"): Buffer {
  const p = emptyPacket();
  p.xid = 42;
  p.chaddr = macToChaddr(mac);
  p.ciaddr = ciaddr;
  p.options.set(Opt.MessageType, enc.u8(type));
  for (const [k, v] of extra) p.options.set(k, v);
  const r = encodePacket(p);
  if (!r.ok) throw new Error(r.error);
  return r.buffer;
}

async function exchange(
  e: DhcpEngine,
  buf: Buffer,
): Promise<{ reply: DhcpPacket; address: string } | undefined> {
  const out = await e.handle(buf, ctx);
  if (!out) return undefined;
  const d = decodePacket(out.buffer);
  if (!d.ok) throw new Error(d.error);
  return { reply: d.packet, address: out.address };
}

async function dora(e: DhcpEngine, mac: string): Promise<DhcpPacket | undefined> {
  const offer = await exchange(e, packet(MessageType.Discover, mac));
  if (!offer) return undefined;
  const ack = await exchange(
    e,
    packet(MessageType.Request, mac, [
      [Opt.RequestedAddress, enc.ip(offer.reply.yiaddr)],
      [Opt.ServerId, enc.ip("10.0.0.1")],
    ]),
  );
  return ack?.reply;
}

describe("DHCP engine", () => {
  it("hands option 97 (the SMBIOS UUID) to machine state, which makes it a lookup key for the MAC", async () => {
    const store = await LeaseStore.open(tempDir("nbdh-uuid-"), logger);
    stores.push(store);
    const events: DhcpEvent[] = [];
    const registry = new MachineRegistry({ role: "full", leases: store });
    const state = new MachineState({
      registry,
      nameOf: () => undefined,
      roleOf: () => "other",
      stateDir: tempDir("nbdh-uuid-state-"),
      limits: { perMachine: 3, total: 10, stallAfterMs: 1000 },
      logger,
    });
    const e = new DhcpEngine({
      config: dhcpConfigSchema.parse(input),
      store,
      bootPolicy: makeBootPolicy({ loaders: { x64: { shim: "x64/shimx64.efi" } }, nextServer: "10.0.0.1" }),
      logger,
      onExchange: (ev) => {
        events.push(ev);
        state.record(ev);
      },
    });
    const uuid = Buffer.concat([Buffer.from([0]), Buffer.from("4C4C4544004235108052B3C04F4A3032", "hex")]);
    const offer = await exchange(
      e,
      packet(MessageType.Discover, "02:00:00:00:00:97", [
        [Opt.ClientUuid, uuid],
        [Opt.ClientArch, Buffer.from([0, 7])],
        [Opt.VendorClass, Buffer.from("PXEClient:Arch:00007:UNDI:003016")],
      ]),
    );
    expect(offer?.reply.options.get(Opt.ClientUuid)).toEqual(uuid);
    expect(events[0]?.uuid).toBe("4c4c4544-0042-3510-8052-b3c04f4a3032");
    expect(registry.uuidOf("02:00:00:00:00:97")).toBe("4c4c4544-0042-3510-8052-b3c04f4a3032");
    // A malformed option 97 (wrong length) is not a UUID: nothing is noted.
    await exchange(
      e,
      packet(MessageType.Discover, "02:00:00:00:00:98", [
        [Opt.ClientUuid, Buffer.from([0, 1, 2])],
        [Opt.VendorClass, Buffer.from("PXEClient:Arch:00007:UNDI:003016")],
      ]),
    );
    expect(registry.uuidOf("02:00:00:00:00:98")).toBeUndefined();
  });

  it("keeps bindings across a restart and renews by ciaddr (unicast)", async () => {
    const { e, store, dir } = await engine();
    const ack = await dora(e, "02:00:00:00:00:01");
    expect(getU8(ack?.options ?? new Map(), Opt.MessageType)).toBe(MessageType.Ack);
    const ip = ack?.yiaddr as string;
    await store.close();
    stores = [];
    const again = await engine(dir);
    const renew = await exchange(again.e, packet(MessageType.Request, "02:00:00:00:00:01", [], ip));
    expect(renew?.reply.yiaddr).toBe(ip);
    expect(renew?.address).toBe(ip);
    // another client may not take it
    const nak = await exchange(
      again.e,
      packet(MessageType.Request, "02:00:00:00:00:02", [[Opt.RequestedAddress, enc.ip(ip)]]),
    );
    expect(getU8(nak?.reply.options ?? new Map(), Opt.MessageType)).toBe(MessageType.Nak);
  });

  it("runs out of addresses without offering, and a RELEASE frees one", async () => {
    const { e } = await engine();
    const acks = [];
    for (const n of [1, 2, 3]) acks.push(await dora(e, `02:00:00:00:01:0${n}`));
    expect(acks.map((a) => a?.yiaddr).sort()).toEqual(["10.0.0.10", "10.0.0.11", "10.0.0.12"]);
    expect(await exchange(e, packet(MessageType.Discover, "02:00:00:00:01:09"))).toBeUndefined();
    const first = acks[0] as DhcpPacket;
    await e.handle(
      packet(MessageType.Release, "02:00:00:00:01:01", [[Opt.ServerId, enc.ip("10.0.0.1")]], first.yiaddr),
      ctx,
    );
    const offer = await exchange(e, packet(MessageType.Discover, "02:00:00:00:01:09"));
    expect(offer?.reply.yiaddr).toBe(first.yiaddr);
  });

  it("applies a reloaded config (lease time, reservations) and keeps the leases", async () => {
    const { e, store } = await engine();
    const ack = await dora(e, "02:00:00:00:02:01");
    expect(getU32(ack?.options ?? new Map(), Opt.LeaseTime)).toBe(600);
    e.setConfig(
      dhcpConfigSchema.parse({
        ...input,
        subnets: [{ ...input.subnets?.[0], lease_time: 1200 }],
        reservations: [{ mac: "02:00:00:00:02:02", address: "10.0.0.50" }],
      }),
    );
    const renewed = await dora(e, "02:00:00:00:02:01");
    expect(renewed?.yiaddr).toBe(ack?.yiaddr);
    expect(getU32(renewed?.options ?? new Map(), Opt.LeaseTime)).toBe(1200);
    const reserved = await dora(e, "02:00:00:00:02:02");
    expect(reserved?.yiaddr).toBe("10.0.0.50");
    expect(getIp(reserved?.options ?? new Map(), Opt.ServerId)).toBe("10.0.0.1");
    expect(store.all().filter((l) => l.state === "bound")).toHaveLength(2);
  });
});

const hex2 = (n: number) => n.toString(16).padStart(2, "0");
const SERVER_ID: [number, Buffer] = [Opt.ServerId, enc.ip("10.0.0.1")];
const typeOf = (r: { reply: DhcpPacket } | undefined) =>
  getU8(r?.reply.options ?? new Map(), Opt.MessageType);

describe("DHCP engine: a forged packet cannot move a binding", () => {
  const VICTIM = "02:00:00:00:0a:01";

  it("REQUESTs for an address this server did not offer are refused, and the lease stays put", async () => {
    const { e, store } = await engine();
    const ack = await dora(e, VICTIM);
    const held = ack?.yiaddr as string;
    const free = ["10.0.0.10", "10.0.0.11", "10.0.0.12"].find((a) => a !== held) as string;
    // SELECTING with our server id, for a free address never offered to the victim's MAC.
    const selecting = await exchange(
      e,
      packet(MessageType.Request, VICTIM, [[Opt.RequestedAddress, enc.ip(free)], SERVER_ID]),
    );
    expect(typeOf(selecting)).toBe(MessageType.Nak);
    // INIT-REBOOT for another address than the one on record: NAK (RFC 2131 4.3.2).
    const reboot = await exchange(
      e,
      packet(MessageType.Request, VICTIM, [[Opt.RequestedAddress, enc.ip(free)]]),
    );
    expect(typeOf(reboot)).toBe(MessageType.Nak);
    // RENEWING an address it does not hold.
    expect(typeOf(await exchange(e, packet(MessageType.Request, VICTIM, [], free)))).toBe(MessageType.Nak);
    expect(store.byMac(VICTIM)).toMatchObject({ address: held, state: "bound" });
    expect(store.get(free)).toBeUndefined();
  });

  it("a MAC without a record gets no lease from a REQUEST alone: INIT-REBOOT is ignored, SELECTING is NAKed", async () => {
    const { e, store } = await engine();
    const stranger = "02:00:00:00:0a:02";
    expect(
      await exchange(e, packet(MessageType.Request, stranger, [[Opt.RequestedAddress, enc.ip("10.0.0.11")]])),
    ).toBeUndefined();
    const selecting = await exchange(
      e,
      packet(MessageType.Request, stranger, [[Opt.RequestedAddress, enc.ip("10.0.0.11")], SERVER_ID]),
    );
    expect(typeOf(selecting)).toBe(MessageType.Nak);
    expect(store.byMac(stranger)).toBeUndefined();
    // INFORM is answered, and grants nothing either.
    const inform = await exchange(e, packet(MessageType.Inform, stranger, [], "10.0.0.12"));
    expect(typeOf(inform)).toBe(MessageType.Ack);
    expect(store.byMac(stranger)).toBeUndefined();
  });

  it("a lease that moves to a new address does so only with an ACK, logged as a warning naming both", async () => {
    const log = captureLogger();
    const { e, store } = await engine(tempDir("nbdh-engine-"), input, log.logger);
    const first = (await dora(e, VICTIM))?.yiaddr;
    e.setConfig(dhcpConfigSchema.parse({ ...input, reservations: [{ mac: VICTIM, address: "10.0.0.50" }] }));
    const moved = await dora(e, VICTIM);
    expect(moved?.yiaddr).toBe("10.0.0.50");
    expect(store.byMac(VICTIM)).toMatchObject({ address: "10.0.0.50", state: "bound" });
    expect(store.get(first as string)).toMatchObject({ state: "free" });
    expect(log.lines().find((l) => String(l.msg).startsWith("lease moved"))).toMatchObject({
      mac: VICTIM,
      from: first,
      to: "10.0.0.50",
      level: 40,
    });
  });

  it("proxy mode: a REQUEST or INFORM to 4011 claiming an address records nothing", async () => {
    const { e, store } = await engine(tempDir("nbdh-engine-"), { mode: "proxy", interfaces: ["eth1"] });
    const pxe: [number, Buffer][] = [
      [Opt.VendorClass, enc.string("PXEClient:Arch:00007:UNDI:003016")],
      [Opt.ClientArch, Buffer.from([0, 7])],
    ];
    const on4011 = { ...ctx, localPort: 4011, from: { address: "10.0.0.99", port: 4011 } };
    for (const type of [MessageType.Request, MessageType.Inform]) {
      const out = await e.handle(packet(type, VICTIM, pxe, "10.0.0.99"), on4011);
      expect(out).toBeDefined(); // the boot answer is given
    }
    expect(store.all()).toEqual([]);
  });
});

describe("DHCP engine: memory under a DISCOVER flood", () => {
  afterEach(() => vi.useRealTimers());

  it("offers to MACs that never come back do not pile up (800 DISCOVERs into 3 addresses)", async () => {
    vi.useFakeTimers({ toFake: ["Date"] });
    const start = Date.now();
    const { e } = await engine();
    let offered = 0;
    for (let round = 0; round < 200; round++) {
      // Each round comes after the last round's offers ran out: those addresses are offered again.
      vi.setSystemTime(start + round * 61_000);
      for (let i = 0; i < 4; i++) {
        const n = round * 4 + i;
        const mac = `02:0f:00:00:${hex2(n >> 8)}:${hex2(n & 0xff)}`;
        if (await exchange(e, packet(MessageType.Discover, mac))) offered++;
      }
    }
    expect(offered).toBe(600);
    const counts = e.offerCounts();
    expect(counts.byMac).toBeLessThanOrEqual(3);
    expect(counts.byMac).toBe(counts.byAddress);
  });
});
