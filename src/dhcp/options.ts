/**
 * DHCP option codes and value codecs (RFC 2132, RFC 3396, RFC 4578, RFC 3046). Pure functions.
 * Options are carried raw (`Buffer`) in a packet; these helpers give them a type.
 */

export const Opt = {
  Pad: 0,
  SubnetMask: 1,
  Router: 3,
  DnsServers: 6,
  HostName: 12,
  DomainName: 15,
  BroadcastAddress: 28,
  VendorSpecific: 43,
  RequestedAddress: 50,
  LeaseTime: 51,
  Overload: 52,
  MessageType: 53,
  ServerId: 54,
  ParameterRequestList: 55,
  Message: 56,
  MaxMessageSize: 57,
  RenewalTime: 58,
  RebindingTime: 59,
  VendorClass: 60,
  ClientId: 61,
  TftpServerName: 66,
  BootFileName: 67,
  UserClass: 77,
  RelayAgent: 82,
  ClientArch: 93,
  ClientNdi: 94,
  ClientUuid: 97,
  End: 255,
} as const;

export const MessageType = {
  Discover: 1,
  Offer: 2,
  Request: 3,
  Decline: 4,
  Ack: 5,
  Nak: 6,
  Release: 7,
  Inform: 8,
} as const;
export type MessageTypeCode = (typeof MessageType)[keyof typeof MessageType];

export const messageTypeName: Record<number, string> = {
  1: "DISCOVER",
  2: "OFFER",
  3: "REQUEST",
  4: "DECLINE",
  5: "ACK",
  6: "NAK",
  7: "RELEASE",
  8: "INFORM",
};

/** The value types of RFC 2132 (and the PXE options), used to render options for logs and to check lengths. */
export type OptionType =
  | "ip" // one IPv4 address
  | "ips" // one or more IPv4 addresses
  | "ippairs" // pairs of addresses (policy filter, static routes)
  | "u8"
  | "u16"
  | "u32"
  | "i32"
  | "u16s"
  | "u8s"
  | "bool"
  | "string"
  | "bytes";

const types: Record<number, OptionType> = {
  1: "ip",
  2: "i32",
  3: "ips",
  4: "ips",
  5: "ips",
  6: "ips",
  7: "ips",
  8: "ips",
  9: "ips",
  10: "ips",
  11: "ips",
  12: "string",
  13: "u16",
  14: "string",
  15: "string",
  16: "ip",
  17: "string",
  18: "string",
  19: "bool",
  20: "bool",
  21: "ippairs",
  22: "u16",
  23: "u8",
  24: "u32",
  25: "u16s",
  26: "u16",
  27: "bool",
  28: "ip",
  29: "bool",
  30: "bool",
  31: "bool",
  32: "ip",
  33: "ippairs",
  34: "bool",
  35: "u32",
  36: "bool",
  37: "u8",
  38: "u32",
  39: "bool",
  40: "string",
  41: "ips",
  42: "ips",
  43: "bytes",
  44: "ips",
  45: "ips",
  46: "u8",
  47: "string",
  48: "ips",
  49: "ips",
  50: "ip",
  51: "u32",
  52: "u8",
  53: "u8",
  54: "ip",
  55: "u8s",
  56: "string",
  57: "u16",
  58: "u32",
  59: "u32",
  60: "string",
  61: "bytes",
  64: "string",
  65: "ips",
  66: "string",
  67: "string",
  68: "ips",
  69: "ips",
  70: "ips",
  71: "ips",
  72: "ips",
  73: "ips",
  74: "ips",
  75: "ips",
  76: "ips",
  77: "bytes",
  82: "bytes",
  93: "u16s",
  94: "bytes",
  97: "bytes",
};

export function optionType(code: number): OptionType {
  return types[code] ?? "bytes";
}

const fixedLength: Partial<Record<OptionType, number>> = { ip: 4, u8: 1, u16: 2, u32: 4, i32: 4, bool: 1 };
const multipleOf: Partial<Record<OptionType, number>> = { ips: 4, ippairs: 8, u16s: 2 };

/** True when the raw value has a length its type allows (an option of the wrong length is ignored). */
export function validLength(code: number, value: Buffer): boolean {
  const type = optionType(code);
  const fixed = fixedLength[type];
  if (fixed !== undefined) return value.length === fixed;
  const unit = multipleOf[type];
  if (unit !== undefined) return value.length >= unit && value.length % unit === 0;
  return true;
}

export function ipToBuffer(ip: string): Buffer {
  const out = Buffer.alloc(4);
  out.writeUInt32BE(ipToInt(ip));
  return out;
}

/** Dotted quad to unsigned 32-bit integer; the caller has validated the text. Hot path: no split(). */
export function ipToInt(ip: string): number {
  let result = 0;
  let part = 0;
  for (let i = 0; i < ip.length; i++) {
    const c = ip.charCodeAt(i);
    if (c === 46) {
      result = result * 256 + part;
      part = 0;
    } else {
      part = part * 10 + (c - 48);
    }
  }
  return (result * 256 + part) >>> 0;
}

