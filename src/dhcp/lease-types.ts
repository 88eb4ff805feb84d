/** What a lease is, and what every lease backend (the journal, PostgreSQL) offers the DHCP engine. */
export type LeaseState = "bound" | "free" | "declined";

export interface Lease {
  address: string;
  mac: string;
  /** Unix time in ms when the lease (or the decline quarantine) ends. */
  expires: number;
  state: LeaseState;
  hostname?: string | undefined;
}

/**
 * A lease store. Reads are synchronous, from memory. `commit` applies records in memory at once (the
 * allocator sees them) and resolves when they are durable: the ACK goes out only after that.
 */
export interface LeaseBackend {
  get(address: string): Lease | undefined;
  byMac(mac: string): Lease | undefined;
  all(): Lease[];
  readonly size: number;
  commit(records: Lease[]): Promise<void>;
  /** Waits until every commit so far has settled. */
  flush(): Promise<void>;
  close(): Promise<void>;
}

/** A commit refused because another server (sharing the store) holds the address for another MAC. */
export class LeaseConflictError extends Error {
  constructor(
    readonly address: string,
    readonly holder: Lease | undefined,
  ) {
    super(`${address} is held by another client in the shared lease store`);
    this.name = "LeaseConflictError";
  }
}
