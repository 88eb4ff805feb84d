/**
 * Per-MAC admission for DHCP requests, before any decoding: a token bucket per client hardware address.
 * A booting machine sends a handful of requests (firmware retries DISCOVER at 4, 8, 16 s; a loader sends
 * its own DORA), so a few per second with a burst is far above any real client; a looping or hostile one
 * is held to that share and cannot take the CPU that TFTP needs in a boot storm. Pure policy: the server
 * calls admit() per datagram and logs what summary() reports.
 */

/** Where chaddr starts in a BOOTP message, and the length of an Ethernet address. */
const CHADDR_OFFSET = 28;
const MAC_BYTES = 6;

export interface FloodGuardOptions {
  /** Requests per second each MAC is allowed on average; 0 turns the guard off. */
  perMacPerSecond: number;
  /** Requests a MAC may send at once after a quiet spell. */
  burst: number;
  /** MACs tracked at most; past that the table starts over (a flood of fresh MACs only costs memory). */
  maxTracked?: number;
  now?: () => number;
}

interface Bucket {
  tokens: number;
  at: number;
}

export interface FloodSummary {
  dropped: number;
  macs: number;
  /** The MAC dropped most often, and how often. */
  top: { mac: string; dropped: number } | undefined;
}

export class FloodGuard {
  private readonly buckets = new Map<string, Bucket>();
  private readonly droppedBy = new Map<string, number>();
  private dropped = 0;
  private readonly now: () => number;
  private readonly maxTracked: number;

  static fromConfig(config: { rate_limit: { per_mac_per_second: number; burst: number } }): FloodGuard {
    return new FloodGuard({
      perMacPerSecond: config.rate_limit.per_mac_per_second,
      burst: config.rate_limit.burst,
    });
  }

  constructor(private readonly opts: FloodGuardOptions) {
    this.now = opts.now ?? Date.now;
    this.maxTracked = opts.maxTracked ?? 65_536;
  }

  /** Whether this datagram may be handled. Too short to carry a chaddr: admitted (the decoder rejects it). */
  admit(msg: Buffer): boolean {
    if (this.opts.perMacPerSecond <= 0 || msg.length < CHADDR_OFFSET + MAC_BYTES) return true;
    const key = msg.toString("hex", CHADDR_OFFSET, CHADDR_OFFSET + MAC_BYTES);
    const now = this.now();
    let bucket = this.buckets.get(key);
    if (bucket === undefined) {
      if (this.buckets.size >= this.maxTracked) this.buckets.clear();
      bucket = { tokens: this.opts.burst, at: now };
      this.buckets.set(key, bucket);
    } else {
      const refill = ((now - bucket.at) / 1000) * this.opts.perMacPerSecond;
      bucket.tokens = Math.min(this.opts.burst, bucket.tokens + refill);
      bucket.at = now;
    }
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return true;
    }
    this.dropped++;
    this.droppedBy.set(key, (this.droppedBy.get(key) ?? 0) + 1);
    return false;
  }

  /** What was dropped since the last summary (undefined when nothing was), and starts counting again. */
  summary(): FloodSummary | undefined {
    if (this.dropped === 0) return undefined;
    let top: FloodSummary["top"];
    for (const [key, n] of this.droppedBy)
      if (top === undefined || n > top.dropped) top = { mac: key, dropped: n };
    const result: FloodSummary = {
      dropped: this.dropped,
      macs: this.droppedBy.size,
      top: top && { mac: (top.mac.match(/../g) ?? []).join(":"), dropped: top.dropped },
    };
    this.dropped = 0;
    this.droppedBy.clear();
    return result;
  }
}
