/**
 * A late event loop is not a lost packet. In a boot storm the loop can be busy past a transfer's timeout
 * while the client's answer already waits in the socket; libuv runs timers before it polls, so a naive
 * server resends the OACK, and atftp aborts on a repeated OACK ("unexpected OACK"). The server asks the
 * socket first (FIONREAD) and reads the answer instead. A Python client counts the OACKs it gets.
 */
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createSocket } from "node:dgram";
import { once } from "node:events";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { nativeChannelAvailable } from "../../src/tftp/channel.js";
import type { TftpServer } from "../../src/tftp/server.js";
import { commandsAvailable, resourceAvailable } from "../support/require.js";
import { startServer, tempDir } from "./helpers.js";

const canRun =
  commandsAvailable("python3") && resourceAvailable("native addon nbdh_udp", nativeChannelAvailable());

/**
 * RRQ with blksize; on the OACK, a poke to the test (which then holds its loop) and ACK 0 100 ms later;
 * then lockstep to the end. Prints what it counted.
 */
const CLIENT_PY = `
import socket, struct, sys, time
port, poke_port = int(sys.argv[1]), int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(10)
s.sendto(b"\\x00\\x01payload.bin\\x00octet\\x00blksize\\x001024\\x00", ("127.0.0.1", port))
oacks, data, size, expect = 0, 0, 0, 1
while True:
    pkt, addr = s.recvfrom(2048)
    op = struct.unpack("!H", pkt[:2])[0]
    if op == 6:
        oacks += 1
        if oacks == 1:
            s.sendto(b"poke", ("127.0.0.1", poke_port))
            time.sleep(0.1)
        s.sendto(b"\\x00\\x04\\x00\\x00", addr)
    elif op == 3:
        block = struct.unpack("!H", pkt[2:4])[0]
        if block == expect:
            data += 1
            size += len(pkt) - 4
            expect += 1
        s.sendto(struct.pack("!HH", 4, block), addr)
        if len(pkt) - 4 < 1024:
            break
    else:
        print("error", pkt)
        sys.exit(1)
print(f"oacks {oacks} blocks {data} bytes {size}")
`;

let root: string;
let cleanup: () => Promise<void>;
let server: TftpServer | undefined;
beforeAll(async () => {
  ({ dir: root, cleanup } = await tempDir());
  await writeFile(join(root, "payload.bin"), randomBytes(10_000));
});
afterAll(async () => {
  delete process.env.NETBOOT_TFTP_PUMP_THREADS;
  await server?.close();
  await cleanup?.();
});

/**
 * `threads`: the process's pump threads (the first server to listen decides, so each test file runs one
 * mode). On a pump thread the answer has been read already, but waits for the loop all the same.
 */
export function describeLateLoop(title: string, threads: "0" | "2"): void {
  describe.skipIf(!canRun)(title, () => {
    it("reads the waiting ACK of the OACK instead of sending the OACK again", async () => {
      process.env.NETBOOT_TFTP_PUMP_THREADS = threads;
      const started = await startServer({ root, timeoutMs: 1000, transport: "native" });
      server = started.server;
      // Held in an I/O callback, as a storm's loop is: the next iteration then runs timers before it polls.
      const poke = createSocket("udp4");
      poke.on("message", () => {
        const until = Date.now() + 1_600;
        while (Date.now() < until) {
          // busy past the server's 1 s timeout, while ACK 0 arrives and waits unread
        }
      });
      poke.bind(0, "127.0.0.1");
      await once(poke, "listening");
      const child = spawn("python3", ["-c", CLIENT_PY, String(started.port), String(poke.address().port)]);
      let out = "";
      child.stdout.on("data", (d) => (out += d));
      const code = await new Promise<number | null>((r) => child.on("exit", r));
      expect(code).toBe(0);
      poke.close();
      expect(out.trim()).toBe("oacks 1 blocks 10 bytes 10000");
    }, 30_000);
  });
}
