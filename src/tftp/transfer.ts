/**
 * One read transfer on its own socket (the server's transfer ID, RFC 1350): optional OACK, then DATA in
 * windows (RFC 7440, windowsize 1 is classic lockstep), retransmission on timeout only.
 * A channel with a pump (channel.ts) answers the expected ACKs of a prepared chunk by itself, the ACK of a
 * window's last block with the next window (the next block in lockstep); this class hands it each chunk,
 * takes back whatever else arrives (an ACK inside a window, an ERROR), and reads the pump's progress.
 */
import type { RemoteInfo, Socket } from "node:dgram";
import type { BlockSource } from "../files/sources.js";
import { type BlockPump, hrtimeMs, PUMP_WINDOW_MAX, type TransferChannel } from "./channel.js";
import { decodePacket, ErrorCode, encodeError, encodeOack, Opcode } from "./packet.js";
import type { TftpTransferRecord } from "./provider.js";

export interface TransferSettings {
  blksize: number;
  windowsize: number;
  timeoutMs: number;
  /**
   * Double the interval after each consecutive timeout (up to BACKOFF_CAP_MS). Off when the client set the
   * timeout option, which RFC 2349 makes the interval to use. Backoff gives a client that only re-ACKs
   * after its own quiet timeout (atftp) the silence it needs to do so.
   */
  backoff: boolean;
  /** Consecutive timeouts without progress before giving up. */
  retries: number;
  /** OACK to send first (empty: start with DATA 1, as RFC 1350). */
  oack: [string, string][];
  /** The unconnected socket on the same port, which receives everyone but the client: they get ERROR 5. */
  strays?: Socket;
  /** The OACK answered a tsize request: a client ERROR in reply to it is a size probe, not a failure. */
  tsizeRequested: boolean;
}

export interface TransferResult {
  outcome: TftpTransferRecord["outcome"];
  bytes: number;
  retransmits: number;
  reason?: string;
}

const BACKOFF_CAP_MS = 5_000;

/**
 * File bytes read at a time. They land straight into ready-made DATA packets, header included, so
 * sending a block, or sending it again, is one send of one buffer with no copy.
 */
const CHUNK_TARGET_BYTES = 128 * 1024;
const DATA_HEADER_BYTES = 4;

/**
 * DATA packets for blocks first .. first + count - 1, one every `stride` (4 + blksize) bytes of `store`;
 * only the file's last block may be shorter. The pump takes the same layout (native/nbdh_udp.c).
 */
interface Chunk {
  first: number;
  store: Buffer;
  count: number;
}

export class Transfer {
  private readonly lastBlock: number;
  /** First block not yet acknowledged (absolute, 1-based; the wire carries it modulo 65536). */
  private base = 1;
  /** Highest block sent so far. */
  private sentUpTo = 0;
  private phase: "oack" | "data" | "done" = "data";
  private tries = 0;
  private retransmits = 0;
  /** Bumped for each window: an async read that finds it changed stops sending its stale window. */
  private generation = 0;
  /** The current chunk: its first block, how many, and its packets (see Chunk). */
  private chunkFirst = -1;
  private chunkCount = 0;
  private store: Buffer | undefined;
  /**
   * A store that no packet in use refers to any more, filled by the next read: a transfer then cycles
   * through two buffers instead of allocating one per chunk (fresh memory cost page faults, and freeing
   * it TLB shootdowns, in the middle of a lockstep transfer: 250 us stalls at each chunk on this host).
   */
  private spare: Buffer | undefined;
  /** The chunk after the current one, read ahead while the current one is being sent. */
  private prefetch: { first: number; ready: Promise<Chunk> } | undefined;
  /** The chunk handed to the pump to go on with after the current one. */
  private queued: Chunk | undefined;
  private pumpArmed = false;
  private readonly chunkBlocks: number;
  /** Bytes from one DATA packet to the next in a chunk's store. */
  private readonly stride: number;
  private timer: NodeJS.Timeout | undefined;
  /** This try's timeout found the client's answer waiting and was put off once (onTimeout). */
  private deferredTimeout = false;
  private oackPacket: Buffer | undefined;
  /** When the OACK or a window was last sent (hrtime ms): a repeated request that crossed it is no news. */
  private lastAnswerAtMs = 0;
  /** The channel's pump, for windows up to PUMP_WINDOW_MAX (larger ones are answered here). */
  private readonly pump: BlockPump | undefined;
  private resolveDone!: (r: TransferResult) => void;
  readonly done: Promise<TransferResult>;
  /** True until the client has acknowledged anything (the pump may have moved on without telling yet). */
  get initial(): boolean {
    if (this.phase === "oack") return true;
    if (this.phase !== "data" || this.base !== 1) return false;
    return this.pump === undefined || this.pump.lastSent() <= this.sentUpTo;
  }

