/**
 * The transfer's socket (its transfer ID, RFC 1350), connected to the client. Two implementations:
 *   - native (native/nbdh_udp.c): a socket polled by Node's libuv loop whose pump answers the expected
 *     ACK with the next prepared window of DATA packets without entering JS (the default);
 *   - dgram: node:dgram, when the addon is not built or is turned off.
 * The transfer (transfer.ts) owns the protocol either way; the pump only repeats "ACK n, send the window
 * after n" (n + 1 alone in lockstep).
 */
import { createSocket, type Socket } from "node:dgram";
import { availableParallelism } from "node:os";
import { loadAddon } from "../native.js";

/** The largest window the native pump sends itself (WINDOW_MAX in native/nbdh_udp.c). */
export const PUMP_WINDOW_MAX = 64;

/**
 * Answers the ACK of `lastSent` with the next window (the next packet in lockstep) while it has all of
 * it prepared; see native/nbdh_udp.c. A chunk of packets is one buffer, a packet every `stride` bytes
 * from `firstBlock` on (the last may be shorter).
 */
export interface BlockPump {
  arm(
    store: Buffer,
    stride: number,
    firstBlock: number,
    lastBlock: number,
    lastSent: number,
    window?: number,
  ): void;
  /** The chunk after the armed one; the pump reports moving into it through start's onAdvance. */
  queue(store: Buffer, stride: number, firstBlock: number): void;
  disarm(): void;
  /** The last block the pump (or arm) sent. */
  lastSent(): number;
  /** The first block of the last window the pump sent: the first the client has not acknowledged. */
  windowFirst(): number;
  /** When the pump last sent, in milliseconds of `hrtimeMs()`. */
  lastProgressMs(): number;
}

export interface TransferChannel {
  readonly port: number;
  readonly kind: "native" | "dgram";
  connect(address: string, port: number): Promise<void>;
  /**
   * Delivers the client's datagrams that the pump (if any) did not answer, and tells when the pump
   * moved into its queued chunk.
   */
  start(onPacket: (msg: Buffer) => void, onAdvance: (firstBlock: number) => void): void;
  /** Never blocks and never throws: a failed send is a loss, and the transfer's timeout repeats it. */
  send(packet: Buffer): void;
  /**
   * Whether a datagram from the client is waiting in the socket, unread: when a timeout fires while
   * it is, the loop was late, not the client (false where the socket cannot be asked, node:dgram).
   */
  answerWaiting(): boolean;
  close(): void;
  readonly pump?: BlockPump;
}

/** The clock of BlockPump.lastProgressMs (CLOCK_MONOTONIC, like uv_hrtime). */
export function hrtimeMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

interface NativeUdpChannel extends Pick<BlockPump, "arm" | "queue" | "disarm" | "lastSent" | "windowFirst"> {
  port(): number;
  connect(address: string, port: number): void;
  start(onPacket: (packet: Buffer, lastSent: number) => void, onAdvance: (firstBlock: number) => void): void;
  send(packet: Buffer): number;
  lastProgress(): number;
  pending(): boolean;
  close(): void;
}

type NativeUdpAddon = {
  UdpChannel: new (family: 4 | 6, address: string, port: number) => NativeUdpChannel;
  batching(): boolean;
  usePumpThreads(threads: number): number;
};

export const PUMP_THREADS_MAX = 64;
export type PumpThreadsSetting = "auto" | number;

/**
 * How many pump threads a setting means here: NETBOOT_TFTP_PUMP_THREADS overrides it (benchmarks, tests).
 * "auto" keeps the pump on the loop where the process may run on 1 or 2 cores (its affinity: taskset
 * counts), and beyond that runs one thread per core but one (left to the loop and the DHCP intake). Why:
 * on 2 cores, threads answered each ACK alone where the loop's io_uring batch answers many, and cost
 * 1.1-1.4x the server CPU for no shorter storm (bench:storm, README "Pump threads").
 */
