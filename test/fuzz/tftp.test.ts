/** Fuzzing the TFTP codec and the request path, down to a live server that must never leave its root. */
import { createSocket } from "node:dgram";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { normaliseRequestPath } from "../../src/files/paths.js";
import { negotiateOptions } from "../../src/tftp/options.js";
import {
  decodePacket,
  ErrorCode,
  encodeAck,
  encodeData,
  encodeError,
  encodeOack,
  encodeRequest,
} from "../../src/tftp/packet.js";
import type { TftpServer } from "../../src/tftp/server.js";
import { startServer, tempDir } from "../tftp/helpers.js";
import { FUZZ_RUNS, fuzz, fuzzTimeout } from "./harness.js";

/** Strings without NUL (TFTP's separator), in latin1 as on the wire. */
const field = fc
  .array(fc.integer({ min: 1, max: 255 }), { maxLength: 60 })
  .map((a) => String.fromCharCode(...a));
/** Path pieces an attacker would try, mixed with arbitrary text. */
const piece = fc.oneof(
  fc.constantFrom(
    "..",
    ".",
    "",
    "/",
    "\\",
    "%2e%2e",
    "..\\",
    "etc",
    "passwd",
    "secret",
    "root",
    "x64",
    "\u0000",
    "\u007f",
  ),
  field,
);
const hostilePath = fc
  .array(piece, { maxLength: 8 })
  .chain((parts) => fc.constantFrom("/", "\\", "//").map((sep) => parts.join(sep)));

describe("fuzz: TFTP codec", () => {
  it(
    "decodes any datagram without throwing",
    async () => {
      await fuzz(
        "tftp-decode",
        fc.property(fc.uint8Array({ maxLength: 1600 }), (bytes) => {
          const r = decodePacket(Buffer.from(bytes));
          if (!r.ok) expect(typeof r.reason).toBe("string");
        }),
      );
    },
    fuzzTimeout(0.05),
  );

  it(
    "every packet kind encodes and decodes back",
    async () => {
      const opts = fc.uniqueArray(
        fc.tuple(
          field.map((s) => s.toLowerCase()).filter((s) => s !== ""),
          field,
        ),
        {
          selector: ([k]) => k,
          maxLength: 6,
        },
      );
      await fuzz(
        "tftp-roundtrip",
        fc.property(
          fc.oneof(
            fc.record({
              op: fc.constantFrom("RRQ" as const, "WRQ" as const),
              filename: field.filter((s) => s !== ""),
              mode: fc.constantFrom("octet", "netascii"),
              options: opts,
            }),
            fc.record({
              op: fc.constant("DATA" as const),
              block: fc.nat({ max: 0xffff }),
              data: fc.uint8Array({ maxLength: 1468 }),
            }),
            fc.record({ op: fc.constant("ACK" as const), block: fc.nat({ max: 0xffff }) }),
            fc.record({ op: fc.constant("ERROR" as const), code: fc.nat({ max: 8 }), message: field }),
            fc.record({ op: fc.constant("OACK" as const), options: opts }),
          ),
          (p) => {
            const wire =
              p.op === "RRQ" || p.op === "WRQ"
                ? encodeRequest(p.op, p.filename, p.mode, p.options)
                : p.op === "DATA"
                  ? encodeData(p.block, Buffer.from(p.data))
                  : p.op === "ACK"
                    ? encodeAck(p.block)
                    : p.op === "ERROR"
                      ? encodeError(p.code, p.message)
                      : encodeOack(p.options);
            const d = decodePacket(wire);
            if (!d.ok) {
              // The decoder may refuse what no client sends (an over-long name, an empty OACK); never throw.
              expect(p.op === "RRQ" || p.op === "WRQ" || p.op === "OACK").toBe(true);
              return;
            }
            const got = d.packet;
            expect(got.op).toBe(p.op);
            if ((got.op === "RRQ" || got.op === "WRQ") && "filename" in p) {
              expect(got.filename).toBe(p.filename);
              expect([...got.options]).toEqual(p.options);
            }
            if (got.op === "DATA" && "data" in p)
              expect(Buffer.from(got.data).equals(Buffer.from(p.data))).toBe(true);
            if (got.op === "ACK" && "block" in p) expect(got.block).toBe(p.block);
            if (got.op === "ERROR" && "message" in p)
              expect([got.code, got.message]).toEqual([p.code, p.message]);
            if (got.op === "OACK" && "options" in p) expect([...got.options]).toEqual(p.options);
          },
        ),
      );
    },
    fuzzTimeout(0.1),
  );

  it(
    "option negotiation stays within the server's caps for any options",
    async () => {
      const name = fc.constantFrom("blksize", "windowsize", "timeout", "tsize", "BLKSIZE", "x");
      const value = fc.oneof(
        fc.nat().map(String),
        field,
        fc.constantFrom("0", "-1", "8", "65464", "65535", "1e9", " 512"),
      );
      await fuzz(
        "tftp-options",
        fc.property(fc.array(fc.tuple(name, value), { maxLength: 6 }), (pairs) => {
          const n = negotiateOptions(new Map(pairs.map(([k, v]) => [k.toLowerCase(), v])), {
            maxBlksize: 1468,
            maxWindowsize: 64,
          });
          expect(n.blksize).toBeGreaterThanOrEqual(8);
          expect(n.blksize).toBeLessThanOrEqual(1468);
          expect(n.windowsize).toBeGreaterThanOrEqual(1);
          expect(n.windowsize * n.blksize).toBeLessThanOrEqual(Math.max(64 * 1024, n.blksize));
        }),
      );
    },
    fuzzTimeout(0.05),
  );

  it(
    "request path normalisation never climbs above the root",
    async () => {
      await fuzz(
        "tftp-path",
        fc.property(hostilePath, (path) => {
          const r = normaliseRequestPath(path);
          if (!r.ok) return;
          const segments = r.path.split("/");
          expect(segments.every((s) => s !== "" && s !== "." && s !== "..")).toBe(true);
        }),
      );
    },
    fuzzTimeout(0.05),
  );
});

