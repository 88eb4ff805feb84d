/**
 * A DHCP flood for the boot storm: relayed DISCOVERs (giaddr = this host, unicast to the server's port 67,
 * as a relay agent forwards them) from a fixed set of MACs, at a fixed rate, without waiting for answers.
 * perfdhcp keeps every exchange and used more than a core and gigabytes at 10,000/s on the storm's host;
 * this costs a fraction of that, so the flood measures the server, not the generator.
 *   node dist/bench/lib/dhcp-flood.js SERVER RELAY_ADDRESS RATE CLIENTS
 * Prints "sent N received M seconds S" when stopped with SIGTERM.
 */
import { createSocket } from "node:dgram";
import { emptyPacket, encodePacket, macToChaddr } from "../../src/dhcp/packet.js";

const [server = "", relay = "", rateText = "10000", clientsText = "100"] = process.argv.slice(2);
const rate = Number(rateText);
const clients = Number(clientsText);
if (!server || !relay || !(rate > 0) || !(clients > 0)) {
  console.error("usage: dhcp-flood SERVER RELAY_ADDRESS RATE CLIENTS");
  process.exit(2);
}

function discover(i: number): Buffer {
  const p = emptyPacket();
  p.xid = 0x5f000000 + i;
  p.hops = 1;
  p.giaddr = relay;
  p.chaddr = macToChaddr(
    `02:f1:00:00:${((i >> 8) & 0xff).toString(16).padStart(2, "0")}:${(i & 0xff).toString(16).padStart(2, "0")}`,
  );
  p.options.set(53, Buffer.from([1]));
  p.options.set(93, Buffer.from([0, 7]));
  p.options.set(60, Buffer.from("PXEClient:Arch:00007:UNDI:003016"));
  const enc = encodePacket(p);
  if (!enc.ok) throw new Error(enc.error);
  return enc.buffer;
}

const packets = Array.from({ length: clients }, (_, i) => discover(i));
const socket = createSocket({ type: "udp4", reuseAddr: true });
let sent = 0;
let received = 0;
socket.on("message", () => {
  received++;
});
socket.bind(67, relay, () => {
  const started = process.hrtime.bigint();
  const tick = () => {
    // Catch up to where the rate says we should be: timers are coarse, the count is exact.
    const due = Math.floor((Number(process.hrtime.bigint() - started) / 1e9) * rate);
    for (; sent < due; sent++) socket.send(packets[sent % clients] as Buffer, 67, server);
  };
  const timer = setInterval(tick, 5);
  process.on("SIGTERM", () => {
    clearInterval(timer);
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    process.stdout.write(`sent ${sent} received ${received} seconds ${seconds.toFixed(2)}\n`);
    socket.close();
    process.exit(0);
  });
  process.stdout.write("flooding\n");
});
