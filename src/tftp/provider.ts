/** The contract between the TFTP transport and whatever decides what a path means (the boot plan). */

export interface TftpClient {
  address: string;
  port: number;
}

/**
 * What a provider answers for a path: bytes generated on request (a per-machine GRUB config),
 * or a file on disk to stream (a cached kernel outside the TFTP root; the provider is trusted).
 */
export type TftpSource = { kind: "data"; data: Buffer } | { kind: "file"; path: string };

/**
 * Consulted before the static root. `path` is already normalised: no leading slash, `/` separators,
 * no `.` or `..` segments. Returning undefined falls through to the jailed static root.
 * Throwing (or rejecting) answers the client with ERROR 0 and logs the reason, nothing more.
 */
export type TftpFileProvider = (
  path: string,
  client: TftpClient,
) => TftpSource | undefined | Promise<TftpSource | undefined>;

/** One finished (or failed) transfer, as logged and as the boot timeline reads it. */
export interface TftpTransferRecord {
  client: string;
  file: string;
  blksize: number;
  windowsize: number;
  tsize?: number;
  bytes: number;
  ms: number;
  retransmits: number;
  outcome: "ok" | "size-probe" | "aborted-by-client" | "timeout" | "not-found" | "denied" | "error";
  startedAt: number;
}
