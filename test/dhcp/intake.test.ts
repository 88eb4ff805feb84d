/**
 * The DHCP intake (native/nbdh_intake.c): its thread drains the socket while the event loop is busy, so
 * a flood from one MAC cannot push another machine's request out of the receive buffer. Real sockets on
 * loopback; the flood comes from a separate process while this test holds its own event loop.
 */
import { spawn } from "node:child_process";
import { createSocket } from "node:dgram";
import { once } from "node:events";
import { existsSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { type DhcpIntake, openDhcpIntake } from "../../src/dhcp/intake.js";
import { emptyPacket, encodePacket, macToChaddr } from "../../src/dhcp/packet.js";
import { commandsAvailable, isRoot, resourceAvailable } from "../support/require.js";

const canRun = resourceAvailable("root (SO_BINDTODEVICE)", isRoot()) && commandsAvailable("python3");

function discover(mac: string, xid: number): Buffer {
  const p = emptyPacket();
  p.xid = xid;
  p.chaddr = macToChaddr(mac);
  p.options.set(53, Buffer.from([1]));
  const enc = encodePacket(p);
  if (!enc.ok) throw new Error(enc.error);
  return enc.buffer;
}

const FLOODER = "52:54:00:f1:00:01";
const MACHINE = "52:54:00:00:00:42";

/** Sends `count` datagrams of the flooder, one of the machine, and `count` more of the flooder. */
const FLOOD_PY = `
import socket, sys
port, count, flood_hex, machine_hex, done = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
flood, machine = bytes.fromhex(flood_hex), bytes.fromhex(machine_hex)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(count): s.sendto(flood, ("127.0.0.1", port))
s.sendto(machine, ("127.0.0.1", port))
for _ in range(count): s.sendto(flood, ("127.0.0.1", port))
open(done, "w").write("sent")
`;

let intake: DhcpIntake | undefined;
afterEach(() => {
  intake?.close();
  intake = undefined;
});

describe.skipIf(!canRun)("DHCP intake thread", () => {
  it("keeps a machine's request through a one-MAC flood while the event loop is blocked", async () => {
    const got: Buffer[] = [];
    intake = openDhcpIntake("lo", 46_767, { perMacPerSecond: 4, burst: 8 }, (msg) => got.push(msg));
    const count = 40_000;
    const done = join(mkdtempSync(join(tmpdir(), "nb-intake-")), "done");
    const child = spawn("python3", [
      "-c",
      FLOOD_PY,
      "46767",
      String(count),
      discover(FLOODER, 1).toString("hex"),
      discover(MACHINE, 2).toString("hex"),
      done,
    ]);
    // Hold the loop (as 200 TFTP transfers and a GC pause can) until the flood has been sent:
    // 80,000 datagrams are far more than any receive buffer holds, so only a reader that is not
    // this loop can keep the machine's request.
    const until = Date.now() + 30_000;
    while (!existsSync(done) && Date.now() < until) {
      // busy: nothing on this loop runs
    }
    expect(existsSync(done)).toBe(true);
    await new Promise((r) => setTimeout(r, 300));
    if (child.exitCode === null) await once(child, "exit");
    const stats = intake.stats();
    const machine = got.filter((m) =>
      m.subarray(28, 34).equals(Buffer.from(MACHINE.split(":").join(""), "hex")),
    );
    const flood = got.length - machine.length;
    expect(machine).toHaveLength(1);
    // The flooder gets its burst plus its rate over the seconds the flood lasted, not a datagram more.
    expect(flood).toBeGreaterThanOrEqual(8);
    expect(flood).toBeLessThanOrEqual(8 + 4 * 25);
    expect(stats.received).toBeGreaterThan(count); // most of the flood was read, not lost in the kernel
    expect(stats.admitted).toBe(got.length);
    const summary = intake.summary();
    expect(summary?.top?.mac).toBe(FLOODER);
    expect(summary?.macs).toBe(1);
  }, 60_000);

  it("sends replies from its port, and returns a send error instead of throwing", async () => {
    const client = createSocket("udp4");
    client.bind(0, "127.0.0.1");
    await once(client, "listening");
    const clientPort = client.address().port;
    const replies: { msg: Buffer; port: number }[] = [];
    client.on("message", (msg, rinfo) => replies.push({ msg, port: rinfo.port }));
    const seen: { address: string; port: number }[] = [];
    intake = openDhcpIntake("lo", 46_768, { perMacPerSecond: 0, burst: 1 }, (msg, from) => {
      seen.push(from);
      intake?.send(Buffer.concat([Buffer.from("re:"), msg]), from.address, from.port);
    });
    client.send(Buffer.from("hello"), 46_768, "127.0.0.1");
    for (let i = 0; i < 50 && replies.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect(seen).toEqual([{ address: "127.0.0.1", port: clientPort }]);
    expect(replies.map((r) => [r.msg.toString(), r.port])).toEqual([["re:hello", 46_768]]);
    // A datagram larger than UDP allows is an error value (EMSGSIZE), and the intake keeps working.
    const err = intake.send(Buffer.alloc(70_000), "127.0.0.1", clientPort);
    expect(err?.code).toBe("EMSGSIZE");
    expect(() => intake?.send(Buffer.from("x"), "not an address", 68)).toThrow(/IPv4/);
    client.close();
  });

  it("a datagram too large for a DHCP message is counted and dropped", async () => {
    const got: Buffer[] = [];
    intake = openDhcpIntake("lo", 46_769, { perMacPerSecond: 0, burst: 1 }, (msg) => got.push(msg));
    const client = createSocket("udp4");
    client.send(Buffer.alloc(5000), 46_769, "127.0.0.1");
    client.send(discover(MACHINE, 3), 46_769, "127.0.0.1");
    for (let i = 0; i < 50 && got.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect(got).toHaveLength(1);
    expect(intake.stats()).toMatchObject({ received: 2, admitted: 1, truncated: 1 });
    client.close();
  });
});