describe("fuzz: TFTP request path on a live server", () => {
  const SECRET = "outside the root\n";
  let server: TftpServer;
  let port: number;
  let cleanup: () => Promise<void>;

  beforeAll(async () => {
    const t = await tempDir("nbfz-tftp-");
    cleanup = t.cleanup;
    const root = join(t.dir, "root");
    await mkdir(join(root, "x64"), { recursive: true });
    await writeFile(join(root, "x64", "inside"), "inside\n");
    await writeFile(join(t.dir, "secret"), SECRET);
    await writeFile(join(t.dir, "passwd"), SECRET);
    const started = await startServer({ root, retries: 1, timeoutMs: 200, maxTransfers: 4096 });
    server = started.server;
    port = started.port;
  });
  afterAll(async () => {
    await server?.close();
    await cleanup?.();
  });

  it(
    "hostile RRQs get an answer or silence, never a byte from outside the root, and the server stays up",
    async () => {
      // Requests go out paced, answers are checked as they arrive: a malformed request is dropped without
      // an answer, so waiting for one per case would measure silence. Every transfer that starts is
      // stopped with an ERROR so the server is not left retransmitting.
      const socket = createSocket("udp4");
      await new Promise<void>((r) => socket.bind(0, "127.0.0.1", () => r()));
      let answers = 0;
      let leaked: string | undefined;
      let lastGood: Buffer | undefined;
      socket.on("message", (data, rinfo) => {
        answers++;
        if (data.includes(Buffer.from(SECRET))) leaked = `${rinfo.port}: ${data.toString("latin1", 0, 80)}`;
        if (data.includes(Buffer.from("inside\n"))) lastGood = data;
        if (rinfo.port !== port)
          socket.send(encodeError(ErrorCode.NotDefined, "fuzz done"), rinfo.port, "127.0.0.1");
      });
      const runs = Math.min(FUZZ_RUNS, 100_000);
      try {
        await fuzz(
          "tftp-live-path",
          fc.asyncProperty(
            hostilePath,
            fc.constantFrom("octet", "netascii", "mail", "OCTET"),
            fc.boolean(),
            async (path, mode, withOptions) => {
              const options: [string, string][] = withOptions
                ? [
                    ["blksize", "1468"],
                    ["tsize", "0"],
                  ]
                : [];
              socket.send(encodeRequest("RRQ", path, mode, options), port, "127.0.0.1");
              await new Promise((r) => setTimeout(r, 1));
              expect(leaked).toBeUndefined();
            },
          ),
          runs,
        );
        await new Promise((r) => setTimeout(r, 500));
        expect(leaked).toBeUndefined();
        expect(answers).toBeGreaterThan(runs / 4);
        // Still serving.
        socket.send(encodeRequest("RRQ", "x64/inside", "octet"), port, "127.0.0.1");
        const deadline = Date.now() + 3000;
        while (!lastGood && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
        expect(lastGood && decodePacket(lastGood)).toMatchObject({
          ok: true,
          packet: { op: "DATA", block: 1 },
        });
        console.log(
          `tftp-live-path: ${runs} hostile requests, ${answers} answers, none from outside the root`,
        );
      } finally {
        socket.close();
      }
    },
    fuzzTimeout(0.6),
  );
});
