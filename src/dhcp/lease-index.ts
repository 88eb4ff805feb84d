/**
 * The in-memory view of leases that every backend keeps: one record per address (so an address has one
 * owner), with an index from MAC to the address that names it. The allocator reads it synchronously.
 */
import type { Lease } from "./lease-types.js";

export class LeaseIndex {
  private readonly byAddress = new Map<string, Lease>();
  private readonly macIndex = new Map<string, string>();

  get(address: string): Lease | undefined {
    return this.byAddress.get(address);
  }

  /** The address record currently naming this MAC (bound, free or expired), if any. */
  byMac(mac: string): Lease | undefined {
    const addr = this.macIndex.get(mac);
    if (addr === undefined) return undefined;
    const lease = this.byAddress.get(addr);
    return lease && lease.mac === mac ? lease : undefined;
  }

  all(): Lease[] {
    return [...this.byAddress.values()];
  }

  get size(): number {
    return this.byAddress.size;
  }

  apply(lease: Lease): void {
    const prev = this.byAddress.get(lease.address);
    if (prev && prev.mac !== lease.mac && this.macIndex.get(prev.mac) === lease.address)
      this.macIndex.delete(prev.mac);
    this.byAddress.set(lease.address, lease);
    if (lease.mac !== "") this.macIndex.set(lease.mac, lease.address);
  }

  /**
   * Undoes `applied` (a record that never reached storage) unless something replaced it since:
   * `previous` comes back, or the address is forgotten.
   */
  revert(applied: Lease, previous: Lease | undefined): void {
    if (this.byAddress.get(applied.address) !== applied) return;
    if (applied.mac !== "" && this.macIndex.get(applied.mac) === applied.address)
      this.macIndex.delete(applied.mac);
    if (previous) this.apply(previous);
    else this.byAddress.delete(applied.address);
  }

  clear(): void {
    this.byAddress.clear();
    this.macIndex.clear();
  }
}

/** The reads every lease backend serves from its in-memory index (what LeaseBackend asks besides commit). */
export abstract class IndexedLeases {
  protected readonly leases = new LeaseIndex();

  get(address: string): Lease | undefined {
    return this.leases.get(address);
  }

  /** The address record currently naming this MAC (bound, free or expired), if any. */
  byMac(mac: string): Lease | undefined {
    return this.leases.byMac(mac);
  }

  all(): Lease[] {
    return this.leases.all();
  }

  get size(): number {
    return this.leases.size;
  }
}
