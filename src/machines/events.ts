/**
 * What the servers tell the machine state: one DHCP exchange, or one file sent (TFTP or HTTP). The
 * servers only emit these; the appliance hands them to the one owner of machine state (MachineState).
 */

/** Who sent a DHCP message: the firmware (PXE/HTTP boot), iPXE (option 77), or anything else (the OS). */
export type DhcpClientKind = "firmware" | "ipxe" | "os";

export interface DhcpEvent {
  kind: "dhcp";
  at: number;
  mac: string;
  /** discover, request, inform, release, decline */
  message: string;
  /** What the server did: offer, ack, nak, proxy-offer, ignored, ... */
  outcome: string;
  client: DhcpClientKind;
  ip?: string | undefined;
  archCode?: number | undefined;
  /** The boot file (path or URL) the answer named. */
  file?: string | undefined;
  /** The client's SMBIOS UUID (option 97), when it sent one. */
  uuid?: string | undefined;
}

export type FileOutcome =
  | "ok"
  | "size-probe"
  | "aborted-by-client"
  | "timeout"
  | "not-found"
  | "denied"
  | "error"
  | "head";

export interface FileEvent {
  kind: "file";
  at: number;
  protocol: "tftp" | "http";
  /** The client's address (the MAC is found from it). */
  client: string;
  file: string;
  bytes: number;
  ms: number;
  outcome: FileOutcome;
  blksize?: number | undefined;
  windowsize?: number | undefined;
  retransmits?: number | undefined;
  /** HTTP status, for HTTP. */
  status?: number | undefined;
  /** The key its start was reported under (MachineState.transferStarted), if one was. */
  transferKey?: string | undefined;
}

export type BootEvent = DhcpEvent | FileEvent;

/** What a file is in the boot chain, as the boot plan knows it. */
export type FileRole =
  | "shim"
  | "grub"
  | "ipxe"
  | "grub-master"
  | "grub-config"
  | "ipxe-autoexec"
  | "ipxe-script"
  | "kernel"
  | "initrd"
  | "other";
