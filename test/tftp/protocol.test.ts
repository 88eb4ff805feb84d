/** Exact protocol behaviour against the real server over loopback, driven by a scripted client. */
import { randomBytes } from "node:crypto";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { encodeAck, encodeError, encodeRequest, type TftpPacket } from "../../src/tftp/packet.js";
import type { TftpTransferRecord } from "../../src/tftp/provider.js";
import type { TftpServer } from "../../src/tftp/server.js";
import { type LogLine, startServer, tempDir } from "./helpers.js";
import { RawClient, type Received } from "./rawclient.js";

let root: string;
let cleanup: () => Promise<void>;
let outside: string;
const content = randomBytes(10_000);
const exact = randomBytes(1024);

beforeAll(async () => {
  ({ dir: root, cleanup } = await tempDir());
  await writeFile(join(root, "file.bin"), content);
  await writeFile(join(root, "exact.bin"), exact);
  await mkdir(join(root, "x64"));
  await writeFile(join(root, "x64", "grubx64.efi"), "grub");
  outside = join(root, "..", `nbtf-outside-${process.pid}.bin`);
  await writeFile(outside, "kernel bytes");
});
afterAll(async () => {
  await cleanup();
  await import("node:fs/promises").then((fs) => fs.rm(outside, { force: true }));
});

async function withServer(
  opts: Parameters<typeof startServer>[0] extends infer O ? Partial<O> : never,
  body: (s: {
    server: TftpServer;
    port: number;
    lines: LogLine[];
    records: TftpTransferRecord[];
  }) => Promise<void>,
): Promise<void> {
  const { server, port, lines } = await startServer({ root, transport, ...opts });
  const records: TftpTransferRecord[] = [];
  server.on("transfer", (r) => records.push(r));
  try {
    await body({ server, port, lines, records });
  } finally {
    await server.close();
  }
}

function expectPacket<T extends TftpPacket["op"]>(
  r: Received | undefined,
  op: T,
): Extract<TftpPacket, { op: T }> {
  expect(r, `expected ${op}`).toBeDefined();
  expect(r?.packet.op).toBe(op);
  return r?.packet as Extract<TftpPacket, { op: T }>;
}

async function until(cond: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond() && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
}

/** Fetches a file in lockstep or with a window, returning the bytes and the DATA sizes seen. */
async function fetchRaw(
  c: RawClient,
  port: number,
  name: string,
  options: [string, string][],
): Promise<{ data: Buffer; oack?: Map<string, string>; sizes: number[] }> {
  c.send(encodeRequest("RRQ", name, "octet", options), port);
  let first = await c.next();
  expect(first).toBeDefined();
  const tid = first?.from.port as number;
  expect(tid).not.toBe(port);
  let oack: Map<string, string> | undefined;
  let blksize = 512;
  let windowsize = 1;
  if (first?.packet.op === "OACK") {
    oack = first.packet.options;
    blksize = Number(oack.get("blksize") ?? 512);
    windowsize = Number(oack.get("windowsize") ?? 1);
    c.send(encodeAck(0), tid);
    first = await c.next();
  }
  const parts: Buffer[] = [];
  const sizes: number[] = [];
  let expected = 1;
  let inWindow = 0;
  let r = first;
  for (;;) {
    const p = expectPacket(r, "DATA");
    expect(p.block).toBe(expected & 0xffff);
    parts.push(Buffer.from(p.data));
    sizes.push(p.data.length);
    inWindow++;
    const last = p.data.length < blksize;
    if (last || inWindow === windowsize) {
      c.send(encodeAck(expected), tid);
      inWindow = 0;
    }
    if (last) break;
    expected++;
    r = await c.next();
  }
  return { data: Buffer.concat(parts), ...(oack ? { oack } : {}), sizes };
}

/** Both transfer transports run every case: the native channel (with its lockstep pump) and node:dgram. */
let transport: "native" | "dgram" = "native";

