/** Hostile and broken requests are refused or dropped and logged, while a good transfer runs to completion. */
import { randomBytes } from "node:crypto";
import { mkdir, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, expect, test } from "vitest";
import { encodeRequest } from "../../src/tftp/packet.js";
import { commandsAvailable } from "../support/require.js";
import { fetchWith, sha256File, startServer, tempDir } from "./helpers.js";
import { RawClient } from "./rawclient.js";

const haveCurl = commandsAvailable("curl");
let root: string;
let cleanup: () => Promise<void>;

beforeAll(async () => {
  ({ dir: root, cleanup } = await tempDir());
  await writeFile(join(root, "good.bin"), randomBytes(6 * 1024 * 1024));
  await writeFile(join(root, "small.bin"), randomBytes(700));
  await mkdir(join(root, "x64"));
  await symlink("/etc/passwd", join(root, "escape"));
  await symlink("/etc", join(root, "x64", "etcdir"));
  await symlink("small.bin", join(root, "inside-link"));
});
afterAll(async () => {
  await cleanup?.();
});

function raw(...parts: (number[] | string)[]): Buffer {
  return Buffer.concat(parts.map((p) => (typeof p === "string" ? Buffer.from(p, "latin1") : Buffer.from(p))));
}

test.skipIf(!haveCurl)(
  "bad input is refused or dropped and logged; a concurrent good transfer completes",
  { timeout: 60_000 },
  async () => {
    const { server, port, lines } = await startServer({ root, timeoutMs: 300 });
    const c = await RawClient.open();
    try {
      // The good transfer, lockstep at 512 bytes so it is still running while the junk arrives.
      const out = join(root, "good.out");
      const good = fetchWith("curl", "127.0.0.1", port, "good.bin", out, { blksize: 512 });

      // Garbage and truncated datagrams: no answer at all.
      const junk: Buffer[] = [
        Buffer.alloc(0),
        raw([0]),
        raw([0, 1]),
        raw([0, 1], "good.bin"),
        raw([0, 1], "good.bin\0"),
        raw([0, 1], "good.bin\0oct"),
        raw([0, 1], "good.bin\0binary\0"),
        raw([0, 3, 0, 1], "data to port 69"),
        raw([0, 4, 0, 1]),
        raw([0, 5, 0, 0], "err\0"),
        raw([0, 77], "x"),
        raw([0, 1], `${"A".repeat(10_000)}\0octet\0`),
      ];
      for (let i = 0; i < 2000; i++) junk.push(randomBytes(1 + Math.floor(Math.random() * 100)));
      // Paced, so the kernel's socket buffer does not drop them before the server sees them.
      for (let i = 0; i < junk.length; i += 50) {
        for (const j of junk.slice(i, i + 50)) c.send(j, port);
        await new Promise((r) => setTimeout(r, 5));
      }
      const afterJunk = await c.drain(500);
      expect(afterJunk.map((r) => r.packet.op)).toEqual([]);

      // Requests that are refused with an ERROR.
      const refused: [string, string, [string, string][], number][] = [
        ["../../etc/passwd", "octet", [], 2],
        ["x64/../../etc/passwd", "octet", [], 2],
        ["..\\..\\etc\\passwd", "octet", [], 2],
        ["/etc/passwd", "octet", [], 1],
        ["escape", "octet", [], 2],
        ["x64/etcdir/passwd", "octet", [], 2],
        ["x64", "octet", [], 1],
        ["missing.efi", "octet", [["tsize", "0"]], 1],
      ];
      for (const [name, mode, opts, code] of refused) {
        c.send(encodeRequest("RRQ", name, mode, opts), port);
        const r = await c.next(1000);
        expect(r?.packet.op, name).toBe("ERROR");
        expect(r?.packet.op === "ERROR" && r.packet.code, name).toBe(code);
      }

      // Out-of-range options are ignored: no OACK, plain 512-byte DATA 1.
      c.send(
        encodeRequest("RRQ", "small.bin", "octet", [
          ["blksize", "1"],
          ["windowsize", "0"],
          ["timeout", "999"],
          ["tsize", "-5"],
        ]),
        port,
      );
      const d = await c.next(1000);
      expect(d?.packet.op).toBe("DATA");
      expect(d?.packet.op === "DATA" && d.packet.data.length).toBe(512);
      // A symlink that stays inside the root is fine.
      const c2 = await RawClient.open();
      c2.send(encodeRequest("RRQ", "inside-link", "octet"), port);
      expect((await c2.next(1000))?.packet.op).toBe("DATA");
      c2.close();

      const res = await good;
      expect(res.code, res.stderr).toBe(0);
      expect(await sha256File(out)).toBe(await sha256File(join(root, "good.bin")));

      const dropped = lines.filter((l) => l.msg === "tftp malformed datagram dropped");
      expect(dropped.length).toBeGreaterThan(0);
      expect(dropped.length).toBeLessThanOrEqual(10); // rate-limited
      expect(server.counters().malformedDropped).toBeGreaterThanOrEqual(junk.length - 50); // some random bytes decode as ACK/DATA/ERROR to port 69: also dropped
      const denied = lines.filter((l) => l.msg === "tftp transfer" && l.outcome === "denied");
      expect(denied.length).toBe(5);
      expect(denied.some((l) => String(l.reason).includes("outside the root"))).toBe(true);
      expect(denied.some((l) => String(l.reason).includes("climbs above"))).toBe(true);
      const goodLine = lines.find((l) => l.msg === "tftp transfer" && l.file === "good.bin");
      expect(goodLine?.outcome).toBe("ok");
    } finally {
      c.close();
      await server.close();
    }
  },
);
