/**
 * BOOTP/DHCP message codec (RFC 951, RFC 2131, RFC 2132 §9.3 overload, RFC 3396 long options).
 * Pure: decode never throws, it returns { ok: false, error } for anything malformed.
 */
import { ipToInt, Opt, type OptionMap, readIp } from "./options.js";

export const MAGIC_COOKIE = 0x63825363;
/** Fixed BOOTP header (236 bytes) + magic cookie. */
export const HEADER_LENGTH = 240;
/** RFC 2131: every client must accept 576-byte IP datagrams; minus IP (20) and UDP (8) headers. */
export const MIN_MAX_MESSAGE = 576;
const IP_UDP_HEADERS = 28;
/** RFC 1542 §3.3 minimum BOOTP message, some old clients drop shorter ones. */
const MIN_BOOTP_LENGTH = 300;

export const BOOTREQUEST = 1;
export const BOOTREPLY = 2;
export const BROADCAST_FLAG = 0x8000;

export interface DhcpPacket {
  op: number;
  htype: number;
  hlen: number;
  hops: number;
  xid: number;
  secs: number;
  flags: number;
  ciaddr: string;
  yiaddr: string;
  siaddr: string;
  giaddr: string;
  /** 16 bytes as on the wire. */
  chaddr: Buffer;
  /** Server host name field; empty when it carried options (overload). */
  sname: string;
  /** Boot file field; empty when it carried options (overload). */
  file: string;
  /** In wire order; same-code parts joined (RFC 3396). Pad, End and Overload are not kept. */
  options: OptionMap;
}

export type DecodeResult = { ok: true; packet: DhcpPacket } | { ok: false; error: string };

function cString(buf: Buffer): string {
  const end = buf.indexOf(0);
  return buf.toString("latin1", 0, end === -1 ? buf.length : end);
}

/** Parses one option area into `parts`. Returns an error text or undefined. */
function parseOptionArea(area: Buffer, where: string, parts: Map<number, Buffer[]>): string | undefined {
  let i = 0;
  while (i < area.length) {
    const code = area[i] as number;
    if (code === Opt.Pad) {
      i++;
      continue;
    }
    if (code === Opt.End) return undefined;
    if (i + 1 >= area.length) return `option ${code} in ${where} has no length byte`;
    const len = area[i + 1] as number;
    if (i + 2 + len > area.length) return `option ${code} in ${where} length ${len} runs past the end`;
    const value = area.subarray(i + 2, i + 2 + len);
    const list = parts.get(code);
    if (list === undefined) parts.set(code, [value]);
    else list.push(value);
    i += 2 + len;
  }
  // RFC 2131 requires End; many clients pad to the end of the buffer without it. Accept.
  return undefined;
}

export function decodePacket(buf: Buffer): DecodeResult {
  try {
    return decodeUnchecked(buf);
  } catch (err) {
    // Defensive: the code below checks every bound, but a codec bug must not become a crash.
    return { ok: false, error: `decoder error: ${(err as Error).message}` };
  }
}

function decodeUnchecked(buf: Buffer): DecodeResult {
  if (buf.length < HEADER_LENGTH)
    return { ok: false, error: `truncated: ${buf.length} bytes < ${HEADER_LENGTH}` };
  const cookie = buf.readUInt32BE(236);
  if (cookie !== MAGIC_COOKIE) return { ok: false, error: `bad magic cookie 0x${cookie.toString(16)}` };
  const op = buf[0] as number;
  if (op !== BOOTREQUEST && op !== BOOTREPLY) return { ok: false, error: `bad op ${op}` };
  const hlen = buf[2] as number;
  if (hlen > 16) return { ok: false, error: `bad hlen ${hlen}` };

  const parts = new Map<number, Buffer[]>();
  const err = parseOptionArea(buf.subarray(HEADER_LENGTH), "options", parts);
  if (err !== undefined) return { ok: false, error: err };

  // Overload is honoured only from the main options area: an option 52 inside file/sname is ignored,
  // so a packet cannot make the parser loop between the fields.
  const overloadParts = parts.get(Opt.Overload);
  parts.delete(Opt.Overload);
  let overload = 0;
  if (overloadParts !== undefined) {
    const v = overloadParts[0];
    if (overloadParts.length !== 1 || v === undefined || v.length !== 1)
      return { ok: false, error: "malformed option 52" };
    overload = v[0] as number;
    if (overload < 1 || overload > 3) return { ok: false, error: `bad option 52 value ${overload}` };
  }
  const fileField = buf.subarray(108, 236);
  const snameField = buf.subarray(44, 108);
  // RFC 2131 §4.1: options field first, then file, then sname.
  if (overload & 1) {
    const e = parseOptionArea(fileField, "file", parts);
    if (e !== undefined) return { ok: false, error: e };
  }
  if (overload & 2) {
    const e = parseOptionArea(snameField, "sname", parts);
    if (e !== undefined) return { ok: false, error: e };
  }
  parts.delete(Opt.Overload);

  const options: OptionMap = new Map();
  for (const [code, list] of parts)
    options.set(code, list.length === 1 ? (list[0] as Buffer) : Buffer.concat(list));

  return {
    ok: true,
    packet: {
      op,
      htype: buf[1] as number,
      hlen,
      hops: buf[3] as number,
      xid: buf.readUInt32BE(4),
      secs: buf.readUInt16BE(8),
      flags: buf.readUInt16BE(10),
      ciaddr: readIp(buf, 12),
      yiaddr: readIp(buf, 16),
      siaddr: readIp(buf, 20),
      giaddr: readIp(buf, 24),
      chaddr: Buffer.from(buf.subarray(28, 44)),
      sname: overload & 2 ? "" : cString(snameField),
      file: overload & 1 ? "" : cString(fileField),
      options,
    },
  };
}

