/**
 * The DHCP server's socket per interface and port: opened bound to the device (transport.ts), then read
 * on a thread of its own with the per-MAC admission in front (native/nbdh_intake.c). A boot storm keeps
 * the event loop busy with TFTP; a DHCP flood must not fill the socket's receive buffer meanwhile, or
 * the kernel drops the booting machines' DISCOVERs with the flood's before any policy sees them.
 */
import { constants } from "node:os";
import { loadAddon } from "../native.js";
import { loadNetdevAddon } from "./transport.js";

/** What the admission dropped since the last summary. */
export interface FloodSummary {
  dropped: number;
  /** MACs that had datagrams dropped. */
  macs: number;
  /** The MAC dropped most often, and how often (undefined if the table started over since). */
  top: { mac: string; dropped: number } | undefined;
}

export interface GuardSettings {
  /** Requests per second each MAC is allowed on average; 0 turns the admission off. */
  perMacPerSecond: number;
  /** Requests a MAC may send at once after a quiet spell. */
  burst: number;
}

export interface IntakeStats {
  received: number;
  admitted: number;
  /** Admitted but dropped because the JS thread was this far behind (8192 queued). */
  queueDropped: number;
  /** Larger than 4096 bytes: dropped. */
  truncated: number;
}

interface NativeIntake {
  setGuard(perMacPerSecond: number, burst: number): void;
  send(buffer: Buffer, address: string, port: number): number;
  summary(): FloodSummary | undefined;
  stats(): IntakeStats;
  close(): void;
}

/** The admission alone, on the caller's clock (its tests). */
export interface MacGuard {
  admit(msg: Buffer, nowMs: number): boolean;
  summary(): FloodSummary | undefined;
  tracked(): number;
}

interface IntakeAddon {
  DhcpIntake: new (
    fd: number,
    onPacket: (msg: Buffer, address: string, port: number) => void,
  ) => NativeIntake;
  MacGuard: new (perMacPerSecond: number, burst: number, maxTracked: number) => MacGuard;
}

function addon(): IntakeAddon {
  return loadAddon<IntakeAddon>("nbdh_intake");
}

export function createMacGuard(settings: GuardSettings, maxTracked = 65_536): MacGuard {
  return new (addon().MacGuard)(settings.perMacPerSecond, settings.burst, maxTracked);
}

function errnoName(errno: number): string {
  const hit = Object.entries(constants.errno).find(([, n]) => n === errno);
  return hit ? hit[0] : `errno ${errno}`;
}

export type PacketHandler = (msg: Buffer, from: { address: string; port: number }) => void;

export interface DhcpIntake {
  readonly iface: string;
  readonly port: number;
  setGuard(settings: GuardSettings): void;
  /** Sends without blocking; an error (for example ENETUNREACH) is returned, not thrown. */
  send(buffer: Buffer, address: string, port: number): NodeJS.ErrnoException | undefined;
  summary(): FloodSummary | undefined;
  stats(): IntakeStats;
  /** Requests dropped because the queue to JS was full, since the last call. */
  queueDroppedSinceLast(): number;
  close(): void;
}

/** Starts reading `iface`'s datagrams to `port`; `onPacket` runs on the JS thread for each admitted one. */
export function openDhcpIntake(
  iface: string,
  port: number,
  guard: GuardSettings,
  onPacket: PacketHandler,
): DhcpIntake {
  const fd = loadNetdevAddon().openUdpSocket(iface, port);
  let native: NativeIntake;
  try {
    native = new (addon().DhcpIntake)(fd, (msg, address, fromPort) =>
      onPacket(msg, { address, port: fromPort }),
    );
  } catch (err) {
    loadNetdevAddon().closeFd(fd);
    throw err;
  }
  native.setGuard(guard.perMacPerSecond, guard.burst);
  let queueDroppedReported = 0;
  return {
    iface,
    port,
    setGuard: (s) => native.setGuard(s.perMacPerSecond, s.burst),
    send(buffer, address, toPort) {
      const rc = native.send(buffer, address, toPort);
      if (rc === 0) return undefined;
      const code = errnoName(-rc);
      const err: NodeJS.ErrnoException = new Error(`sendto ${address}:${toPort}: ${code}`);
      err.errno = -rc;
      err.code = code;
      return err;
    },
    summary: () => native.summary(),
    stats: () => native.stats(),
    queueDroppedSinceLast() {
      const total = native.stats().queueDropped;
      const since = total - queueDroppedReported;
      queueDroppedReported = total;
      return since;
    },
    close: () => native.close(),
  };
}
