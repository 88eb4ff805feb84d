import { describe, expect, test } from "vitest";
import { normaliseRequestPath } from "../../src/files/paths.js";
import { toNetascii } from "../../src/files/sources.js";
import { negotiateOptions } from "../../src/tftp/options.js";
import {
  decodePacket,
  encodeAck,
  encodeData,
  encodeError,
  encodeOack,
  encodeRequest,
  MAX_FILENAME_LENGTH,
} from "../../src/tftp/packet.js";
import { RateLimiter } from "../../src/tftp/ratelimit.js";

const caps = { maxBlksize: 1468, maxWindowsize: 64 };

function raw(...parts: (number[] | string)[]): Buffer {
  return Buffer.concat(parts.map((p) => (typeof p === "string" ? Buffer.from(p, "latin1") : Buffer.from(p))));
}

describe("packet codec", () => {
  test("RRQ with options, names case-insensitive, first occurrence wins", () => {
    const buf = raw(
      [0, 1],
      "shimx64.efi\0OCTET\0TSize\x000\0BLKSIZE\x001468\0windowsize\x004\0blksize\x00512\0",
    );
    const d = decodePacket(buf);
    expect(d.ok).toBe(true);
    if (!d.ok || d.packet.op !== "RRQ") throw new Error("not RRQ");
    expect(d.packet.filename).toBe("shimx64.efi");
    expect(d.packet.mode).toBe("octet");
    expect([...d.packet.options]).toEqual([
      ["tsize", "0"],
      ["blksize", "1468"],
      ["windowsize", "4"],
    ]);
  });

  test("round trip of every packet type", () => {
    const rrq = decodePacket(encodeRequest("RRQ", "a/b", "octet", [["blksize", "1024"]]));
    expect(rrq).toMatchObject({ ok: true, packet: { op: "RRQ", filename: "a/b", mode: "octet" } });
    expect(decodePacket(encodeRequest("WRQ", "x", "netascii"))).toMatchObject({
      ok: true,
      packet: { op: "WRQ", mode: "netascii" },
    });
    const data = decodePacket(encodeData(70000, Buffer.from("hello")));
    expect(data).toMatchObject({ ok: true, packet: { op: "DATA", block: 70000 & 0xffff } });
    if (data.ok && data.packet.op === "DATA") expect(data.packet.data.toString()).toBe("hello");
    expect(decodePacket(encodeAck(65535))).toEqual({ ok: true, packet: { op: "ACK", block: 65535 } });
    expect(decodePacket(encodeError(8, "size probe"))).toEqual({
      ok: true,
      packet: { op: "ERROR", code: 8, message: "size probe" },
    });
    const oack = decodePacket(
      encodeOack([
        ["tsize", "42"],
        ["blksize", "1468"],
      ]),
    );
    expect(oack.ok && oack.packet.op === "OACK" && [...oack.packet.options]).toEqual([
      ["tsize", "42"],
      ["blksize", "1468"],
    ]);
    expect(encodeData(1, Buffer.alloc(0)).length).toBe(4);
  });

  test("malformed input yields an error value, never a throw", () => {
    const cases: Buffer[] = [
      Buffer.alloc(0),
      raw([0]),
      raw([0, 1]),
      raw([0, 1], "file"),
      raw([0, 1], "file\0"),
      raw([0, 1], "file\0octet"),
      raw([0, 1], "\0octet\0"),
      raw([0, 1], "file\0binary\0"),
      raw([0, 3, 0]),
      raw([0, 4]),
      raw([0, 5, 0]),
      raw([0, 6], "blksize"),
      raw([0, 9, 1, 2]),
      raw([0, 1], `${"a".repeat(MAX_FILENAME_LENGTH + 1)}\0octet\0`),
    ];
    for (const c of cases) {
      const d = decodePacket(c);
      expect(d.ok, c.toString("hex")).toBe(false);
      if (!d.ok) expect(d.reason).toMatch(/\w/);
    }
    // random bytes: no throw
    for (let i = 0; i < 2000; i++) {
      const b = Buffer.from(
        Array.from({ length: Math.floor(Math.random() * 40) }, () => Math.floor(Math.random() * 256)),
      );
      expect(() => decodePacket(b)).not.toThrow();
    }
  });

  test("a trailing option name without value is ignored", () => {
    const d = decodePacket(raw([0, 1], "f\0octet\0blksize\x001024\0tsize\0"));
    expect(d.ok && d.packet.op === "RRQ" && [...d.packet.options]).toEqual([["blksize", "1024"]]);
  });
});

