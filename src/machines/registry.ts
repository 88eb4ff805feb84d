/**
 * The one owner of machine state that DHCP, TFTP (and later HTTP and the API) consult: which address a
 * machine holds, and whether a client may read that machine's private data (a config with a CHAP secret).
 *
 * Nothing here is told "machine X is at address Y" by packets. The address comes from durable facts only:
 * - in `full` mode, the lease this appliance ACKed, read from the lease store (the journal, so it holds
 *   across restarts and ends with RELEASE, DECLINE, expiry or the address going to another MAC);
 * - the inventory's `address` for the machine, where the operator pinned one (the only source in
 *   `proxy` and `off` mode, where the appliance never sees the lease).
 * Where both exist they must agree. Where neither exists, the answer is no (default deny).
 */
import type { Lease } from "../dhcp/leases.js";

/** The lease store's view that ownership needs (the journal store, or a shared one later). */
export interface LeaseLookup {
  /** The record naming this MAC (bound, free or expired), if any. */
  byMac(mac: string): Lease | undefined;
}

export type DhcpRole = "full" | "proxy" | "off";

export type OwnershipDecision =
  | { allowed: true; address: string; via: "lease" | "inventory" | "lease+inventory" }
  | { allowed: false; reason: string };

export interface MachineRegistryOptions {
  role: DhcpRole;
  leases?: LeaseLookup | undefined;
  now?: () => number;
}

/** Which inventory machine a MAC is, as far as ownership cares: its name and pinned address. */
export interface OwnedIdentity {
  name: string;
  /** The inventory's `address`, if set; never taken from the default machine for another MAC. */
  address?: string | undefined;
}

export class MachineRegistry {
  private role: DhcpRole;
  private readonly leases: LeaseLookup | undefined;
  private readonly now: () => number;
  /** MAC → SMBIOS UUID (DHCP option 97) seen for it, so a later request by MAC finds the machine by UUID. */
  private readonly uuids = new Map<string, string>();

  constructor(opts: MachineRegistryOptions) {
    this.role = opts.role;
    this.leases = opts.leases;
    this.now = opts.now ?? Date.now;
  }

  setRole(role: DhcpRole): void {
    this.role = role;
  }

  /** The address this appliance leased to the MAC, when the lease is bound and current. */
  leasedAddress(mac: string): string | undefined {
    if (this.role !== "full") return undefined;
    const lease = this.leases?.byMac(mac);
    if (!lease || lease.mac !== mac || lease.state !== "bound" || lease.expires <= this.now())
      return undefined;
    return lease.address;
  }

  /** The address a machine is known to hold (lease first, then the inventory's pin). */
  addressOf(mac: string, identity?: OwnedIdentity): string | undefined {
    return this.leasedAddress(mac) ?? identity?.address;
  }

  /**
   * May `client` read the private data of the machine with this MAC? Only the address that holds the
   * machine's lease (and, when pinned, its inventory address) may. The reason says why not, for the log.
   */
  authorize(mac: string, client: string, identity?: OwnedIdentity): OwnershipDecision {
    const leased = this.leasedAddress(mac);
    const pinned = identity?.address;
    if (leased === undefined && pinned === undefined) {
      const why =
        this.role === "full"
          ? `${mac} holds no current lease from this appliance`
          : `dhcp mode ${this.role}: the appliance cannot see ${mac}'s lease and the inventory pins no address for it (machines[].address)`;
      return { allowed: false, reason: why };
    }
    if (leased !== undefined && pinned !== undefined && leased !== pinned)
      return {
        allowed: false,
        reason: `${mac}'s lease (${leased}) and its inventory address (${pinned}) disagree`,
      };
    const owner = (leased ?? pinned) as string;
    if (client !== owner)
      return { allowed: false, reason: `${mac} is at ${owner}, the request came from ${client}` };
    const via =
      leased !== undefined && pinned !== undefined
        ? "lease+inventory"
        : leased !== undefined
          ? "lease"
          : "inventory";
    return { allowed: true, address: owner, via };
  }

  /** DHCP saw this MAC with this machine UUID (option 97). */
  noteUuid(mac: string, uuid: string): void {
    this.uuids.set(mac, uuid.toLowerCase());
  }

  uuidOf(mac: string): string | undefined {
    return this.uuids.get(mac);
  }
}
