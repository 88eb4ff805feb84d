import { describe, expect, it } from "vitest";
import { archCodeFromVendorClass, archFromCode, isIpxeUserClass } from "../../src/dhcp/arch.js";
import { makeBootPolicy } from "../../src/dhcp/boot-policy.js";
import { dhcpConfigSchema } from "../../src/dhcp/config.js";
import {
  enc,
  getClientUuid,
  getString,
  getU16List,
  Opt,
  parseRelayAgent,
  renderOption,
  validLength,
} from "../../src/dhcp/options.js";
import {
  decodePacket,
  emptyPacket,
  encodePacket,
  MAGIC_COOKIE,
  macOf,
  macToChaddr,
} from "../../src/dhcp/packet.js";

function sample(): ReturnType<typeof emptyPacket> {
  const p = emptyPacket();
  p.xid = 0xdeadbeef;
  p.chaddr = macToChaddr("52:54:00:12:34:56");
  p.options.set(Opt.MessageType, enc.u8(1));
  p.options.set(Opt.ParameterRequestList, Buffer.from([1, 3, 6, 50, 60, 66, 67, 93, 97]));
  p.options.set(Opt.VendorClass, enc.string("PXEClient:Arch:00007:UNDI:003016"));
  p.options.set(Opt.ClientArch, enc.u16(7));
  return p;
}

function rawWithOptions(options: number[], mutate?: (b: Buffer) => void): Buffer {
  const buf = Buffer.alloc(240 + options.length);
  buf[0] = 1;
  buf[1] = 1;
  buf[2] = 6;
  buf.writeUInt32BE(MAGIC_COOKIE, 236);
  Buffer.from(options).copy(buf, 240);
  mutate?.(buf);
  return buf;
}