describe("option negotiation", () => {
  test("OVMF size probe: tsize, blksize 1468, windowsize 4", () => {
    const n = negotiateOptions(
      new Map([
        ["tsize", "0"],
        ["blksize", "1468"],
        ["windowsize", "4"],
      ]),
      caps,
    );
    expect(n).toMatchObject({ blksize: 1468, windowsize: 4, tsizeRequested: true });
    expect(n.oack).toEqual([
      ["blksize", "1468"],
      ["windowsize", "4"],
    ]);
  });

  test("clamps to server caps, ignores out-of-range and unknown options", () => {
    const n = negotiateOptions(
      new Map([
        ["blksize", "65464"],
        ["windowsize", "65535"],
        ["timeout", "0"],
        ["multicast", ""],
        ["rollover", "0"],
      ]),
      { ...caps, maxWindowBytes: 1 << 30 },
    );
    expect(n.blksize).toBe(1468);
    expect(n.windowsize).toBe(64);
    expect(n.timeoutSec).toBeUndefined();
    expect(n.oack).toEqual([
      ["blksize", "1468"],
      ["windowsize", "64"],
    ]);
    expect(n.ignored).toContain("timeout=0");
  });

  test.each([
    ["blksize", "7"],
    ["blksize", "abc"],
    ["blksize", "-1"],
    ["timeout", "256"],
    ["windowsize", "0"],
    ["tsize", "x"],
  ])("%s=%s is ignored (RFC default applies, no OACK entry)", (name, value) => {
    const n = negotiateOptions(new Map([[name, value]]), caps);
    expect(n.oack).toEqual([]);
    expect(n.blksize).toBe(512);
    expect(n.windowsize).toBe(1);
    expect(n.tsizeRequested).toBe(false);
  });

  test("a larger configured cap allows big blocks up to 65464", () => {
    expect(
      negotiateOptions(new Map([["blksize", "65464"]]), { maxBlksize: 65464, maxWindowsize: 1 }).blksize,
    ).toBe(65464);
    expect(
      negotiateOptions(new Map([["blksize", "9000"]]), { maxBlksize: 100000, maxWindowsize: 1 }).blksize,
    ).toBe(9000);
    expect(negotiateOptions(new Map([["timeout", "255"]]), caps).timeoutSec).toBe(255);
  });
});

describe("path normalisation", () => {
  test.each([
    ["/grub/grub.cfg", "grub/grub.cfg"],
    ["\\EFI\\BOOT\\shimx64.efi", "EFI/BOOT/shimx64.efi"],
    ["x64//./grubx64.efi", "x64/grubx64.efi"],
    ["a/b/../c", "a/c"],
    ["/etc/passwd", "etc/passwd"],
  ])("%s -> %s", (input, expected) => {
    expect(normaliseRequestPath(input)).toEqual({ ok: true, path: expected });
  });

  test.each(["../../etc/passwd", "/..", "a/../../b", "..\\..\\x", "bad\u0001name", "/", "."])(
    "%j is refused",
    (input) => {
      expect(normaliseRequestPath(input).ok).toBe(false);
    },
  );
});

test("netascii conversion: LF -> CR LF, CR -> CR NUL", () => {
  expect(toNetascii(Buffer.from("a\nb\rc")).toString("latin1")).toBe("a\r\nb\r\0c");
  const plain = Buffer.from("abc");
  expect(toNetascii(plain)).toBe(plain);
});

test("rate limiter passes a burst then suppresses and reports the count", () => {
  let now = 0;
  const rl = new RateLimiter(2, 1000, () => now);
  expect(rl.take()).toBe(0);
  expect(rl.take()).toBe(0);
  expect(rl.take()).toBeNull();
  expect(rl.take()).toBeNull();
  now = 1000;
  expect(rl.take()).toBe(2);
});

test("windowsize is lowered so a window fits a client's receive buffer", () => {
  const n = negotiateOptions(
    new Map([
      ["blksize", "8192"],
      ["windowsize", "16"],
    ]),
    { maxBlksize: 65464, maxWindowsize: 64 },
  );
  expect(n.windowsize).toBe(8);
  expect(n.oack).toContainEqual(["windowsize", "8"]);
  expect(
    negotiateOptions(
      new Map([
        ["windowsize", "4"],
        ["blksize", "1468"],
      ]),
      caps,
    ).windowsize,
  ).toBe(4);
});
