/** The protocol engine without sockets: datagrams in, datagrams out (reload, renew, exhaustion). */
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
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

async function engine(dir = tempDir("nbdh-engine-")) {
  const store = await LeaseStore.open(dir, logger);
  stores.push(store);
  const e = new DhcpEngine({
    config: dhcpConfigSchema.parse(input),
    store,
    bootPolicy: makeBootPolicy({ loaders: { x64: "x64/shimx64.efi" }, nextServer: "10.0.0.1" }),
    logger,
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