export function pumpThreadsFor(
  setting: PumpThreadsSetting,
  env = process.env,
  cores = availableParallelism(),
): number {
  const override = env.NETBOOT_TFTP_PUMP_THREADS;
  const chosen =
    override !== undefined && override !== "" ? (override === "auto" ? "auto" : Number(override)) : setting;
  if (chosen === "auto") return cores <= 2 ? 0 : Math.min(cores - 1, PUMP_THREADS_MAX);
  if (!Number.isInteger(chosen) || chosen < 0 || chosen > PUMP_THREADS_MAX)
    throw new Error(
      `NETBOOT_TFTP_PUMP_THREADS: ${override} is not "auto" or an integer 0..${PUMP_THREADS_MAX}`,
    );
  return chosen;
}

/**
 * Starts the pump threads that own the native channels opened from now on (native/nbdh_pool.h), or keeps
 * the pump on the event loop (0). The first call in a process decides; returns the threads in use.
 */
export function useNativePumpThreads(threads: number): number {
  return loadAddon<NativeUdpAddon>("nbdh_udp").usePumpThreads(threads);
}

/** Whether the native channel can be used here (the addon is built and loads). */
export function nativeChannelAvailable(): boolean {
  try {
    loadAddon<NativeUdpAddon>("nbdh_udp");
    return true;
  } catch {
    return false;
  }
}

/**
 * Whether native channels batch their reads and the pump's sends through io_uring (native/nbdh_udp.c):
 * false where the kernel refuses io_uring or NETBOOT_TFTP_BATCH=0.
 */
export function nativeBatching(): boolean {
  try {
    return loadAddon<NativeUdpAddon>("nbdh_udp").batching();
  } catch {
    return false;
  }
}

/** A native channel bound to `address`:`port` (0: a fresh port), sharing its port with SO_REUSEADDR. */
export function openNativeChannel(family: 4 | 6, address: string, port = 0): TransferChannel {
  const { UdpChannel } = loadAddon<NativeUdpAddon>("nbdh_udp");
  const ch = new UdpChannel(family, address, port);
  const pump: BlockPump = {
    arm: (store, stride, firstBlock, lastBlock, lastSent, window = 1) =>
      ch.arm(store, stride, firstBlock, lastBlock, lastSent, window),
    queue: (store, stride, firstBlock) => ch.queue(store, stride, firstBlock),
    disarm: () => ch.disarm(),
    lastSent: () => ch.lastSent(),
    windowFirst: () => ch.windowFirst(),
    lastProgressMs: () => ch.lastProgress(),
  };
  return {
    port: ch.port(),
    kind: "native",
    connect: async (addr, p) => ch.connect(addr, p),
    start: (onPacket, onAdvance) => ch.start((packet) => onPacket(packet), onAdvance),
    send: (packet) => {
      ch.send(packet);
    },
    answerWaiting: () => ch.pending(),
    close: () => ch.close(),
    pump,
  };
}

/** A node:dgram socket bound to `address`:`port` (0: a fresh port), sharing its port (reuseAddr). */
export async function openDgramSocket(family: 4 | 6, address: string, port = 0): Promise<Socket> {
  // Client addresses are IP literals: answering the lookup synchronously spares dns.lookup and a tick per send.
  const socket = createSocket({
    type: family === 6 ? "udp6" : "udp4",
    reuseAddr: true,
    lookup: (host, _opts, cb) => cb(null, host, family),
  });
  await new Promise<void>((resolve, reject) => {
    socket.once("error", reject);
    socket.bind({ port, address }, () => {
      socket.off("error", reject);
      resolve();
    });
  });
  return socket;
}

export async function openDgramChannel(
  family: 4 | 6,
  address: string,
  onError: (err: Error) => void,
): Promise<TransferChannel> {
  const socket = await openDgramSocket(family, address);
  socket.on("error", onError);
  return {
    port: socket.address().port,
    kind: "dgram",
    connect: (addr, p) =>
      new Promise<void>((resolve, reject) => {
        socket.once("error", reject);
        socket.connect(p, addr, () => {
          socket.off("error", reject);
          resolve();
        });
      }),
    start: (onPacket) => socket.on("message", (msg) => onPacket(msg)),
    // No completion callback: a send that completes at once then costs nothing more.
    send: (packet) => socket.send(packet),
    answerWaiting: () => false,
    close: () => {
      try {
        socket.close();
      } catch {
        // already closed
      }
    },
  };
}
