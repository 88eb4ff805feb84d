/** The TFTP server: accepts requests on the well-known port and runs each transfer on its own socket. */
import { createSocket, type RemoteInfo, type Socket } from "node:dgram";
import { EventEmitter } from "node:events";
import type { AddressInfo } from "node:net";
import type { Logger } from "pino";
import { FileLookup } from "../files/lookup.js";
import { normaliseRequestPath } from "../files/paths.js";
import { type BlockSource, bufferSource, NETASCII_MAX_BYTES, toNetascii } from "../files/sources.js";
import {
  nativeBatching,
  nativeChannelAvailable,
  openDgramChannel,
  openDgramSocket,
  openNativeChannel,
  type PumpThreadsSetting,
  pumpThreadsFor,
  type TransferChannel,
  useNativePumpThreads,
} from "./channel.js";
import { DEFAULT_MAX_BLKSIZE, DEFAULT_MAX_WINDOWSIZE, DEFAULT_RETRIES, negotiateOptions } from "./options.js";
import { decodePacket, ErrorCode, encodeError, type RequestPacket } from "./packet.js";
import type { TftpFileProvider, TftpTransferRecord } from "./provider.js";
import { RateLimiter } from "./ratelimit.js";
import { Transfer } from "./transfer.js";

export interface TftpServerOptions {
  root: string;
  address?: string;
  port?: number;
  maxBlksize?: number;
  maxWindowsize?: number;
  timeoutMs?: number;
  retries?: number;
  maxTransfers?: number;
  provider?: TftpFileProvider;
  /** A lookup shared with other protocols (root and provider then come from it). */
  lookup?: FileLookup;
  /**
   * Transfer sockets: "native" (native/nbdh_udp.c, with its pump) or "dgram" (node:dgram).
   * Default: native when the addon is built, else dgram.
   */
  transport?: "native" | "dgram";
  /**
   * Native transport: threads that run the pump, each owning some transfers' sockets (0: on the
   * event loop, batched through io_uring). Default "auto": on the loop up to 2 cores, else cores - 1.
   */
  pumpThreads?: PumpThreadsSetting;
  logger: Logger;
}

export interface TftpCounters {
  transfersOk: number;
  /** Size probes (client ERROR after an OACK with tsize) are normal and counted apart from failures. */
  sizeProbes: number;
  transfersFailed: number;
  bytesSent: number;
  retransmits: number;
  active: number;
  malformedDropped: number;
  /** Distinct files held open (shared by all transfers of the same file). */
  openFiles: number;
}

export interface TftpServerEvents {
  /** A transfer began sending (its client's boot is busy, not stalled, until the end). */
  start: [{ client: string; file: string }];
  transfer: [TftpTransferRecord];
}

const CLOSE_DEADLINE_MS = 5_000;

export class TftpServer extends EventEmitter<TftpServerEvents> {
  private readonly opts: Required<Omit<TftpServerOptions, "provider" | "logger" | "lookup">>;
  private readonly log: Logger;
  private socket: Socket | undefined;
  private realRoot = "";
  private closing = false;
  /** What paths name: the provider, then the jailed root (shared with HTTP when the appliance passes one). */
  private readonly lookup: FileLookup;
  private readonly running = new Set<Transfer>();
  /** Requests being set up (resolving the file), plus running transfers: both count against maxTransfers. */
  private readonly inFlight = new Set<Promise<void>>();
  /** Latest transfer per client transfer ID, to drop retransmitted copies of the same request. */
  private readonly byClient = new Map<string, { signature: string; transfer?: Transfer }>();
  private readonly malformedLog = new RateLimiter(10, 10_000);
  private readonly stats: TftpCounters = {
    transfersOk: 0,
    sizeProbes: 0,
    transfersFailed: 0,
    bytesSent: 0,
    retransmits: 0,
    active: 0,
    malformedDropped: 0,
    openFiles: 0,
  };

  constructor(options: TftpServerOptions) {
    super();
    this.opts = {
      root: options.root,
      address: options.address ?? "0.0.0.0",
      port: options.port ?? 69,
      maxBlksize: options.maxBlksize ?? DEFAULT_MAX_BLKSIZE,
      maxWindowsize: options.maxWindowsize ?? DEFAULT_MAX_WINDOWSIZE,
      timeoutMs: options.timeoutMs ?? 1000,
      retries: options.retries ?? DEFAULT_RETRIES,
      maxTransfers: options.maxTransfers ?? 500,
      transport: options.transport ?? (nativeChannelAvailable() ? "native" : "dgram"),
      pumpThreads: options.pumpThreads ?? "auto",
    };
    this.lookup = options.lookup ?? new FileLookup(options.root, options.provider);
    this.log = options.logger;
  }

  setProvider(provider: TftpFileProvider | undefined): void {
    this.lookup.setProvider(provider);
  }

  counters(): TftpCounters {
    return { ...this.stats, active: this.inFlight.size, openFiles: this.lookup.openCount };
  }

