/**
 * Option negotiation (RFC 2347 framework; blksize RFC 2348, timeout and tsize RFC 2349, windowsize RFC 7440).
 * Policy only: given what the client asked and what the server allows, decide what to answer in the OACK.
 */

export const BLKSIZE_MIN = 8;
export const BLKSIZE_MAX = 65464;
export const WINDOWSIZE_MAX = 65535;
export const DEFAULT_BLKSIZE = 512;
/** 1500-byte MTU minus IPv4 (20), UDP (8) and TFTP (4) headers. */
export const DEFAULT_MAX_BLKSIZE = 1468;
/**
 * Retransmissions before a transfer is given up. With the backoff (1, 2, 4, then 5 s) 8 wait 37 s of
 * silence, longer than firmware waits (GRUB gives up after 31.6 s); with 5 (22 s), a fifth of frames lost
 * failed about one boot in a few hundred (bench:storm).
 */
export const DEFAULT_RETRIES = 8;
export const DEFAULT_MAX_WINDOWSIZE = 64;

/**
 * Most bytes in flight per window. A window larger than the client's socket receive buffer (Linux default
 * 208 KiB, counted with per-packet overhead) overflows it on every window: measured on loopback, atftp with
 * blksize 8192 and windowsize 16 lost blocks 13-16 of each window and crawled on timeouts.
 */
export const DEFAULT_MAX_WINDOW_BYTES = 64 * 1024;

export interface ServerCaps {
  maxBlksize: number;
  maxWindowsize: number;
  /** Default DEFAULT_MAX_WINDOW_BYTES; windowsize is lowered so windowsize * blksize stays under it. */
  maxWindowBytes?: number;
}

export interface Negotiated {
  blksize: number;
  windowsize: number;
  /** Client-requested retransmission timeout in seconds, when valid. */
  timeoutSec?: number;
  /** The client asked for the transfer size. */
  tsizeRequested: boolean;
  /** Options to answer in the OACK, except tsize (filled in once the size is known). Empty: no OACK. */
  oack: [string, string][];
  /** Options that were present but unusable, for the log. */
  ignored: string[];
}

function parseDecimal(value: string): number | undefined {
  if (!/^[0-9]{1,10}$/.test(value.trim())) return undefined;
  return Number(value.trim());
}

/**
 * Out-of-range values: blksize below 8, timeout outside 1..255 and windowsize 0 are ignored (no OACK entry,
 * the RFC default applies); blksize and windowsize above the server cap are lowered to it, which the
 * RFCs allow the server to do. Unknown options are ignored.
 */
export function negotiateOptions(requested: ReadonlyMap<string, string>, caps: ServerCaps): Negotiated {
  const result: Negotiated = {
    blksize: DEFAULT_BLKSIZE,
    windowsize: 1,
    tsizeRequested: false,
    oack: [],
    ignored: [],
  };
  const maxBlk = Math.max(BLKSIZE_MIN, Math.min(BLKSIZE_MAX, caps.maxBlksize));
  const maxWin = Math.max(1, Math.min(WINDOWSIZE_MAX, caps.maxWindowsize));
  for (const [name, raw] of requested) {
    const value = parseDecimal(raw);
    switch (name) {
      case "blksize":
        if (value === undefined || value < BLKSIZE_MIN) result.ignored.push(`blksize=${raw}`);
        else {
          result.blksize = Math.min(value, maxBlk);
          result.oack.push(["blksize", String(result.blksize)]);
        }
        break;
      case "timeout":
        if (value === undefined || value < 1 || value > 255) result.ignored.push(`timeout=${raw}`);
        else {
          result.timeoutSec = value;
          result.oack.push(["timeout", String(value)]);
        }
        break;
      case "tsize":
        if (value === undefined) result.ignored.push(`tsize=${raw}`);
        else result.tsizeRequested = true;
        break;
      case "windowsize":
        if (value === undefined || value < 1) result.ignored.push(`windowsize=${raw}`);
        else {
          result.windowsize = Math.min(value, maxWin);
          result.oack.push(["windowsize", String(result.windowsize)]);
        }
        break;
      default:
        break;
    }
  }
  if (result.windowsize > 1) {
    const byBytes = Math.max(
      1,
      Math.floor((caps.maxWindowBytes ?? DEFAULT_MAX_WINDOW_BYTES) / result.blksize),
    );
    if (byBytes < result.windowsize) {
      result.windowsize = byBytes;
      const entry = result.oack.find(([k]) => k === "windowsize");
      if (entry) entry[1] = String(byBytes);
    }
  }
  return result;
}
