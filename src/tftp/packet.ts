/**
 * Pure TFTP codec: RFC 1350 packets plus the option extension of RFC 2347 (OACK, options on RRQ/WRQ).
 * Decoding never throws: it returns either a packet or a reason the datagram is malformed.
 */

export const Opcode = { RRQ: 1, WRQ: 2, DATA: 3, ACK: 4, ERROR: 5, OACK: 6 } as const;

/** RFC 1350 error codes, plus 8 from RFC 2347 (option negotiation refused). */
export const ErrorCode = {
  NotDefined: 0,
  FileNotFound: 1,
  AccessViolation: 2,
  DiskFull: 3,
  IllegalOperation: 4,
  UnknownTid: 5,
  FileExists: 6,
  NoSuchUser: 7,
  OptionRefused: 8,
} as const;

export type TransferMode = "octet" | "netascii" | "mail";

export interface RequestPacket {
  op: "RRQ" | "WRQ";
  filename: string;
  mode: TransferMode;
  /** Option names lowercased; the first occurrence of a name wins; values as sent. */
  options: Map<string, string>;
}
export interface DataPacket {
  op: "DATA";
  block: number;
  data: Buffer;
}
export interface AckPacket {
  op: "ACK";
  block: number;
}
export interface ErrorPacket {
  op: "ERROR";
  code: number;
  message: string;
}
export interface OackPacket {
  op: "OACK";
  options: Map<string, string>;
}
export type TftpPacket = RequestPacket | DataPacket | AckPacket | ErrorPacket | OackPacket;

export type DecodeResult = { ok: true; packet: TftpPacket } | { ok: false; reason: string };

/** Longest filename accepted in a request; real boot paths are far shorter. */
export const MAX_FILENAME_LENGTH = 1024;

function fail(reason: string): DecodeResult {
  return { ok: false, reason };
}

/** Splits a region into NUL-terminated strings; null when the last one is not terminated. */
function splitStrings(buf: Buffer, start: number): string[] | null {
  const out: string[] = [];
  let pos = start;
  while (pos < buf.length) {
    const end = buf.indexOf(0, pos);
    if (end < 0) return null;
    out.push(buf.toString("latin1", pos, end));
    pos = end + 1;
  }
  return out;
}

function decodeRequest(buf: Buffer, op: "RRQ" | "WRQ"): DecodeResult {
  const strings = splitStrings(buf, 2);
  if (strings === null) return fail(`${op}: string not NUL-terminated`);
  const [filename, modeRaw, ...rest] = strings;
  if (filename === undefined || filename === "") return fail(`${op}: empty filename`);
  if (filename.length > MAX_FILENAME_LENGTH)
    return fail(`${op}: filename longer than ${MAX_FILENAME_LENGTH}`);
  if (modeRaw === undefined) return fail(`${op}: missing mode`);
  const mode = modeRaw.toLowerCase();
  if (mode !== "octet" && mode !== "netascii" && mode !== "mail")
    return fail(`${op}: unknown mode ${JSON.stringify(modeRaw.slice(0, 20))}`);
  const options = new Map<string, string>();
  // A trailing name without a value is ignored, as some clients pad requests.
  for (let i = 0; i + 1 < rest.length; i += 2) {
    const name = (rest[i] as string).toLowerCase();
    if (name !== "" && !options.has(name)) options.set(name, rest[i + 1] as string);
  }
  return { ok: true, packet: { op, filename, mode, options } };
}

export function decodePacket(buf: Buffer): DecodeResult {
  if (buf.length < 2) return fail("shorter than an opcode");
  const opcode = buf.readUInt16BE(0);
  switch (opcode) {
    case Opcode.RRQ:
      return decodeRequest(buf, "RRQ");
    case Opcode.WRQ:
      return decodeRequest(buf, "WRQ");
    case Opcode.DATA:
      if (buf.length < 4) return fail("DATA: truncated header");
      return { ok: true, packet: { op: "DATA", block: buf.readUInt16BE(2), data: buf.subarray(4) } };
    case Opcode.ACK:
      if (buf.length < 4) return fail("ACK: truncated");
      return { ok: true, packet: { op: "ACK", block: buf.readUInt16BE(2) } };
    case Opcode.ERROR: {
      if (buf.length < 4) return fail("ERROR: truncated");
      const end = buf.indexOf(0, 4);
      // Some clients omit the final NUL; accept the message up to the end.
      const message = buf.toString("latin1", 4, end < 0 ? buf.length : end);
      return { ok: true, packet: { op: "ERROR", code: buf.readUInt16BE(2), message } };
    }
    case Opcode.OACK: {
      const strings = splitStrings(buf, 2);
      if (strings === null) return fail("OACK: string not NUL-terminated");
      const options = new Map<string, string>();
      for (let i = 0; i + 1 < strings.length; i += 2)
        options.set((strings[i] as string).toLowerCase(), strings[i + 1] as string);
      return { ok: true, packet: { op: "OACK", options } };
    }
    default:
      return fail(`unknown opcode ${opcode}`);
  }
}

function encodeStrings(opcode: number, strings: string[]): Buffer {
  const parts = strings.map((s) => Buffer.from(`${s}\0`, "latin1"));
  const head = Buffer.alloc(2);
  head.writeUInt16BE(opcode, 0);
  return Buffer.concat([head, ...parts]);
}

export function encodeRequest(
  op: "RRQ" | "WRQ",
  filename: string,
  mode: string,
  options: Iterable<[string, string]> = [],
): Buffer {
  const strings = [filename, mode];
  for (const [k, v] of options) strings.push(k, v);
  return encodeStrings(op === "RRQ" ? Opcode.RRQ : Opcode.WRQ, strings);
}

/** DATA header alone, so the payload can be sent from the file buffer without a copy. */
export function encodeDataHeader(block: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt16BE(Opcode.DATA, 0);
  b.writeUInt16BE(block & 0xffff, 2);
  return b;
}

export function encodeData(block: number, data: Buffer): Buffer {
  return Buffer.concat([encodeDataHeader(block), data]);
}

export function encodeAck(block: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt16BE(Opcode.ACK, 0);
  b.writeUInt16BE(block & 0xffff, 2);
  return b;
}

export function encodeError(code: number, message: string): Buffer {
  const msg = Buffer.from(`${message}\0`, "latin1");
  const b = Buffer.allocUnsafe(4 + msg.length);
  b.writeUInt16BE(Opcode.ERROR, 0);
  b.writeUInt16BE(code, 2);
  msg.copy(b, 4);
  return b;
}

export function encodeOack(options: Iterable<[string, string]>): Buffer {
  const strings: string[] = [];
  for (const [k, v] of options) strings.push(k, v);
  return encodeStrings(Opcode.OACK, strings);
}