describe("packet codec", () => {
  it("round-trips header fields and options", () => {
    const p = sample();
    p.flags = 0x8000;
    p.giaddr = "10.1.2.3";
    p.ciaddr = "10.9.8.7";
    const r = encodePacket(p);
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.buffer.length).toBeGreaterThanOrEqual(300);
    const d = decodePacket(r.buffer);
    expect(d.ok).toBe(true);
    if (!d.ok) return;
    expect(d.packet.xid).toBe(0xdeadbeef);
    expect(d.packet.flags).toBe(0x8000);
    expect(d.packet.giaddr).toBe("10.1.2.3");
    expect(d.packet.ciaddr).toBe("10.9.8.7");
    expect(macOf(d.packet)).toBe("52:54:00:12:34:56");
    expect(getString(d.packet.options, Opt.VendorClass)).toBe("PXEClient:Arch:00007:UNDI:003016");
    expect(getU16List(d.packet.options, Opt.ClientArch)).toEqual([7]);
  });

  it("rejects truncated packets, wrong cookie, bad op", () => {
    const good = encodePacket(sample());
    if (!good.ok) throw new Error("encode");
    expect(decodePacket(good.buffer.subarray(0, 239))).toMatchObject({
      ok: false,
      error: expect.stringMatching(/truncated/),
    });
    const bad = Buffer.from(good.buffer);
    bad.writeUInt32BE(0x63825364, 236);
    expect(decodePacket(bad)).toMatchObject({ ok: false, error: expect.stringMatching(/cookie/) });
    const op = Buffer.from(good.buffer);
    op[0] = 7;
    expect(decodePacket(op)).toMatchObject({ ok: false, error: expect.stringMatching(/op/) });
  });

  it("rejects an option whose length runs past the end, and a missing length byte", () => {
    expect(decodePacket(rawWithOptions([53, 1, 1, 60, 20, 65, 66]))).toMatchObject({
      ok: false,
      error: expect.stringMatching(/past the end/),
    });
    expect(decodePacket(rawWithOptions([53, 1, 1, 60]))).toMatchObject({
      ok: false,
      error: expect.stringMatching(/no length/),
    });
  });

  it("accepts pad bytes and a missing End option", () => {
    const d = decodePacket(rawWithOptions([0, 0, 53, 1, 3, 0]));
    expect(d.ok && d.packet.options.get(53)?.[0]).toBe(3);
  });

  it("joins split long options (RFC 3396) and splits them when encoding", () => {
    const d = decodePacket(rawWithOptions([53, 1, 1, 43, 2, 0xaa, 0xbb, 12, 1, 0x41, 43, 1, 0xcc, 255]));
    expect(d.ok).toBe(true);
    if (!d.ok) return;
    expect(d.packet.options.get(43)?.toString("hex")).toBe("aabbcc");
    const p = emptyPacket(2);
    const long = Buffer.alloc(300, 7);
    p.options.set(Opt.MessageType, enc.u8(2));
    p.options.set(Opt.VendorSpecific, long);
    const r = encodePacket(p, { maxMessageSize: 1500 });
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    const back = decodePacket(r.buffer);
    expect(back.ok && back.packet.options.get(43)?.equals(long)).toBe(true);
  });

  it("reads options from file and sname when option 52 says so, and ignores 52 inside them (no loop)", () => {
    const buf = rawWithOptions([53, 1, 1, 52, 1, 3, 255], (b) => {
      // file field (108..235): option 67 and a nested overload that must be ignored
      Buffer.from([67, 3, 0x61, 0x62, 0x63, 52, 1, 3, 255]).copy(b, 108);
      Buffer.from([60, 3, 0x50, 0x58, 0x45, 255]).copy(b, 44);
    });
    const d = decodePacket(buf);
    expect(d.ok).toBe(true);
    if (!d.ok) return;
    expect(getString(d.packet.options, 67)).toBe("abc");
    expect(getString(d.packet.options, 60)).toBe("PXE");
    expect(d.packet.file).toBe("");
    expect(d.packet.options.has(52)).toBe(false);
  });

  it("rejects bad option 52 values", () => {
    expect(decodePacket(rawWithOptions([53, 1, 1, 52, 1, 9]))).toMatchObject({ ok: false });
    expect(decodePacket(rawWithOptions([53, 1, 1, 52, 2, 1, 1]))).toMatchObject({ ok: false });
  });

  it("respects the client's maximum message size, never below 576, using overload then dropping", () => {
    const p = emptyPacket(2);
    p.options.set(Opt.MessageType, enc.u8(2));
    p.options.set(Opt.DomainName, Buffer.alloc(200, 0x61));
    p.options.set(Opt.VendorSpecific, Buffer.alloc(120, 0x62));
    p.options.set(Opt.HostName, Buffer.alloc(40, 0x63));
    // 548 bytes of BOOTP: 240 + 3 + 202 + 122 + 42 option bytes do not fit in the options area alone -> overload
    const small = encodePacket(p, { maxMessageSize: 300 });
    expect(small.ok).toBe(true);
    if (!small.ok) return;
    expect(small.buffer.length).toBeLessThanOrEqual(576 - 28);
    const d = decodePacket(small.buffer);
    expect(d.ok && d.packet.options.get(Opt.DomainName)?.length).toBe(200);
    expect(d.ok && d.packet.options.get(Opt.VendorSpecific)?.length).toBe(120);
    expect(d.ok && d.packet.options.get(Opt.HostName)?.length).toBe(40);
    expect(small.buffer[240 + 3 + 202]).toBe(Opt.Overload);
    // file in use: no overload room, so the droppable option goes
    p.file = "x64/shimx64.efi";
    p.sname = "server";
    const dropped = encodePacket(p, { maxMessageSize: 576, droppable: [Opt.DomainName, Opt.HostName] });
    expect(dropped.ok && dropped.dropped).toEqual([Opt.DomainName]);
    expect(encodePacket(p, { maxMessageSize: 576 }).ok).toBe(false);
    const big = encodePacket(p, { maxMessageSize: 1500 });
    expect(big.ok && big.buffer.length).toBeGreaterThan(576);
  });

  it("decodes option 97 UUID, option 82 sub-options and types RFC 2132 values", () => {
    const uuid = Buffer.concat([Buffer.from([0]), Buffer.from("00112233445566778899aabbccddeeff", "hex")]);
    const opts = new Map([[Opt.ClientUuid, uuid]]);
    expect(getClientUuid(opts)).toBe("00112233-4455-6677-8899-aabbccddeeff");
    const relay = parseRelayAgent(Buffer.from([1, 2, 0xab, 0xcd, 2, 1, 9]));
    expect(relay?.get(1)?.toString("hex")).toBe("abcd");
    expect(parseRelayAgent(Buffer.from([1, 5, 0]))).toBeUndefined();
    expect(renderOption(3, Buffer.from([10, 0, 0, 1, 10, 0, 0, 2]))).toEqual(["10.0.0.1", "10.0.0.2"]);
    expect(renderOption(51, enc.u32(3600))).toBe(3600);
    expect(renderOption(19, Buffer.from([1]))).toBe(true);
    expect(validLength(1, Buffer.alloc(3))).toBe(false);
    expect(validLength(3, Buffer.alloc(8))).toBe(true);
  });

  it("never throws on random bytes (fuzz)", () => {
    let seed = 12345;
    const rand = (): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed;
    };
    let ok = 0;
    for (let i = 0; i < 10000; i++) {
      const len = rand() % 700;
      const buf = Buffer.alloc(len);
      for (let j = 0; j < len; j++) buf[j] = rand() & 255;
      if (len >= 240 && i % 2 === 0) {
        buf[0] = 1;
        buf.writeUInt32BE(MAGIC_COOKIE, 236);
        buf[2] = 6;
      }
      const d = decodePacket(buf);
      expect(typeof d.ok).toBe("boolean");
      if (d.ok) {
        ok++;
        // whatever decoded must re-encode
        expect(() => encodePacket(d.packet, { maxMessageSize: 1500 })).not.toThrow();
      }
    }
    expect(ok).toBeGreaterThan(0);
  });
});