  async listen(): Promise<AddressInfo> {
    this.realRoot = await this.lookup.init();
    const pumpThreads =
      this.opts.transport === "native" ? useNativePumpThreads(pumpThreadsFor(this.opts.pumpThreads)) : 0;
    const socket = createSocket({ type: this.socketType(), reuseAddr: false });
    this.socket = socket;
    socket.on("message", (msg, rinfo) => this.onRequest(msg, rinfo));
    socket.on("error", (err) => this.log.error({ err }, "tftp socket error"));
    await new Promise<void>((resolve, reject) => {
      socket.once("error", reject);
      socket.bind({ port: this.opts.port, address: this.opts.address }, () => {
        socket.off("error", reject);
        resolve();
      });
    });
    const addr = socket.address();
    this.log.info(
      {
        address: addr.address,
        port: addr.port,
        root: this.realRoot,
        transport: this.opts.transport,
        ...(this.opts.transport === "native" ? { pumpThreads, batching: nativeBatching() } : {}),
      },
      "tftp listening",
    );
    return addr;
  }

  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    const socket = this.socket;
    if (socket) await new Promise<void>((resolve) => socket.close(() => resolve()));
    for (const t of this.running) t.abort("server shutting down");
    const deadline = new Promise<void>((resolve) => setTimeout(resolve, CLOSE_DEADLINE_MS - 500).unref());
    await Promise.race([Promise.allSettled([...this.inFlight]), deadline]);
    await this.lookup.close();
    this.log.info(this.counters(), "tftp closed");
  }

  private socketType(): "udp4" | "udp6" {
    return this.opts.address.includes(":") ? "udp6" : "udp4";
  }

  private onRequest(msg: Buffer, rinfo: RemoteInfo): void {
    if (this.closing) return;
    const decoded = decodePacket(msg);
    if (!decoded.ok) {
      this.dropMalformed(rinfo, decoded.reason, msg.length);
      return;
    }
    const packet = decoded.packet;
    if (packet.op !== "RRQ" && packet.op !== "WRQ") {
      this.dropMalformed(rinfo, `${packet.op} sent to the request port`, msg.length);
      return;
    }
    const key = `${rinfo.address}:${rinfo.port}`;
    const signature = msg.toString("latin1");
    const previous = this.byClient.get(key);
    // The same request from the same port while its transfer runs is a copy, never a second transfer:
    // before the client acknowledged anything it lost our first answer (the transfer sends it again),
    // after that it is stale. A client's next request comes from a new port, or after this one ended.
    if (previous?.signature === signature) {
      previous.transfer?.repeatRequest();
      return;
    }
    if (this.inFlight.size >= this.opts.maxTransfers) {
      this.socket?.send(
        encodeError(ErrorCode.NotDefined, "server busy, try again"),
        rinfo.port,
        rinfo.address,
        () => {},
      );
      this.log.warn({ client: key, file: packet.filename }, "tftp request refused: too many transfers");
      return;
    }
    const entry: { signature: string; transfer?: Transfer } = { signature };
    this.byClient.set(key, entry);
    const job = this.serve(packet, rinfo, entry).catch((err: unknown) => {
      this.log.error({ err, client: key }, "tftp transfer crashed");
    });
    this.inFlight.add(job);
    job.finally(() => {
      this.inFlight.delete(job);
      if (this.byClient.get(key) === entry) this.byClient.delete(key);
    });
  }

  private dropMalformed(rinfo: RemoteInfo, reason: string, length: number): void {
    this.stats.malformedDropped++;
    const suppressed = this.malformedLog.take();
    if (suppressed === null) return;
    this.log.warn(
      { client: `${rinfo.address}:${rinfo.port}`, length, reason, suppressed },
      "tftp malformed datagram dropped",
    );
  }

  private family(): 4 | 6 {
    return this.socketType() === "udp6" ? 6 : 4;
  }

  /** The transfer's socket, on a fresh port (the server's transfer ID). */
  private async openChannel(): Promise<TransferChannel> {
    if (this.opts.transport === "native") return openNativeChannel(this.family(), this.opts.address);
    return openDgramChannel(this.family(), this.opts.address, (err) =>
      this.log.debug({ err }, "tftp transfer socket error"),
    );
  }

  /**
   * Connects the channel to the client: the kernel then keeps the route, sends are cheaper, and only
   * the client's datagrams reach the channel. Everyone else's go to a second, unconnected socket on the
   * same port (Linux prefers the connected socket for the client's own packets), which answers ERROR 5.
   */
  private async connectTransfer(
    channel: TransferChannel,
    client: { address: string; port: number },
  ): Promise<Socket | undefined> {
    let strays: Socket | undefined;
    try {
      strays = await openDgramSocket(this.family(), this.opts.address, channel.port);
      strays.on("error", (err) => this.log.debug({ err }, "tftp stray-packet socket error"));
    } catch (err) {
      this.log.debug({ err }, "tftp: no stray-packet socket, strangers get no ERROR 5");
    }
    try {
      await channel.connect(client.address, client.port);
    } catch (err) {
      strays?.close();
      throw err;
    }
    return strays;
  }

  private async serve(req: RequestPacket, rinfo: RemoteInfo, entry: { transfer?: Transfer }): Promise<void> {
    const startedAt = Date.now();
    const client = { address: rinfo.address, port: rinfo.port };
    const negotiated = negotiateOptions(req.options, this.opts);
    const record: TftpTransferRecord = {
      client: `${rinfo.address}:${rinfo.port}`,
      file: req.filename,
      blksize: negotiated.blksize,
      windowsize: negotiated.windowsize,
      bytes: 0,
      ms: 0,
      retransmits: 0,
      outcome: "error",
      startedAt,
    };
    const channel = await this.openChannel();
    const refuse = async (
      code: number,
      message: string,
      outcome: TftpTransferRecord["outcome"],
      reason: string,
    ): Promise<void> => {
      try {
        await channel.connect(client.address, client.port);
        channel.send(encodeError(code, message));
      } catch (err) {
        this.log.debug({ err }, "tftp: could not send the refusal");
      }
      // A short delay lets a queued send complete before the socket goes.
      setImmediate(() => channel.close());
      this.report({ ...record, outcome, ms: Date.now() - startedAt }, reason, negotiated.ignored);
    };

    if (req.op === "WRQ")
      return refuse(ErrorCode.AccessViolation, "read-only server", "denied", "write request");
    if (req.mode === "mail")
      return refuse(ErrorCode.IllegalOperation, "mail mode not supported", "error", "mail mode");
    const path = normaliseRequestPath(req.filename);
    if (!path.ok) return refuse(ErrorCode.AccessViolation, "access denied", "denied", path.reason);
    record.file = path.path;

    let source: BlockSource;
    try {
      const opened = await this.openSource(path.path, client);
      if (!opened.ok) {
        const code = opened.outcome === "denied" ? ErrorCode.AccessViolation : ErrorCode.FileNotFound;
        return refuse(
          code,
          opened.outcome === "denied" ? "access denied" : "file not found",
          opened.outcome,
          opened.reason,
        );
      }
      source = opened.source;
    } catch (err) {
      return refuse(
        ErrorCode.NotDefined,
        "internal error",
        "error",
        `provider failed: ${(err as Error).message}`,
      );
    }
    if (req.mode === "netascii") {
      if (source.size > NETASCII_MAX_BYTES) {
        source.release();
        return refuse(
          ErrorCode.NotDefined,
          "netascii not supported for files this large, use octet",
          "error",
          "netascii too large",
        );
      }
      const whole = await source.read(0, source.size);
      source.release();
      source = bufferSource(toNetascii(whole));
    }
    if (this.closing) {
      source.release();
      return refuse(ErrorCode.NotDefined, "server shutting down", "error", "shutdown");
    }

    const oack = [...negotiated.oack];
    // curl (7.88) rejects "tsize 0" in an OACK as invalid, so an empty file's size goes unsaid (RFC 2349 allows it).
    if (negotiated.tsizeRequested && source.size > 0) {
      oack.push(["tsize", String(source.size)]);
      record.tsize = source.size;
    }
    let strays: Socket | undefined;
    try {
      strays = await this.connectTransfer(channel, client);
    } catch (err) {
      source.release();
      return refuse(
        ErrorCode.NotDefined,
        "internal error",
        "error",
        `connect failed: ${(err as Error).message}`,
      );
    }
    const transfer = new Transfer(channel, client, source, {
      blksize: negotiated.blksize,
      windowsize: negotiated.windowsize,
      timeoutMs: negotiated.timeoutSec !== undefined ? negotiated.timeoutSec * 1000 : this.opts.timeoutMs,
      backoff: negotiated.timeoutSec === undefined,
      retries: this.opts.retries,
      oack,
      tsizeRequested: negotiated.tsizeRequested,
      ...(strays ? { strays } : {}),
    });
    entry.transfer = transfer;
    this.running.add(transfer);
    this.emit("start", { client: record.client, file: record.file });
    transfer.start();
    const result = await transfer.done;
    this.running.delete(transfer);
    this.report(
      {
        ...record,
        outcome: result.outcome,
        bytes: result.bytes,
        retransmits: result.retransmits,
        ms: Date.now() - startedAt,
      },
      result.reason,
      negotiated.ignored,
    );
  }

  private async openSource(
    path: string,
    client: { address: string; port: number },
  ): Promise<
    { ok: true; source: BlockSource } | { ok: false; outcome: "not-found" | "denied"; reason: string }
  > {
    return this.lookup.open(path, client);
  }

  private report(record: TftpTransferRecord, reason: string | undefined, ignored: string[]): void {
    this.stats.bytesSent += record.bytes;
    this.stats.retransmits += record.retransmits;
    if (record.outcome === "ok") this.stats.transfersOk++;
    else if (record.outcome === "size-probe") this.stats.sizeProbes++;
    else this.stats.transfersFailed++;
    const line = {
      ...record,
      ...(reason ? { reason } : {}),
      ...(ignored.length ? { ignoredOptions: ignored } : {}),
    };
    if (record.outcome === "ok" || record.outcome === "size-probe") this.log.info(line, "tftp transfer");
    else this.log.warn(line, "tftp transfer");
    this.emit("transfer", record);
  }
}