  constructor(
    private readonly channel: TransferChannel,
    private readonly client: { address: string; port: number },
    private readonly source: BlockSource,
    private readonly settings: TransferSettings,
  ) {
    this.lastBlock = Math.floor(source.size / settings.blksize) + 1;
    this.pump = settings.windowsize <= PUMP_WINDOW_MAX ? channel.pump : undefined;
    this.chunkBlocks = Math.max(1, Math.floor(CHUNK_TARGET_BYTES / settings.blksize));
    this.stride = DATA_HEADER_BYTES + settings.blksize;
    this.done = new Promise((resolve) => {
      this.resolveDone = resolve;
    });
  }

  start(): void {
    this.channel.start(
      (msg) => this.onMessage(msg),
      (first) => this.onAdvance(first),
    );
    this.settings.strays?.on("message", (msg, rinfo) => this.onStray(msg, rinfo));
    this.timer = setTimeout(() => this.onTimeout(), this.settings.timeoutMs);
    if (this.settings.oack.length > 0) {
      this.phase = "oack";
      this.oackPacket = encodeOack(this.settings.oack);
      this.sendOack(this.oackPacket);
    } else {
      this.sendWindow();
    }
  }

  /** Stops the transfer, telling the client why (server shutdown). */
  abort(message: string): void {
    if (this.phase === "done") return;
    this.send(encodeError(ErrorCode.NotDefined, message));
    this.finish("error", message);
  }

  /**
   * The client sent its request again, from the same port: it has not had our first answer (EDK2's MTFTP
   * and GRUB resend the RRQ on their own timeout). Answer now, not at our next, backed-off timeout: under
   * loss the client may give up first. Not when the request crossed our answer on the wire (our last send
   * is less than half a timeout old): a second OACK after its ACK 0 makes atftp abort.
   */
  repeatRequest(): void {
    if (this.phase === "done" || !this.initial) return;
    if (hrtimeMs() - this.lastAnswerAtMs < this.settings.timeoutMs / 2) return;
    if (this.phase === "oack" && this.oackPacket) {
      this.retransmits++;
      this.sendOack(this.oackPacket);
      return;
    }
    this.retransmits += Math.max(1, this.sentUpTo - this.base + 1);
    this.sendWindow();
  }

  private sendOack(oack: Buffer): void {
    this.lastAnswerAtMs = hrtimeMs();
    this.send(oack);
  }

  /** Send errors (ENOBUFS, unreachable) are retried by the timeout like a loss. */
  private send(packet: Buffer): void {
    this.channel.send(packet);
  }

  private onStray(msg: Buffer, rinfo: RemoteInfo): void {
    if (this.phase === "done") return;
    // The client's own packet, caught before the channel was connected.
    if (rinfo.port === this.client.port && rinfo.address === this.client.address) {
      this.onMessage(msg);
      return;
    }
    // RFC 1350: a packet from another transfer ID gets ERROR 5 and does not disturb this transfer.
    this.settings.strays?.send(
      encodeError(ErrorCode.UnknownTid, "unknown transfer ID"),
      rinfo.port,
      rinfo.address,
      () => {},
    );
  }

  /**
   * Takes over what the pump sent since this class last looked: the pump sends the window after n on the
   * ACK of n, so the first block of its last window is the first not yet acknowledged. Returns whether it
   * had progressed.
   */
  private syncPump(): boolean {
    if (this.pump === undefined || this.phase !== "data") return false;
    const lastSent = this.pump.lastSent();
    if (lastSent <= this.sentUpTo) return false;
    this.base = this.pump.windowFirst();
    this.sentUpTo = lastSent;
    return true;
  }