describe.each(["native", "dgram"] as const)("transfers (%s transport)", (kind) => {
  beforeAll(() => {
    transport = kind;
  });

  test("plain RRQ: DATA from a new transfer ID, no OACK, content intact", async () => {
    await withServer({}, async ({ port, records }) => {
      const c = await RawClient.open();
      const { data, oack } = await fetchRaw(c, port, "file.bin", []);
      expect(oack).toBeUndefined();
      expect(data.equals(content)).toBe(true);
      await until(() => records.length === 1);
      expect(records[0]).toMatchObject({
        outcome: "ok",
        bytes: content.length,
        blksize: 512,
        windowsize: 1,
        file: "file.bin",
      });
      c.close();
    });
  });

  test("size multiple of blksize ends with an empty block", async () => {
    await withServer({}, async ({ port }) => {
      const c = await RawClient.open();
      const { data, sizes } = await fetchRaw(c, port, "exact.bin", []);
      expect(sizes).toEqual([512, 512, 0]);
      expect(data.equals(exact)).toBe(true);
      c.close();
    });
  });

  test("OVMF: size probe answered by ERROR 8 is logged as size-probe, then the windowed fetch", async () => {
    await withServer({}, async ({ port, records, lines, server }) => {
      const c = await RawClient.open();
      c.send(
        encodeRequest("RRQ", "file.bin", "octet", [
          ["tsize", "0"],
          ["blksize", "1468"],
          ["windowsize", "4"],
        ]),
        port,
      );
      const r = await c.next();
      const oack = expectPacket(r, "OACK");
      expect(Object.fromEntries(oack.options)).toEqual({
        tsize: String(content.length),
        blksize: "1468",
        windowsize: "4",
      });
      c.send(encodeError(8, "TFTP Aborted"), r?.from.port as number);
      await until(() => records.length === 1);
      expect(records[0]?.outcome).toBe("size-probe");
      expect(records[0]?.tsize).toBe(content.length);
      const res = await fetchRaw(c, port, "file.bin", [
        ["blksize", "1468"],
        ["windowsize", "4"],
      ]);
      expect(res.data.equals(content)).toBe(true);
      expect(res.sizes.length).toBe(7);
      await until(() => records.length === 2);
      expect(records[1]).toMatchObject({ outcome: "ok", blksize: 1468, windowsize: 4 });
      expect(
        lines.some((l) => l.msg === "tftp transfer" && l.outcome === "size-probe" && l.level === 30),
      ).toBe(true);
      expect(server.counters()).toMatchObject({ transfersOk: 1, sizeProbes: 1, transfersFailed: 0 });
      c.close();
    });
  });

  test("GRUB: blksize 1024 tsize 0, lockstep", async () => {
    await withServer({}, async ({ port }) => {
      const c = await RawClient.open();
      const res = await fetchRaw(c, port, "/x64/grubx64.efi", [
        ["blksize", "1024"],
        ["tsize", "0"],
      ]);
      expect(res.oack && Object.fromEntries(res.oack)).toEqual({ blksize: "1024", tsize: "4" });
      expect(res.data.toString()).toBe("grub");
      c.close();
    });
  });

  test("duplicate ACK never causes a duplicate send (Sorcerer's Apprentice)", async () => {
    await withServer({ timeoutMs: 5000 }, async ({ port }) => {
      const c = await RawClient.open();
      c.send(encodeRequest("RRQ", "file.bin", "octet"), port);
      const d1 = await c.next();
      expectPacket(d1, "DATA");
      const tid = d1?.from.port as number;
      c.send(encodeAck(1), tid);
      c.send(encodeAck(1), tid);
      c.send(encodeAck(1), tid);
      const got = await c.drain(400);
      expect(got.map((g) => g.packet.op === "DATA" && g.packet.block)).toEqual([2]);
      c.close();
    });
  });

  test("windowed: an ACK inside the window restarts the window after it (RFC 7440)", async () => {
    await withServer({ timeoutMs: 5000 }, async ({ port }) => {
      const c = await RawClient.open();
      c.send(encodeRequest("RRQ", "file.bin", "octet", [["windowsize", "4"]]), port);
      const o = await c.next();
      expectPacket(o, "OACK");
      const tid = o?.from.port as number;
      c.send(encodeAck(0), tid);
      const w1 = await c.drain(300);
      expect(w1.map((g) => g.packet.op === "DATA" && g.packet.block)).toEqual([1, 2, 3, 4]);
      c.send(encodeAck(2), tid);
      const w2 = await c.drain(300);
      expect(w2.map((g) => g.packet.op === "DATA" && g.packet.block)).toEqual([3, 4, 5, 6]);
      // stale ACK of an older block: ignored
      c.send(encodeAck(1), tid);
      expect(await c.drain(200)).toEqual([]);
      c.close();
    });
  });

  test("packet from an unknown transfer ID gets ERROR 5 and the transfer carries on", async () => {
    await withServer({ timeoutMs: 5000 }, async ({ port, records }) => {
      const c = await RawClient.open();
      const intruder = await RawClient.open();
      c.send(encodeRequest("RRQ", "file.bin", "octet"), port);
      const d1 = await c.next();
      const tid = d1?.from.port as number;
      intruder.send(encodeAck(1), tid);
      const err = expectPacket(await intruder.next(), "ERROR");
      expect(err.code).toBe(5);
      expect(await c.drain(200)).toEqual([]); // the intruder's ACK moved nothing
      // finish normally
      let block = 1;
      for (;;) {
        c.send(encodeAck(block), tid);
        const p = expectPacket(await c.next(), "DATA");
        block++;
        if (p.data.length < 512) break;
      }
      c.send(encodeAck(block), tid);
      await until(() => records.length === 1);
      expect(records[0]?.outcome).toBe("ok");
      c.close();
      intruder.close();
    });
  });

  test("retransmits on timeout with backoff, gives up after the retry limit", async () => {
    await withServer({ timeoutMs: 100, retries: 3 }, async ({ port, records }) => {
      const c = await RawClient.open();
      c.send(encodeRequest("RRQ", "file.bin", "octet"), port);
      const t0 = Date.now();
      const times: number[] = [];
      for (let i = 0; i < 4; i++) {
        const r = await c.next(1500);
        expect(r?.packet.op === "DATA" && r.packet.block).toBe(1);
        times.push(Date.now() - t0);
      }
      // 100, 200, 400 ms between tries
      expect(times[1]).toBeGreaterThanOrEqual(80);
      expect((times[3] as number) - (times[2] as number)).toBeGreaterThanOrEqual(300);
      await until(() => records.length === 1);
      expect(records[0]).toMatchObject({ outcome: "timeout", retransmits: 3 });
      expect(await c.drain(100)).toEqual([]);
      c.close();
    });
  });

  test("client timeout option sets the retransmission interval", async () => {
    await withServer({ timeoutMs: 5000 }, async ({ port }) => {
      const c = await RawClient.open();
      c.send(encodeRequest("RRQ", "file.bin", "octet", [["timeout", "1"]]), port);
      const o = expectPacket(await c.next(), "OACK");
      expect(o.options.get("timeout")).toBe("1");
      const t0 = Date.now();
      expectPacket(await c.next(1500), "OACK");
      expect(Date.now() - t0).toBeGreaterThan(800);
      c.close();
    });
  });

  test("WRQ gets ERROR 2, a missing file a prompt ERROR 1, mail mode ERROR 4", async () => {
    await withServer({}, async ({ port, records }) => {
      const c = await RawClient.open();
      c.send(encodeRequest("WRQ", "upload.bin", "octet"), port);
      expect(expectPacket(await c.next(), "ERROR").code).toBe(2);
      const t0 = Date.now();
      c.send(
        encodeRequest("RRQ", "grub/x86_64-efi/command.lst", "octet", [
          ["blksize", "1024"],
          ["tsize", "0"],
        ]),
        port,
      );
      expect(expectPacket(await c.next(), "ERROR").code).toBe(1);
      expect(Date.now() - t0).toBeLessThan(500);
      c.send(encodeRequest("RRQ", "file.bin", "mail"), port);
      expect(expectPacket(await c.next(), "ERROR").code).toBe(4);
      await until(() => records.length === 3);
      expect(records.map((r) => r.outcome).sort()).toEqual(["denied", "error", "not-found"]);
      c.close();
    });
  });

  test("provider: virtual data with the client address, trusted file outside the root, throw -> ERROR 0, undefined falls through", async () => {
    const seen: string[] = [];
    await withServer(
      {
        provider: (path, client) => {
          seen.push(`${path}@${client.address}`);
          if (path === "grub/grub.cfg")
            return { kind: "data", data: Buffer.from(`set x=${client.address}\n`) };
          if (path === "kernels/vmlinuz") return { kind: "file", path: outside };
          if (path === "boom") throw new Error("resolver down");
          return undefined;
        },
      },
      async ({ port, lines }) => {
        const c = await RawClient.open();
        expect((await fetchRaw(c, port, "/grub/grub.cfg", [["tsize", "0"]])).data.toString()).toBe(
          "set x=127.0.0.1\n",
        );
        expect((await fetchRaw(c, port, "kernels/vmlinuz", [])).data.toString()).toBe("kernel bytes");
        expect((await fetchRaw(c, port, "x64\\grubx64.efi", [])).data.toString()).toBe("grub");
        c.send(encodeRequest("RRQ", "boom", "octet"), port);
        expect(expectPacket(await c.next(), "ERROR").code).toBe(0);
        expect(seen).toContain("grub/grub.cfg@127.0.0.1");
        expect(seen).toContain("x64/grubx64.efi@127.0.0.1");
        await until(() => lines.some((l) => String(l.reason).includes("resolver down")));
        expect(lines.some((l) => String(l.reason).includes("resolver down"))).toBe(true);
        c.close();
      },
    );
  });

  test("setProvider replaces the provider", async () => {
    await withServer({}, async ({ server, port }) => {
      const c = await RawClient.open();
      server.setProvider(() => ({ kind: "data", data: Buffer.from("v2") }));
      expect((await fetchRaw(c, port, "anything", [])).data.toString()).toBe("v2");
      c.close();
    });
  });

  test("concurrent transfers of one file share a single descriptor", async () => {
    await withServer({ timeoutMs: 5000 }, async ({ server, port }) => {
      const clients = await Promise.all(Array.from({ length: 100 }, () => RawClient.open()));
      for (const c of clients) c.send(encodeRequest("RRQ", "file.bin", "octet"), port);
      const firsts = await Promise.all(clients.map((c) => c.next()));
      expect(firsts.every((f) => f?.packet.op === "DATA")).toBe(true);
      expect(server.counters()).toMatchObject({ active: 100, openFiles: 1 });
      for (const c of clients) c.close();
    });
  });

  test("a retransmitted request is not a second transfer; the transfer limit answers ERROR 0", async () => {
    await withServer({ timeoutMs: 5000, maxTransfers: 1 }, async ({ port, server }) => {
      const c = await RawClient.open();
      const rrq = encodeRequest("RRQ", "file.bin", "octet");
      c.send(rrq, port);
      c.send(rrq, port);
      // One answer (however late the loop is), and no second one for the copy that followed at once.
      expectPacket(await c.next(), "DATA");
      expect(await c.drain(300)).toEqual([]);
      expect(server.counters().active).toBe(1);
      const other = await RawClient.open();
      other.send(rrq, port);
      const busy = expectPacket(await other.next(), "ERROR");
      expect(busy.message).toMatch(/busy/);
      c.close();
      other.close();
    });
  });

  test("a request repeated after half a timeout is answered again at once, by the same transfer", async () => {
    await withServer({ timeoutMs: 2000 }, async ({ port, server, records }) => {
      const c = await RawClient.open();
      const rrq = encodeRequest("RRQ", "file.bin", "octet", [["tsize", "0"]]);
      c.send(rrq, port);
      const first = await c.next();
      expectPacket(first, "OACK");
      // The client's own timeout: as if that OACK was lost, it sends the same request from the same port.
      await new Promise((resolve) => setTimeout(resolve, 1100));
      c.send(rrq, port);
      // The server's timer would resend only at 2 s: an OACK before then answers the repeated request.
      const again = await c.next(800);
      expectPacket(again, "OACK");
      expect(again?.from.port).toBe(first?.from.port);
      expect(server.counters().active).toBe(1);
      c.send(encodeError(8, "size probe"), first?.from.port as number);
      await until(() => records.length === 1);
      expect(records[0]).toMatchObject({ outcome: "size-probe", retransmits: 1 });
      c.close();
    });
  });

  test("a stale copy of the request, after the client acknowledged data, is dropped", async () => {
    await withServer({ timeoutMs: 2000 }, async ({ port }) => {
      const c = await RawClient.open();
      const rrq = encodeRequest("RRQ", "file.bin", "octet");
      c.send(rrq, port);
      const first = await c.next();
      expect(expectPacket(first, "DATA").block).toBe(1);
      const tid = first?.from.port as number;
      c.send(encodeAck(1), tid);
      expect(expectPacket(await c.next(), "DATA").block).toBe(2); // sent by the pump, where there is one
      await new Promise((resolve) => setTimeout(resolve, 1100));
      // Neither this transfer's first answer again nor a second transfer: the copy is stale.
      c.send(rrq, port);
      expect(await c.drain(300)).toEqual([]);
      c.send(encodeAck(2), tid);
      expect(expectPacket(await c.next(), "DATA").block).toBe(3);
      c.close();
    });
  });

  test("close() aborts running transfers with an ERROR and resolves quickly", async () => {
    const { server, port } = await startServer({ root, transport, timeoutMs: 5000 });
    const c = await RawClient.open();
    c.send(encodeRequest("RRQ", "file.bin", "octet"), port);
    expectPacket(await c.next(), "DATA");
    const t0 = Date.now();
    await server.close();
    expect(Date.now() - t0).toBeLessThan(5000);
    const err = expectPacket(await c.next(), "ERROR");
    expect(err.message).toMatch(/shutting down/);
    c.close();
  });
});