describe("architecture (option 93)", () => {
  it.each([
    [7, "x64", false],
    [9, "x64", false],
    [11, "aa64", false],
    [16, "x64", true],
    [19, "aa64", true],
  ])("code %i -> %s http=%s", (code, arch, http) => {
    expect(archFromCode(code)).toEqual({ kind: "uefi", arch, http });
  });
  it("0 is legacy BIOS, 6 (x86 UEFI) is unknown, no option is absent", () => {
    expect(archFromCode(0)).toEqual({ kind: "bios" });
    expect(archFromCode(6)).toEqual({ kind: "unknown", code: 6 });
    expect(archFromCode(undefined)).toEqual({ kind: "absent" });
    expect(archCodeFromVendorClass("PXEClient:Arch:00011:UNDI:003000")).toBe(11);
  });
});

describe("boot policy", () => {
  const base = {
    loaders: { x64: { shim: "x64/shimx64.efi" }, aa64: { shim: "aa64/shimaa64.efi" } },
    httpBaseUrl: "http://10.0.0.1:8080/boot/",
    nextServer: "10.0.0.1",
  };
  const req = (archCode: number | undefined, vendorClass = "PXEClient", mac = "52:54:00:00:00:01") => ({
    mac,
    archCode,
    vendorClass,
    uuid: undefined,
    interface: "eth1",
  });
  it("picks the loader per architecture, HTTP clients get a URL and HTTPClient", () => {
    const policy = makeBootPolicy(base);
    expect(policy(req(7))).toEqual({
      bootFile: "x64/shimx64.efi",
      nextServer: "10.0.0.1",
      vendorClass: "PXEClient",
      arch: "x64",
    });
    expect(policy(req(11))?.bootFile).toBe("aa64/shimaa64.efi");
    expect(policy(req(19, "HTTPClient"))).toEqual({
      bootFile: "http://10.0.0.1:8080/boot/aa64/shimaa64.efi",
      nextServer: "10.0.0.1",
      vendorClass: "HTTPClient",
      arch: "aa64",
    });
    expect(policy(req(16, "HTTPClient"))?.bootFile).toBe("http://10.0.0.1:8080/boot/x64/shimx64.efi");
    expect(policy(req(0))).toBeUndefined();
    expect(policy(req(99))).toBeUndefined();
  });
  it("applies the per-machine override and the unknown-machine policy", () => {
    const policy = makeBootPolicy({
      ...base,
      archOverride: (mac) => (mac === "52:54:00:00:00:01" ? "aa64" : undefined),
      unknownMachines: "ignore",
      isKnown: (mac) => mac !== "52:54:00:00:00:99",
    });
    expect(policy(req(7))?.arch).toBe("aa64");
    expect(policy(req(7, "PXEClient", "52:54:00:00:00:02"))?.arch).toBe("x64");
    expect(policy(req(7, "PXEClient", "52:54:00:00:00:99"))).toBeUndefined();
    const boot = makeBootPolicy({ ...base, unknownMachines: "boot", isKnown: () => false });
    expect(boot(req(7))?.bootFile).toBe("x64/shimx64.efi");
  });
  it("starts `loader: ipxe` machines with iPXE, and gives iPXE itself its machine's script URL", () => {
    const FAST = "52:54:00:00:00:0f";
    const policy = makeBootPolicy({
      ...base,
      loaders: {
        x64: { shim: "x64/shimx64.efi", ipxe: "x64/ipxe.efi" },
        aa64: { shim: "aa64/shimaa64.efi" },
      },
      loaderKind: (mac) => (mac === FAST ? "ipxe" : "shim"),
      ipxeScriptPath: (mac) => `ipxe/${mac}.ipxe`,
    });
    expect(policy(req(7, "PXEClient", FAST))?.bootFile).toBe("x64/ipxe.efi");
    expect(policy(req(16, "HTTPClient", FAST))?.bootFile).toBe("http://10.0.0.1:8080/boot/x64/ipxe.efi");
    expect(policy(req(7))?.bootFile).toBe("x64/shimx64.efi");
    // No iPXE for aa64: the machine keeps the signed path rather than getting nothing.
    expect(policy(req(11, "PXEClient", FAST))?.bootFile).toBe("aa64/shimaa64.efi");
    expect(policy({ ...req(7, "PXEClient:Arch:00007:UNDI:003010", FAST), ipxe: true })).toEqual({
      bootFile: `http://10.0.0.1:8080/boot/ipxe/${FAST}.ipxe`,
      nextServer: "10.0.0.1",
      vendorClass: "PXEClient",
      arch: "x64",
    });
    const noHttp = makeBootPolicy({ ...base, httpBaseUrl: undefined, ipxeScriptPath: (m) => m });
    expect(noHttp({ ...req(7), ipxe: true })).toBeUndefined();
  });
  it("knows iPXE by option 77, bare or as an RFC 3004 list", () => {
    expect(isIpxeUserClass(Buffer.from("iPXE"))).toBe(true);
    expect(isIpxeUserClass(Buffer.from("\x04iPXE", "latin1"))).toBe(true);
    expect(isIpxeUserClass(Buffer.from("ipxe"))).toBe(false);
    expect(isIpxeUserClass(Buffer.from("iPXE2"))).toBe(false);
    expect(isIpxeUserClass(undefined)).toBe(false);
  });
});

