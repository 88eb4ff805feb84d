/**
 * Who answers a DHCP query in an HA pair: a pure decision from the mode, this appliance's role, the
 * client's RFC 3074 bucket and whether the peer is up. As Kea's QueryFilter: only DISCOVER, REQUEST,
 * DECLINE, RELEASE and INFORM are split; any other message is answered as if there were no pair.
 */
import type { HaConfig } from "./config.js";
import { loadBalanceHash } from "./lb-hash.js";

const SPLIT_TYPES = new Set([1, 3, 4, 7, 8]);

export type Role = "primary" | "secondary" | "standby";

export class HaScope {
  readonly role: Role;
  readonly peer: string;

  constructor(private readonly ha: HaConfig) {
    const me = ha.peers.find((p) => p.name === ha.this);
    const other = ha.peers.find((p) => p.name !== ha.this);
    if (!me || !other) throw new Error("ha: this appliance or its peer is missing from peers");
    this.role = me.role;
    this.peer = other.name;
  }

  /** Which of the pair's active servers a client belongs to: 0 the primary, 1 the secondary. */
  static bucketOwner(key: Uint8Array): 0 | 1 {
    return (loadBalanceHash(key) % 2) as 0 | 1;
  }

  /** True when this appliance answers a message of `type` from the client with `key`. */
  serves(type: number, key: Uint8Array, peerUp: boolean): boolean {
    if (!SPLIT_TYPES.has(type)) return true;
    if (!peerUp) return true;
    if (this.ha.mode === "hot-standby") return this.role === "primary";
    const owner = HaScope.bucketOwner(key) === 0 ? "primary" : "secondary";
    return owner === this.role;
  }

  /** Where this appliance starts scanning each pool (0 or 1 of 2), so the pair rarely race for one address. */
  get poolShare(): { index: number; count: number } {
    return { index: this.role === "primary" ? 0 : 1, count: 2 };
  }
}