export function intToIp(n: number): string {
  return `${(n >>> 24) & 255}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}

export function readIp(buf: Buffer, offset = 0): string {
  return `${buf[offset]}.${buf[offset + 1]}.${buf[offset + 2]}.${buf[offset + 3]}`;
}

/** Options as the packet carries them: code → value (RFC 3396 parts already joined). */
export type OptionMap = Map<number, Buffer>;

/** Typed reads that return undefined when the option is missing or malformed. */
export function getIp(opts: OptionMap, code: number): string | undefined {
  const v = opts.get(code);
  return v !== undefined && v.length === 4 ? readIp(v) : undefined;
}
export function getU8(opts: OptionMap, code: number): number | undefined {
  const v = opts.get(code);
  return v !== undefined && v.length === 1 ? v[0] : undefined;
}
export function getU16(opts: OptionMap, code: number): number | undefined {
  const v = opts.get(code);
  return v !== undefined && v.length === 2 ? v.readUInt16BE(0) : undefined;
}
export function getU32(opts: OptionMap, code: number): number | undefined {
  const v = opts.get(code);
  return v !== undefined && v.length === 4 ? v.readUInt32BE(0) : undefined;
}
export function getString(opts: OptionMap, code: number): string | undefined {
  const v = opts.get(code);
  if (v === undefined) return undefined;
  // NUL-terminated strings are common (RFC 2132 says they should not be, clients do it anyway).
  const end = v.indexOf(0);
  return v.toString("latin1", 0, end === -1 ? v.length : end);
}
export function getU16List(opts: OptionMap, code: number): number[] | undefined {
  const v = opts.get(code);
  if (v === undefined || v.length < 2 || v.length % 2 !== 0) return undefined;
  const out: number[] = [];
  for (let i = 0; i < v.length; i += 2) out.push(v.readUInt16BE(i));
  return out;
}
export function getBytes(opts: OptionMap, code: number): number[] | undefined {
  const v = opts.get(code);
  return v === undefined ? undefined : [...v];
}

/** Option 97: type 0 followed by a 16-byte UUID (RFC 4578 §2.3), rendered in the SMBIOS text form. */
export function getClientUuid(opts: OptionMap): string | undefined {
  const v = opts.get(Opt.ClientUuid);
  if (v === undefined || v.length !== 17 || v[0] !== 0) return undefined;
  const h = v.subarray(1).toString("hex");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** Option 82 sub-options (RFC 3046): circuit-id (1), remote-id (2), ... Undefined if malformed. */
export function parseRelayAgent(value: Buffer): Map<number, Buffer> | undefined {
  return parseSubOptions(value);
}

/** Code/length/value sub-options (option 43, option 82). Undefined when a length runs past the end. */
export function parseSubOptions(value: Buffer): Map<number, Buffer> | undefined {
  const out = new Map<number, Buffer>();
  let i = 0;
  while (i < value.length) {
    const code = value[i] as number;
    if (code === 0) {
      i++;
      continue;
    }
    if (code === 255) break;
    const len = value[i + 1];
    if (len === undefined || i + 2 + len > value.length) return undefined;
    out.set(code, value.subarray(i + 2, i + 2 + len));
    i += 2 + len;
  }
  return out;
}

export function encodeSubOptions(sub: Iterable<[number, Buffer]>, end = true): Buffer {
  const parts: Buffer[] = [];
  for (const [code, value] of sub) parts.push(Buffer.from([code, value.length]), value);
  if (end) parts.push(Buffer.from([255]));
  return Buffer.concat(parts);
}

/** Value builders for the encoder. */
export const enc = {
  ip: (ip: string): Buffer => ipToBuffer(ip),
  ips: (ips: readonly string[]): Buffer => Buffer.concat(ips.map(ipToBuffer)),
  u8: (n: number): Buffer => Buffer.from([n & 255]),
  u16: (n: number): Buffer => {
    const b = Buffer.alloc(2);
    b.writeUInt16BE(n);
    return b;
  },
  u32: (n: number): Buffer => {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(n >>> 0);
    return b;
  },
  string: (s: string): Buffer => Buffer.from(s, "latin1"),
};

/** A readable rendering of an option value by its type, for logs and tests. */
export function renderOption(code: number, value: Buffer): string | number | boolean | string[] | number[] {
  if (!validLength(code, value)) return value.toString("hex");
  switch (optionType(code)) {
    case "ip":
      return readIp(value);
    case "ips":
    case "ippairs": {
      const out: string[] = [];
      for (let i = 0; i < value.length; i += 4) out.push(readIp(value, i));
      return out;
    }
    case "u8":
      return value[0] as number;
    case "u16":
      return value.readUInt16BE(0);
    case "u32":
      return value.readUInt32BE(0);
    case "i32":
      return value.readInt32BE(0);
    case "bool":
      return value[0] !== 0;
    case "u16s": {
      const out: number[] = [];
      for (let i = 0; i < value.length; i += 2) out.push(value.readUInt16BE(i));
      return out;
    }
    case "u8s":
      return [...value];
    case "string":
      return value.toString("latin1");
    default:
      return value.toString("hex");
  }
}
