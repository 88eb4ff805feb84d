/**
 * The state directory fills up: no ACK goes out for a lease that could not be made durable, the log
 * says why, nothing already stored is damaged, and service resumes by itself once there is room.
 * The state directory is a real size-limited tmpfs, filled with a real file.
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Writable } from "node:stream";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeBootPolicy } from "../../src/dhcp/boot-policy.js";
import { dhcpConfigSchema } from "../../src/dhcp/config.js";
import { DhcpEngine, type ExchangeContext } from "../../src/dhcp/engine.js";
import { LeaseStore, readLeases } from "../../src/dhcp/leases.js";
import { enc, getU8, MessageType, Opt } from "../../src/dhcp/options.js";
import { decodePacket, emptyPacket, encodePacket, macToChaddr } from "../../src/dhcp/packet.js";
import { isRoot, resourceAvailable } from "../support/require.js";
import { tempDir } from "./helpers/netns.js";

const ready = resourceAvailable("root (mount a size-limited tmpfs)", isRoot());

const ctx: ExchangeContext = {
  iface: "eth1",
  serverAddress: "10.9.0.1",
  localPort: 67,
  from: { address: "0.0.0.0", port: 68 },
};

function packet(type: number, mac: string, extra: [number, Buffer][] = []): Buffer {
  const p = emptyPacket();
  p.xid = 7;
  p.chaddr = macToChaddr(mac);
  p.options.set(Opt.MessageType, enc.u8(type));
  for (const [k, v] of extra) p.options.set(k, v);
  const r = encodePacket(p);
  if (!r.ok) throw new Error(r.error);
  return r.buffer;
}

/** DISCOVER, REQUEST: the ACKed address, or undefined when no ACK went out. */
async function dora(e: DhcpEngine, mac: string): Promise<string | undefined> {
  const offer = await e.handle(packet(MessageType.Discover, mac), ctx);
  if (!offer) return undefined;
  const d = decodePacket(offer.buffer);
  if (!d.ok) throw new Error(d.error);
  const ack = await e.handle(
    packet(MessageType.Request, mac, [
      [Opt.RequestedAddress, enc.ip(d.packet.yiaddr)],
      [Opt.ServerId, enc.ip("10.9.0.1")],
    ]),
    ctx,
  );
  if (!ack) return undefined;
  const a = decodePacket(ack.buffer);
  if (!a.ok || getU8(a.packet.options, Opt.MessageType) !== MessageType.Ack) return undefined;
  return a.packet.yiaddr;
}

describe.runIf(ready)("a full state directory", () => {
  const mount = tempDir("nbdh-full-");
  const stateDir = join(mount, "state");
  const lines: Record<string, unknown>[] = [];
  const logger = pino(
    { level: "info" },
    new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const l of chunk.toString().split("\n")) if (l) lines.push(JSON.parse(l));
        done();
      },
    }),
  );

  beforeAll(() => {
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=256k,mode=0700", "nbdh-full", mount]);
    mkdirSync(stateDir);
  });
  afterAll(() => {
    execFileSync("umount", ["-l", mount]);
    rmSync(mount, { recursive: true, force: true });
  });

  it("sends no ACK it could not store, keeps what it stored, and resumes when space returns", async () => {
    const store = await LeaseStore.open(stateDir, logger, { compactAfter: 50 });
    const e = new DhcpEngine({
      config: dhcpConfigSchema.parse({
        mode: "full",
        interfaces: ["eth1"],
        subnets: [
          { subnet: "10.9.0.0/16", interface: "eth1", range: { start: "10.9.1.0", end: "10.9.9.255" } },
        ],
      }),
      store,
      bootPolicy: makeBootPolicy({ loaders: { x64: { shim: "x64/shimx64.efi" } }, nextServer: "10.9.0.1" }),
      logger,
    });
    const mac = (n: number) =>
      `02:09:00:00:${((n >> 8) & 0xff).toString(16).padStart(2, "0")}:${(n & 0xff).toString(16).padStart(2, "0")}`;
    const acked = new Map<string, string>();
    for (let n = 0; n < 20; n++) {
      const ip = await dora(e, mac(n));
      expect(ip).toBeDefined();
      acked.set(mac(n), ip as string);
    }
    // Fill the filesystem to the last byte.
    const filler = join(mount, "filler");
    try {
      writeFileSync(filler, Buffer.alloc(1024 * 1024));
    } catch (err) {
      expect((err as NodeJS.ErrnoException).code).toBe("ENOSPC");
    }
    // The journal's last page may still take some records (tmpfs allocates by page): those are durable
    // and ACKed. Once it is full, every client is refused.
    let refused = 0;
    let lastRefused = 0;
    for (let n = 20; n < 420; n++) {
      const ip = await dora(e, mac(n));
      if (ip === undefined) {
        refused++;
        lastRefused = n;
      } else acked.set(mac(n), ip);
    }
    expect(refused).toBeGreaterThanOrEqual(200);
    expect(lastRefused).toBe(419);
    const why = lines.find((l) => String(l.msg).includes("the state directory is full"));
    expect(why).toMatchObject({ code: "ENOSPC", level: 50 });
    // A refused client's address was not kept in memory either: it is offered again, nobody owns it.
    expect(store.byMac(mac(419))).toBeUndefined();

    // What was stored is intact on disk, and what was ACKed is all there.
    const onDisk = new Map(
      readLeases(stateDir)
        .filter((l) => l.state === "bound")
        .map((l) => [l.mac, l.address]),
    );
    for (const [m, ip] of acked) expect(onDisk.get(m), m).toBe(ip);
    expect(onDisk.size).toBe(acked.size);

    // Space comes back: service resumes without a restart.
    rmSync(filler);
    for (let n = 200; n < 260; n++) {
      const ip = await dora(e, mac(n));
      expect(ip, `client ${n} after space returned`).toBeDefined();
      acked.set(mac(n), ip as string);
    }
    await store.close();
    // Reopened (as after a restart), the journal loads whole and holds every ACKed lease.
    const reopened = await LeaseStore.open(stateDir, logger);
    for (const [m, ip] of acked) expect(reopened.byMac(m)?.address, m).toBe(ip);
    expect(lines.some((l) => l.msg === "lease journal: malformed records skipped")).toBe(false);
    await reopened.close();
  });
});