/** The client's hardware address as lowercase colon-separated hex (hlen bytes of chaddr). */
export function macOf(p: Pick<DhcpPacket, "chaddr" | "hlen">): string {
  const n = p.hlen > 0 && p.hlen <= 16 ? p.hlen : 6;
  const out: string[] = [];
  for (let i = 0; i < n; i++) out.push((p.chaddr[i] as number).toString(16).padStart(2, "0"));
  return out.join(":");
}

export function macToChaddr(mac: string): Buffer {
  const out = Buffer.alloc(16);
  const bytes = mac.split(":");
  for (let i = 0; i < bytes.length && i < 16; i++) out[i] = Number.parseInt(bytes[i] as string, 16);
  return out;
}

export interface EncodeOptions {
  /** The client's option 57, if any; the encoder never goes below 576. */
  maxMessageSize?: number | undefined;
  /** Option codes that may be dropped (least important first) when the message does not fit. */
  droppable?: readonly number[];
}

export type EncodeResult = { ok: true; buffer: Buffer; dropped: number[] } | { ok: false; error: string };

/** Splits one option into ≤255-byte parts (RFC 3396). */
function encodeOption(code: number, value: Buffer): Buffer {
  if (value.length === 0) return Buffer.from([code, 0]);
  const chunks: Buffer[] = [];
  for (let i = 0; i < value.length; i += 255) {
    const part = value.subarray(i, i + 255);
    chunks.push(Buffer.from([code, part.length]), part);
  }
  return Buffer.concat(chunks);
}

function writeIp(buf: Buffer, offset: number, ip: string): void {
  buf.writeUInt32BE(ipToInt(ip), offset);
}

/**
 * Encodes a packet. Options are written in map order. When they do not fit the client's maximum
 * message size, the empty file/sname fields are used (option 52) and, failing that, droppable options
 * are removed; a message that still does not fit is an error.
 */
export function encodePacket(p: DhcpPacket, opts: EncodeOptions = {}): EncodeResult {
  const limit = Math.max(opts.maxMessageSize ?? MIN_MAX_MESSAGE, MIN_MAX_MESSAGE) - IP_UDP_HEADERS;
  const entries: [number, Buffer][] = [];
  let optionBytes = 0;
  for (const [code, value] of p.options) {
    if (code === Opt.Pad || code === Opt.End || code === Opt.Overload) continue;
    entries.push([code, value]);
    optionBytes += value.length + 2 * Math.max(1, Math.ceil(value.length / 255));
  }
  // Fast path: everything fits in the options area; one allocation, no intermediate buffers.
  if (HEADER_LENGTH + optionBytes + 1 <= limit) {
    const buf = Buffer.alloc(Math.max(HEADER_LENGTH + optionBytes + 1, MIN_BOOTP_LENGTH));
    writeHeader(buf, p);
    if (p.sname) buf.write(p.sname.slice(0, 63), 44, "latin1");
    if (p.file) buf.write(p.file.slice(0, 127), 108, "latin1");
    let off = HEADER_LENGTH;
    for (const [code, value] of entries) off = writeOption(buf, off, code, value);
    buf[off] = Opt.End;
    return { ok: true, buffer: buf, dropped: [] };
  }
  const dropped: number[] = [];
  const droppable = [...(opts.droppable ?? [])];
  for (;;) {
    const encoded = entries.map(([code, value]) => encodeOption(code, value));
    const attempt = layout(p, encoded, limit);
    if (attempt !== undefined) return { ok: true, buffer: attempt, dropped };
    const victim = droppable.shift();
    if (victim === undefined)
      return { ok: false, error: `reply does not fit in ${limit + IP_UDP_HEADERS} bytes` };
    const idx = entries.findIndex(([code]) => code === victim);
    if (idx !== -1) {
      entries.splice(idx, 1);
      dropped.push(victim);
    }
  }
}