describe("dhcp config schema", () => {
  const good = {
    mode: "full",
    interfaces: ["eth1"],
    subnets: [
      {
        subnet: "10.0.0.0/24",
        range: { start: "10.0.0.100", end: "10.0.0.200" },
        router: "10.0.0.1",
        dns: ["10.0.0.1"],
      },
    ],
    reservations: [{ mac: "52:54:00:AA:BB:CC", address: "10.0.0.50" }],
  };
  it("accepts a good config with defaults", () => {
    const c = dhcpConfigSchema.parse(good);
    expect(c.port).toBe(67);
    expect(c.proxy_port).toBe(4011);
    expect(c.reservations[0]?.mac).toBe("52:54:00:aa:bb:cc");
    expect(c.subnets[0]?.lease_time).toBe(3600);
  });
  it("reports bad addresses, ranges outside the subnet, and unknown keys", () => {
    const bad = structuredClone(good) as Record<string, unknown> & typeof good;
    bad.subnets[0] = {
      ...bad.subnets[0],
      range: { start: "10.0.0.300", end: "10.0.0.200" },
    } as (typeof good.subnets)[0];
    const r = dhcpConfigSchema.safeParse({ ...bad, typo_key: 1 });
    expect(r.success).toBe(false);
    const messages = r.error?.issues.map((i) => `${i.path.join(".")}: ${i.message}`) ?? [];
    expect(messages).toContain("subnets.0.range.start: 10.0.0.300 is not an IPv4 address");
    expect(messages.some((m) => /typo_key/.test(m))).toBe(true);
    const outside = dhcpConfigSchema.safeParse({
      ...good,
      subnets: [{ ...good.subnets[0], range: { start: "10.0.0.100", end: "10.0.1.5" } }],
    });
    const outsideMessages = outside.error?.issues.map((i) => `${i.path.join(".")}: ${i.message}`) ?? [];
    expect(outsideMessages).toContain("subnets.0.range.end: 10.0.1.5 is not in subnet 10.0.0.0/24");
    const cidr = dhcpConfigSchema.safeParse({
      ...good,
      subnets: [{ ...good.subnets[0], subnet: "10.0.0.0/33" }],
    });
    expect(cidr.error?.issues[0]?.message).toMatch(/not an IPv4 CIDR/);
  });
});