  private onMessage(msg: Buffer): void {
    if (this.phase === "done") return;
    if (this.syncPump()) this.resetTries();
    const decoded = decodePacket(msg);
    if (!decoded.ok) return;
    const packet = decoded.packet;
    if (packet.op === "ERROR") {
      if (this.phase === "oack" && this.settings.tsizeRequested) this.finish("size-probe", packet.message);
      else this.finish("aborted-by-client", `client error ${packet.code}: ${packet.message}`);
      return;
    }
    if (packet.op !== "ACK") return;
    if (this.phase === "oack") {
      if (packet.block !== 0) return;
      this.phase = "data";
      this.resetTries();
      this.sendWindow();
      return;
    }
    // Map the 16-bit block number into [base-1, sentUpTo]; anything else is stale.
    const acked = this.base - 1 + ((packet.block - (this.base - 1)) & 0xffff);
    if (acked > this.sentUpTo || acked < this.base) return; // stale or duplicate: never resend on it
    this.base = acked + 1;
    this.resetTries();
    if (this.base > this.lastBlock) {
      this.finish("ok");
      return;
    }
    // RFC 7440: an ACK inside the window means the client lost what followed; restart from there.
    this.sendWindow();
  }

  private resetTries(): void {
    this.deferredTimeout = false;
    if (this.tries > 0 && this.settings.backoff) {
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this.onTimeout(), this.settings.timeoutMs);
    }
    this.tries = 0;
  }

  private onTimeout(): void {
    if (this.phase === "done") return;
    if (this.syncPump() && this.pump) {
      // The pump kept going: the interval counts from its last send.
      this.tries = 0;
      const rest = this.pump.lastProgressMs() + this.settings.timeoutMs - hrtimeMs();
      if (rest >= 1) {
        this.timer = setTimeout(() => this.onTimeout(), Math.ceil(rest));
        return;
      }
    }
    if (!this.deferredTimeout && this.channel.answerWaiting()) {
      // The client's answer is in the socket, unread: this loop was late, not the client. Resending
      // now would only cost a duplicate (a repeated OACK makes atftp abort); read it first. Once per
      // try, so a client repeating a stale ACK cannot hold our retransmission off.
      this.deferredTimeout = true;
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this.onTimeout(), this.settings.timeoutMs);
      return;
    }
    this.deferredTimeout = false;
    this.tries++;
    if (this.tries > this.settings.retries) {
      this.finish("timeout", `no answer after ${this.settings.retries} retries`);
      return;
    }
    if (this.settings.backoff) {
      const base = this.settings.timeoutMs;
      const next = Math.min(base * 2 ** this.tries, Math.max(base, BACKOFF_CAP_MS));
      this.timer = setTimeout(() => this.onTimeout(), next);
    }
    if (this.phase === "oack" && this.oackPacket) {
      this.retransmits++;
      this.sendOack(this.oackPacket);
      if (!this.settings.backoff) this.timer?.refresh();
      return;
    }
    this.retransmits += Math.max(1, this.sentUpTo - this.base + 1);
    this.sendWindow();
  }

  private sendWindow(): void {
    const gen = ++this.generation;
    const end = Math.min(this.base + this.settings.windowsize - 1, this.lastBlock);
    this.lastAnswerAtMs = hrtimeMs();
    this.timer?.refresh();
    this.sendBlocks(this.base, end, gen);
  }

  private sendBlocks(from: number, end: number, gen: number): void {
    for (let block = from; block <= end; block++) {
      const packet = this.packetAt(block);
      if (packet === undefined) {
        this.loadChunk(block).then(
          () => {
            if (gen === this.generation && this.phase === "data") this.sendBlocks(block, end, gen);
          },
          (err: unknown) => {
            if (this.phase === "done") return;
            this.send(encodeError(ErrorCode.NotDefined, "read error"));
            this.finish("error", `read error: ${(err as Error).message}`);
          },
        );
        return;
      }
      this.send(packet);
      if (block > this.sentUpTo) this.sentUpTo = block;
    }
    this.timer?.refresh();
    if (this.pump && this.tries === 0 && this.store !== undefined) {
      // The pump answers the ACKs from here on, into the next chunk once it is read and queued.
      this.pump.arm(this.store, this.stride, this.chunkFirst, this.lastBlock, end, this.settings.windowsize);
      this.pumpArmed = true;
      this.queued = undefined;
      this.readAhead(this.chunkFirst + this.chunkCount);
      this.queueAhead();
    } else {
      // After a timeout the ACK of the block sent again comes here, to reset the tries and the backoff.
      if (this.pumpArmed) this.pump?.disarm();
      this.pumpArmed = false;
      this.readAhead(end);
    }
  }

  /** Once the read-ahead chunk is ready, lets the pump go on into it. */
  private queueAhead(): void {
    const ahead = this.prefetch;
    if (this.pump === undefined || ahead === undefined) return;
    if (ahead.first !== this.chunkFirst + this.chunkCount) return;
    ahead.ready.then(
      (chunk) => {
        if (this.prefetch !== ahead || this.phase !== "data" || !this.pumpArmed) return;
        this.queued = chunk;
        this.pump?.queue(chunk.store, this.stride, chunk.first);
      },
      () => {}, // reported by the read that needs it
    );
  }

  /** The pump sent the first block of the queued chunk: it is now the current one; read the next. */
  private onAdvance(first: number): void {
    if (this.phase !== "data" || this.queued?.first !== first) return;
    this.setChunk(this.queued);
    this.queued = undefined;
    this.prefetch = undefined;
    this.syncPump();
    this.readAhead(this.chunkFirst + this.chunkCount);
    this.queueAhead();
  }

  private setChunk(chunk: Chunk): void {
    // Native sends are done when send() returns, so no queued send still reads the old store.
    if (this.store !== undefined && this.channel.kind === "native") this.spare = this.store;
    this.chunkFirst = chunk.first;
    this.chunkCount = chunk.count;
    this.store = chunk.store;
  }

  /** The DATA packet of `block` if the current chunk holds it. */
  private packetAt(block: number): Buffer | undefined {
    const i = block - this.chunkFirst;
    if (this.store === undefined || i < 0 || i >= this.chunkCount) return undefined;
    const from = i * this.stride;
    return this.store.subarray(from, Math.min(from + this.stride, this.store.length));
  }

  /** Past the middle of the current chunk, start reading the next one so the window never waits on disk. */
  private readAhead(sentBlock: number): void {
    const next = this.chunkFirst + this.chunkCount;
    if (this.prefetch?.first === next || next > this.lastBlock) return;
    if (sentBlock < this.chunkFirst + this.chunkCount / 2) return;
    const ready = this.buildPackets(next);
    ready.catch(() => {}); // a failed read-ahead is retried, and reported, by the read that needs it
    this.prefetch = { first: next, ready };
  }

  private async loadChunk(first: number): Promise<void> {
    const ahead = this.prefetch;
    this.prefetch = undefined;
    let chunk: Chunk | undefined;
    if (ahead?.first === first) chunk = await ahead.ready.catch(() => undefined);
    chunk ??= await this.buildPackets(first);
    this.setChunk(chunk);
  }

  /** Builds the DATA packets for `first` and the blocks after it, up to a chunk or the last block. */
  private async buildPackets(first: number): Promise<Chunk> {
    const { blksize } = this.settings;
    const count = Math.min(this.chunkBlocks, this.lastBlock - first + 1);
    const offset = (first - 1) * blksize;
    const dataBytes = Math.max(0, Math.min(count * blksize, this.source.size - offset));
    const size = count * DATA_HEADER_BYTES + dataBytes;
    let store: Buffer;
    if (this.spare !== undefined && this.spare.length >= size) {
      store = this.spare.subarray(0, size);
      this.spare = undefined;
    } else store = Buffer.allocUnsafe(size);
    for (let i = 0, pos = 0; i < count; i++, pos += this.stride) {
      store.writeUInt16BE(Opcode.DATA, pos);
      store.writeUInt16BE((first + i) & 0xffff, pos + 2);
    }
    const layout = { header: DATA_HEADER_BYTES, stride: this.stride };
    const got = dataBytes > 0 ? await this.source.readIntoRecords(store, layout, offset) : 0;
    if (got < dataBytes) throw new Error(`file shrank: ${got} of ${dataBytes} bytes at ${offset}`);
    return { first, store, count };
  }

  private finish(outcome: TransferResult["outcome"], reason?: string): void {
    if (this.phase === "done") return;
    this.syncPump(); // for the byte count of a transfer that ends early
    this.phase = "done";
    if (this.timer) clearTimeout(this.timer);
    const bytes =
      outcome === "ok"
        ? this.source.size
        : Math.min(this.source.size, (this.base - 1) * this.settings.blksize);
    this.source.release();
    // Closing right away could drop a queued ERROR; a short delay lets the send complete.
    setImmediate(() => {
      this.channel.close();
      try {
        this.settings.strays?.close();
      } catch {
        // already closed
      }
    });
    this.resolveDone({
      outcome,
      bytes,
      retransmits: this.retransmits,
      ...(reason !== undefined ? { reason } : {}),
    });
  }
}