/** Writes one option (split into ≤255-byte parts) at `off`; returns the next offset. */
function writeOption(buf: Buffer, off: number, code: number, value: Buffer): number {
  if (value.length === 0) {
    buf[off] = code;
    buf[off + 1] = 0;
    return off + 2;
  }
  for (let i = 0; i < value.length; i += 255) {
    const n = Math.min(255, value.length - i);
    buf[off] = code;
    buf[off + 1] = n;
    value.copy(buf, off + 2, i, i + n);
    off += 2 + n;
  }
  return off;
}

function writeHeader(buf: Buffer, p: DhcpPacket): void {
  buf[0] = p.op;
  buf[1] = p.htype;
  buf[2] = p.hlen;
  buf[3] = p.hops;
  buf.writeUInt32BE(p.xid >>> 0, 4);
  buf.writeUInt16BE(p.secs & 0xffff, 8);
  buf.writeUInt16BE(p.flags & 0xffff, 10);
  writeIp(buf, 12, p.ciaddr);
  writeIp(buf, 16, p.yiaddr);
  writeIp(buf, 20, p.siaddr);
  writeIp(buf, 24, p.giaddr);
  p.chaddr.copy(buf, 28, 0, 16);
  buf.writeUInt32BE(MAGIC_COOKIE, 236);
}

function layout(p: DhcpPacket, encoded: Buffer[], limit: number): Buffer | undefined {
  const room = limit - HEADER_LENGTH - 1; // 1 for End
  const main: Buffer[] = [];
  let mainLen = 0;
  let i = 0;
  for (; i < encoded.length; i++) {
    const e = encoded[i] as Buffer;
    if (mainLen + e.length > room) break;
    main.push(e);
    mainLen += e.length;
  }
  let fileArea: Buffer | undefined;
  let snameArea: Buffer | undefined;
  if (i < encoded.length) {
    // Overload: needs 3 bytes in the main area for option 52, and whole options per field.
    const fileFree = p.file === "";
    const snameFree = p.sname === "";
    if (!fileFree && !snameFree) return undefined;
    while (mainLen + 3 > room && main.length > 0) {
      mainLen -= (main.pop() as Buffer).length;
      i--;
    }
    const fill = (size: number): Buffer | undefined => {
      const area = Buffer.alloc(size);
      let off = 0;
      while (i < encoded.length) {
        const e = encoded[i] as Buffer;
        if (off + e.length > size - 1) break;
        e.copy(area, off);
        off += e.length;
        i++;
      }
      if (off === 0) return undefined;
      area[off] = Opt.End;
      return area;
    };
    if (fileFree) fileArea = fill(128);
    if (i < encoded.length && snameFree) snameArea = fill(64);
    if (i < encoded.length) return undefined;
    const overload = (fileArea ? 1 : 0) | (snameArea ? 2 : 0);
    main.push(Buffer.from([Opt.Overload, 1, overload]));
    mainLen += 3;
  }
  const total = Math.max(HEADER_LENGTH + mainLen + 1, MIN_BOOTP_LENGTH);
  const buf = Buffer.alloc(total);
  writeHeader(buf, p);
  if (snameArea) snameArea.copy(buf, 44);
  else buf.write(p.sname.slice(0, 63), 44, "latin1");
  if (fileArea) fileArea.copy(buf, 108);
  else buf.write(p.file.slice(0, 127), 108, "latin1");
  let off = HEADER_LENGTH;
  for (const m of main) {
    m.copy(buf, off);
    off += m.length;
  }
  buf[off] = Opt.End;
  return buf;
}

/** A request skeleton, for scripted clients in tests and the benchmark. */
export function emptyPacket(op: number = BOOTREQUEST): DhcpPacket {
  return {
    op,
    htype: 1,
    hlen: 6,
    hops: 0,
    xid: 0,
    secs: 0,
    flags: 0,
    ciaddr: "0.0.0.0",
    yiaddr: "0.0.0.0",
    siaddr: "0.0.0.0",
    giaddr: "0.0.0.0",
    chaddr: Buffer.alloc(16),
    sname: "",
    file: "",
    options: new Map(),
  };
}
