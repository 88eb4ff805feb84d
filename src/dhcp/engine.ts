/**
 * The DHCP protocol logic (RFC 2131 server side, ProxyDHCP as in the PXE spec), without sockets:
 * a datagram and where it came from in, at most one datagram and where to send it out.
 */
import type { Logger } from "pino";
import type { DhcpClientKind, DhcpEvent } from "../machines/events.js";
import { archCodeFromVendorClass, archFromCode, isHttpClient, isIpxeUserClass, isPxeClient } from "./arch.js";
import type { BootAnswer, BootPolicy } from "./boot-types.js";
import { type DhcpConfig, parseCidr, type SubnetConfig } from "./config.js";
import { type Lease, type LeaseBackend, LeaseConflictError } from "./lease-types.js";
import {
  enc,
  encodeSubOptions,
  getClientUuid,
  getIp,
  getString,
  getU8,
  getU16,
  getU16List,
  intToIp,
  ipToInt,
  MessageType,
  messageTypeName,
  Opt,
  type OptionMap,
  parseSubOptions,
} from "./options.js";
import {
  BOOTREPLY,
  BOOTREQUEST,
  BROADCAST_FLAG,
  type DhcpPacket,
  decodePacket,
  encodePacket,
  macOf,
} from "./packet.js";

export interface ExchangeContext {
  /** Interface the datagram arrived on. */
  iface: string;
  /** Our address on that interface: server identifier and default next-server. */
  serverAddress: string;
  /** Local port it arrived on (67, or 4011 in proxy mode). */
  localPort: number;
  from: { address: string; port: number };
}

export interface Outgoing {
  buffer: Buffer;
  address: string;
  port: number;
}

export interface EngineOptions {
  config: DhcpConfig;
  store: LeaseBackend;
  bootPolicy: BootPolicy;
  /**
   * In an HA pair: whether this server answers a message of this type from the client with this key
   * (client identifier, else hardware address). Absent: it answers everything.
   */
  inScope?: ((type: number, key: Uint8Array) => boolean) | undefined;
  /** In an HA pair: where this server starts scanning each pool (index of count), to avoid racing its peer. */
  poolShare?: { index: number; count: number } | undefined;
  logger: Logger;
  /** Told of every exchange once it is decided (the machine state's boot sessions listen). */
  onExchange?: ((e: DhcpEvent) => void) | undefined;
}

const ZERO = "0.0.0.0";
const BROADCAST = "255.255.255.255";
const OFFER_HOLD_MS = 60_000;
/** Options that may be dropped, least important first, when a reply would exceed the client's size. */
const DROPPABLE = [Opt.DomainName, Opt.DnsServers, Opt.TftpServerName, Opt.VendorSpecific, Opt.HostName];
/** PXE vendor options: discovery control 8 = "boot file is in this packet, no boot server discovery". */
const PXE_VENDOR_OPTIONS = encodeSubOptions([[6, Buffer.from([8])]]);
/** PXE vendor sub-option 71: the boot item a client asks a boot server for (PXE 2.1 boot server discovery). */
const PXE_BOOT_ITEM = 71;

function hasPxeBootItem(options: OptionMap): boolean {
  const vendor = options.get(Opt.VendorSpecific);
  return vendor !== undefined && parseSubOptions(vendor)?.get(PXE_BOOT_ITEM) !== undefined;
}

interface Pool {
  cfg: SubnetConfig;
  start: number;
  end: number;
  cursor: number;
  network: number;
  mask: number;
  /** After a full scan found nothing, skip scanning until then (a flood must not cost O(pool) each). */
  exhaustedUntil: number;
}

/** The key RFC 3074 hashes: the client identifier (option 61) when sent, else the hardware address. */
function clientKey(req: DhcpPacket): Uint8Array {
  const id = req.options.get(Opt.ClientId);
  if (id && id.length > 0) return id;
  return req.chaddr.subarray(0, Math.min(req.hlen, 16));
}

function contains(pool: Pool, address: string): boolean {
  return (ipToInt(address) & pool.mask) >>> 0 === pool.network;
}

interface Offer {
  mac: string;
  until: number;
}

/** Outcome of one exchange, logged as one line. */
interface Exchange {
  mac: string;
  type: string;
  client: DhcpClientKind;
  xid: string;
  iface: string;
  ip?: string;
  arch?: string;
  archCode?: number;
  file?: string;
  uuid?: string;
  relay?: string;
  outcome: string;
}

export class DhcpEngine {
  private config: DhcpConfig;
  private bootPolicy: BootPolicy;
  private pools: Pool[] = [];
  private reservations = new Map<string, { address: string; hostname?: string | undefined }>();
  private reservedAddresses = new Map<string, string>();
  private offers = new Map<string, Offer>();
  private offerByMac = new Map<string, string>();
  private readonly store: LeaseBackend;
  private readonly logger: Logger;
  private badPackets = { logged: 0, suppressed: 0, windowStart: 0 };
  private exhaustedLoggedAt = new Map<string, number>();
  /** Counters since start: datagrams handled, malformed ones dropped, replies produced. */
  readonly counters = { received: 0, malformed: 0, replies: 0, peerScope: 0 };

  /** Each subnet's pool: its size and how many of its addresses are bound now (API, metrics). */
  poolUse(
    now = Date.now(),
  ): { subnet: string; interface?: string | undefined; size: number; bound: number }[] {
    return this.pools.map((p) => {
      let bound = 0;
      for (const l of this.store.all())
        if (l.state === "bound" && l.expires > now && contains(p, l.address)) bound++;
      return { subnet: p.cfg.subnet, interface: p.cfg.interface, size: p.end - p.start + 1, bound };
    });
  }

  constructor(private readonly opts: EngineOptions) {
    this.config = opts.config;
    this.bootPolicy = opts.bootPolicy;
    this.store = opts.store;
    this.logger = opts.logger;
    this.setConfig(opts.config);
  }

  setConfig(config: DhcpConfig): void {
    const oldCursors = new Map(this.pools.map((p) => [p.cfg.subnet, p.cursor]));
    this.config = config;
    this.pools = config.subnets.map((cfg) => {
      const start = ipToInt(cfg.range.start);
      const end = ipToInt(cfg.range.end);
      const share = this.opts.poolShare;
      const cursor =
        oldCursors.get(cfg.subnet) ??
        (share ? start + Math.floor(((end - start + 1) * share.index) / share.count) : start);
      const { network, mask } = parseCidr(cfg.subnet);
      return {
        cfg,
        start,
        end,
        cursor: cursor >= start && cursor <= end ? cursor : start,
        network,
        mask,
        exhaustedUntil: 0,
      };
    });
    this.reservations = new Map(
      config.reservations.map((r) => [r.mac, { address: r.address, hostname: r.hostname }]),
    );
    this.reservedAddresses = new Map(config.reservations.map((r) => [r.address, r.mac]));
  }

  setBootPolicy(policy: BootPolicy): void {
    this.bootPolicy = policy;
  }

  /** Handles one datagram. Never throws for bad input; resolves undefined when there is nothing to send. */
  async handle(datagram: Buffer, ctx: ExchangeContext): Promise<Outgoing | undefined> {
    this.counters.received++;
    const decoded = decodePacket(datagram);
    if (!decoded.ok) {
      this.logBadPacket(ctx, decoded.error, datagram.length);
      return undefined;
    }
    const req = decoded.packet;
    if (req.op !== BOOTREQUEST) return undefined;
    const type = getU8(req.options, Opt.MessageType);
    if (type === undefined || type < 1 || type > 8) {
      this.logBadPacket(ctx, `missing or bad message type ${type}`, datagram.length);
      return undefined;
    }
    if (this.opts.inScope && !this.opts.inScope(type, clientKey(req))) {
      // The peer's client (RFC 3074 bucket) or the standby's silence: the peer answers it.
      this.counters.peerScope++;
      return undefined;
    }
    const vendorClass = getString(req.options, Opt.VendorClass);
    const ex: Exchange = {
      mac: macOf(req),
      type: messageTypeName[type] ?? String(type),
      client: isIpxeUserClass(req.options.get(Opt.UserClass))
        ? "ipxe"
        : isPxeClient(vendorClass) || isHttpClient(vendorClass)
          ? "firmware"
          : "os",
      xid: req.xid.toString(16).padStart(8, "0"),
      iface: ctx.iface,
      outcome: "ignored",
    };
    if (req.giaddr !== ZERO) ex.relay = req.giaddr;
    let out: Outgoing | undefined;
    try {
      out =
        this.config.mode === "proxy"
          ? this.handleProxy(req, type, ctx, ex)
          : await this.handleFull(req, type, ctx, ex);
    } catch (err) {
      ex.outcome = "error";
      this.logger.error({ err, mac: ex.mac, type: ex.type }, "dhcp exchange failed");
      return undefined;
    }
    this.logger.info(ex, "dhcp exchange");
    this.opts.onExchange?.({
      kind: "dhcp",
      at: Date.now(),
      mac: ex.mac,
      message: ex.type.toLowerCase(),
      outcome: ex.outcome,
      client: ex.client,
      ip: ex.ip,
      archCode: ex.archCode,
      file: ex.file,
      uuid: ex.uuid,
    });
    if (out) this.counters.replies++;
    return out;
  }

  // ---------------------------------------------------------------- full mode

  private async handleFull(
    req: DhcpPacket,
    type: number,
    ctx: ExchangeContext,
    ex: Exchange,
  ): Promise<Outgoing | undefined> {
    const now = Date.now();
    switch (type) {
      case MessageType.Discover: {
        const pool = this.poolFor(req, ctx);
        if (!pool) return this.none(ex, "no-subnet");
        const address = this.allocate(pool, ex.mac, getIp(req.options, Opt.RequestedAddress), now);
        if (address === undefined) return this.none(ex, "pool-exhausted");
        this.hold(address, ex.mac, now);
        ex.ip = address;
        ex.outcome = "offer";
        return this.leaseReply(req, MessageType.Offer, address, pool, ctx, ex);
      }
      case MessageType.Request:
        return this.handleRequest(req, ctx, ex, now);
      case MessageType.Decline: {
        if (!this.mine(req, ctx)) return this.none(ex, "not-for-us");
        const address = getIp(req.options, Opt.RequestedAddress);
        const lease = address ? this.store.get(address) : undefined;
        if (!address || !lease || lease.mac !== ex.mac) return this.none(ex, "decline-unknown");
        const pool = this.poolContaining(address);
        const quarantine = (pool?.cfg.lease_time ?? 3600) * 1000;
        await this.store.commit([{ address, mac: "", expires: now + quarantine, state: "declined" }]);
        this.logger.warn({ mac: ex.mac, ip: address }, "address declined by client (in use?): quarantined");
        ex.ip = address;
        return this.none(ex, "declined");
      }
      case MessageType.Release: {
        if (!this.mine(req, ctx)) return this.none(ex, "not-for-us");
        const lease = this.store.get(req.ciaddr);
        ex.ip = req.ciaddr;
        if (!lease || lease.mac !== ex.mac || lease.state !== "bound")
          return this.none(ex, "release-unknown");
        await this.store.commit([{ ...lease, expires: now, state: "free" }]);
        const released = this.poolContaining(req.ciaddr);
        if (released) released.exhaustedUntil = 0;
        return this.none(ex, "released");
      }
      case MessageType.Inform: {
        const pool = req.ciaddr !== ZERO ? this.poolContaining(req.ciaddr) : this.poolFor(req, ctx);
        if (!pool) return this.none(ex, "no-subnet");
        ex.ip = req.ciaddr;
        ex.outcome = "ack-inform";
        return this.leaseReply(req, MessageType.Ack, ZERO, pool, ctx, ex, { inform: true });
      }
      default:
        return this.none(ex, "unexpected-type");
    }
  }

  private async handleRequest(
    req: DhcpPacket,
    ctx: ExchangeContext,
    ex: Exchange,
    now: number,
  ): Promise<Outgoing | undefined> {
    const serverId = getIp(req.options, Opt.ServerId);
    const requested = getIp(req.options, Opt.RequestedAddress);
    if (serverId !== undefined && serverId !== ctx.serverAddress && serverId !== this.config.server_address) {
      // SELECTING another server's offer: release our offer to this client, stay silent.
      const held = this.offerByMac.get(ex.mac);
      if (held !== undefined) {
        this.offers.delete(held);
        this.offerByMac.delete(ex.mac);
      }
      return this.none(ex, "chose-other-server");
    }
    // SELECTING (server id, requested), INIT-REBOOT (requested only), RENEWING/REBINDING (ciaddr only).
    const address = requested ?? (req.ciaddr !== ZERO ? req.ciaddr : undefined);
    ex.ip = address;
    if (address === undefined) return this.none(ex, "request-without-address");
    const pool = this.poolFor(req, ctx);
    if (!pool || !this.inRangeOrReserved(pool, address, ex.mac)) {
      if (!pool && serverId === undefined && req.ciaddr !== ZERO) return this.none(ex, "unknown-subnet");
      return this.nak(req, ctx, ex, `${address} is not valid on this network`);
    }
    const reserved = this.reservations.get(ex.mac);
    if (reserved !== undefined && reserved.address !== address && contains(pool, reserved.address))
      return this.nak(req, ctx, ex, `${ex.mac} is reserved ${reserved.address}`);
    if (!this.isFree(address, ex.mac, now)) return this.nak(req, ctx, ex, `${address} is in use`);

    // A lease (and with it the right to the machine's config) is made only from an offer this server
    // made, or confirms the address it already gave this MAC: a forged REQUEST cannot move a binding.
    const previous = this.store.byMac(ex.mac);
    const known =
      this.offerByMac.get(ex.mac) === address ||
      previous?.address === address ||
      reserved?.address === address;
    if (!known) {
      // RFC 2131 4.3.2: INIT-REBOOT from a client we have no record of: stay silent (it falls back to
      // DISCOVER). SELECTING an address we did not offer, or RENEWING one it does not hold: NAK.
      if (serverId === undefined && req.ciaddr === ZERO && previous === undefined)
        return this.none(ex, "init-reboot-unknown-client");
      return this.nak(req, ctx, ex, `${address} was not offered to ${ex.mac}`);
    }

    const leaseMs = pool.cfg.lease_time * 1000;
    const records: Lease[] = [];
    if (previous && previous.address !== address && previous.state === "bound") {
      records.push({ ...previous, expires: now, state: "free" });
      if (previous.expires > now)
        this.logger.warn(
          { mac: ex.mac, from: previous.address, to: address },
          "lease moved to a new address: the machine's config now goes to the new address only",
        );
    }
    const hostname = reserved?.hostname ?? getString(req.options, Opt.HostName);
    records.push({ address, mac: ex.mac, expires: now + leaseMs, state: "bound", hostname });
    if (this.offers.get(address)?.mac === ex.mac) this.offers.delete(address);
    if (this.offerByMac.get(ex.mac) === address) this.offerByMac.delete(ex.mac);
    // The ACK waits until the record is durable (group commit with every other ACK of this turn).
    try {
      await this.store.commit(records);
    } catch (err) {
      // The peer sharing the lease database holds it: the client starts over with a DISCOVER.
      if (err instanceof LeaseConflictError) return this.nak(req, ctx, ex, `${address} is in use`);
      throw err;
    }
    ex.outcome = "ack";
    return this.leaseReply(req, MessageType.Ack, address, pool, ctx, ex);
  }

  private nak(req: DhcpPacket, ctx: ExchangeContext, ex: Exchange, why: string): Outgoing | undefined {
    ex.outcome = "nak";
    const opts: OptionMap = new Map([
      [Opt.MessageType, enc.u8(MessageType.Nak)],
      [Opt.ServerId, enc.ip(this.serverId(ctx))],
      [Opt.Message, enc.string(why)],
    ]);
    const relay = req.options.get(Opt.RelayAgent);
    if (relay) opts.set(Opt.RelayAgent, relay);
    const reply = this.replyBase(req, opts);
    if (req.giaddr !== ZERO) reply.flags |= BROADCAST_FLAG;
    return this.send(req, reply, ctx, { nak: true });
  }

  private leaseReply(
    req: DhcpPacket,
    type: number,
    address: string,
    pool: Pool,
    ctx: ExchangeContext,
    ex: Exchange,
    flags: { inform?: boolean } = {},
  ): Outgoing | undefined {
    const c = pool.cfg;
    const opts: OptionMap = new Map();
    opts.set(Opt.MessageType, enc.u8(type));
    opts.set(Opt.ServerId, enc.ip(this.serverId(ctx)));
    if (!flags.inform) {
      const t1 = c.renew_time ?? Math.floor(c.lease_time / 2);
      const t2 = c.rebind_time ?? Math.floor((c.lease_time * 7) / 8);
      opts.set(Opt.LeaseTime, enc.u32(c.lease_time));
      opts.set(Opt.RenewalTime, enc.u32(t1));
      opts.set(Opt.RebindingTime, enc.u32(t2));
    }
    opts.set(Opt.SubnetMask, enc.u32(pool.mask));
    if (c.router) opts.set(Opt.Router, enc.ip(c.router));
    if (c.dns.length > 0) opts.set(Opt.DnsServers, enc.ips(c.dns));
    if (c.domain) opts.set(Opt.DomainName, enc.string(c.domain));
    const reservedName = this.reservations.get(ex.mac)?.hostname;
    if (reservedName) opts.set(Opt.HostName, enc.string(reservedName));
    const reply = this.replyBase(req, opts);
    reply.yiaddr = address;
    this.addBootAnswer(req, reply, ctx, ex);
    const relay = req.options.get(Opt.RelayAgent);
    if (relay) opts.set(Opt.RelayAgent, relay); // RFC 3046: echoed, last
    return this.send(req, reply, ctx);
  }

  /** PXE / HTTP boot clients get a loader; other clients just a lease. */
  private addBootAnswer(
    req: DhcpPacket,
    reply: DhcpPacket,
    ctx: ExchangeContext,
    ex: Exchange,
  ): BootAnswer | undefined {
    const vendorClass = getString(req.options, Opt.VendorClass);
    if (!isPxeClient(vendorClass) && !isHttpClient(vendorClass)) return undefined;
    const archCode = getU16List(req.options, Opt.ClientArch)?.[0] ?? archCodeFromVendorClass(vendorClass);
    const uuid = getClientUuid(req.options);
    if (archCode !== undefined) ex.archCode = archCode;
    if (uuid !== undefined) ex.uuid = uuid;
    const decision = archFromCode(archCode);
    if (decision.kind === "bios") ex.arch = "bios";
    const ipxe = isIpxeUserClass(req.options.get(Opt.UserClass));
    const answer = this.bootPolicy({ mac: ex.mac, archCode, vendorClass, ipxe, uuid, interface: ctx.iface });
    if (!answer) return undefined;
    ex.arch = answer.arch;
    ex.file = answer.bootFile;
    reply.siaddr = answer.nextServer;
    reply.file = answer.bootFile.length <= 127 ? answer.bootFile : "";
    reply.options.set(Opt.VendorClass, enc.string(answer.vendorClass));
    if (answer.vendorClass === "PXEClient") reply.options.set(Opt.VendorSpecific, PXE_VENDOR_OPTIONS);
    reply.options.set(Opt.TftpServerName, enc.string(answer.nextServer));
    reply.options.set(Opt.BootFileName, enc.string(answer.bootFile));
    const uuidOpt = req.options.get(Opt.ClientUuid);
    if (uuidOpt) reply.options.set(Opt.ClientUuid, uuidOpt);
    return answer;
  }

  // ---------------------------------------------------------------- proxy mode

  private handleProxy(
    req: DhcpPacket,
    type: number,
    ctx: ExchangeContext,
    ex: Exchange,
  ): Outgoing | undefined {
    const vendorClass = getString(req.options, Opt.VendorClass);
    if (!isPxeClient(vendorClass) && !isHttpClient(vendorClass)) return this.none(ex, "not-pxe");
    const onProxyPort = ctx.localPort === this.config.proxy_port;
    let replyType: number;
    if (type === MessageType.Discover && !onProxyPort) {
      replyType = MessageType.Offer;
    } else if (type === MessageType.Request || type === MessageType.Inform) {
      // Logged, never trusted: in proxy mode the address a client claims grants it nothing.
      const claimed = req.ciaddr !== ZERO ? req.ciaddr : getIp(req.options, Opt.RequestedAddress);
      if (claimed !== undefined) ex.ip = claimed;
      // On 67 a REQUEST is the client taking its lease from the site's server (which may share our
      // address, so its server identifier proves nothing). A proxy has no lease to confirm: an ACK from
      // us (yiaddr 0) reaching the client first makes it decline its lease (EDK2 DhcpHandleRequest).
      // Like dnsmasq, answer on 67 only a broadcast boot-server request (PXE boot item in option 43).
      if (!onProxyPort && !hasPxeBootItem(req.options)) return this.none(ex, "learned");
      replyType = MessageType.Ack;
    } else {
      return this.none(ex, "ignored");
    }
    const opts: OptionMap = new Map([
      [Opt.MessageType, enc.u8(replyType)],
      [Opt.ServerId, enc.ip(this.serverId(ctx))],
    ]);
    const reply = this.replyBase(req, opts);
    const answer = this.addBootAnswer(req, reply, ctx, ex);
    if (!answer) return this.none(ex, "no-boot-answer");
    ex.outcome = replyType === MessageType.Offer ? "proxy-offer" : "proxy-ack";
    if (onProxyPort)
      return this.encodeTo(req, reply, req.ciaddr !== ZERO ? req.ciaddr : ctx.from.address, ctx.from.port);
    return this.send(req, reply, ctx);
  }

  // ---------------------------------------------------------------- helpers

  private none(ex: Exchange, outcome: string): undefined {
    ex.outcome = outcome;
    return undefined;
  }

  private serverId(ctx: ExchangeContext): string {
    return this.config.server_address ?? ctx.serverAddress;
  }

  /** Message for us: server identifier absent or ours. */
  private mine(req: DhcpPacket, ctx: ExchangeContext): boolean {
    const id = getIp(req.options, Opt.ServerId);
    return id === undefined || id === this.serverId(ctx) || id === ctx.serverAddress;
  }

  private replyBase(req: DhcpPacket, options: OptionMap): DhcpPacket {
    return {
      op: BOOTREPLY,
      htype: req.htype,
      hlen: req.hlen,
      hops: 0,
      xid: req.xid,
      secs: 0,
      flags: req.flags & BROADCAST_FLAG,
      ciaddr: req.ciaddr,
      yiaddr: ZERO,
      siaddr: ZERO,
      giaddr: req.giaddr,
      chaddr: req.chaddr,
      sname: "",
      file: "",
      options,
    };
  }

  /**
   * RFC 2131 §4.1 destinations: relay → giaddr:67; NAK → broadcast; ciaddr set → unicast to it;
   * otherwise broadcast. (Unicast to yiaddr would need an ARP entry injected for a client that does
   * not have its address yet; every client accepts the broadcast, so that is always used.)
   */
  private send(
    req: DhcpPacket,
    reply: DhcpPacket,
    ctx: ExchangeContext,
    how: { nak?: boolean } = {},
  ): Outgoing | undefined {
    const clientPort = this.config.port + 1;
    if (req.giaddr !== ZERO) return this.encodeTo(req, reply, req.giaddr, this.config.port);
    if (!how.nak && req.ciaddr !== ZERO) return this.encodeTo(req, reply, req.ciaddr, clientPort);
    void ctx;
    return this.encodeTo(req, reply, BROADCAST, clientPort);
  }

  private encodeTo(req: DhcpPacket, reply: DhcpPacket, address: string, port: number): Outgoing | undefined {
    const result = encodePacket(reply, {
      maxMessageSize: getU16(req.options, Opt.MaxMessageSize),
      droppable: DROPPABLE,
    });
    if (!result.ok) {
      this.logger.error({ mac: macOf(req), error: result.error }, "reply could not be encoded");
      return undefined;
    }
    if (result.dropped.length > 0)
      this.logger.warn(
        { mac: macOf(req), dropped: result.dropped },
        "options dropped to fit the client's message size",
      );
    return { buffer: result.buffer, address, port };
  }

  /** Subnet by giaddr (relay), by the arrival interface, or by the interface address. */
  private poolFor(req: DhcpPacket, ctx: ExchangeContext): Pool | undefined {
    if (req.giaddr !== ZERO) return this.pools.find((p) => contains(p, req.giaddr));
    return (
      this.pools.find((p) => p.cfg.interface === ctx.iface) ??
      this.pools.find((p) => p.cfg.interface === undefined && contains(p, ctx.serverAddress))
    );
  }

  private poolContaining(address: string): Pool | undefined {
    return this.pools.find((p) => contains(p, address));
  }

  private inRangeOrReserved(pool: Pool, address: string, mac: string): boolean {
    if (!contains(pool, address)) return false;
    if (this.reservedAddresses.get(address) === mac) return true;
    const n = ipToInt(address);
    return n >= pool.start && n <= pool.end;
  }

  /** Free for this MAC: not reserved for another, not offered to another, not leased or quarantined. */
  private isFree(address: string, mac: string, now: number): boolean {
    const owner = this.reservedAddresses.get(address);
    if (owner !== undefined && owner !== mac) return false;
    const offer = this.offers.get(address);
    if (offer && offer.mac !== mac && offer.until > now) return false;
    const lease = this.store.get(address);
    if (lease && lease.mac !== mac && lease.state !== "free" && lease.expires > now) return false;
    return true;
  }

  private hold(address: string, mac: string, now: number): void {
    const prev = this.offerByMac.get(mac);
    if (prev !== undefined && prev !== address) this.offers.delete(prev);
    // The address may still hold another MAC's (expired) offer: that MAC's index entry goes with it.
    const displaced = this.offers.get(address);
    if (displaced && displaced.mac !== mac && this.offerByMac.get(displaced.mac) === address)
      this.offerByMac.delete(displaced.mac);
    this.offers.set(address, { mac, until: now + OFFER_HOLD_MS });
    this.offerByMac.set(mac, address);
  }

  private allocate(pool: Pool, mac: string, requested: string | undefined, now: number): string | undefined {
    const reserved = this.reservations.get(mac);
    if (reserved && contains(pool, reserved.address)) return reserved.address;
    const inRange = (a: string): boolean => {
      const n = ipToInt(a);
      return n >= pool.start && n <= pool.end && !this.reservedAddresses.has(a);
    };
    const previous = this.store.byMac(mac);
    if (previous && inRange(previous.address) && this.isFree(previous.address, mac, now))
      return previous.address;
    const offered = this.offerByMac.get(mac);
    if (offered !== undefined && inRange(offered) && this.isFree(offered, mac, now)) return offered;
    if (requested !== undefined && inRange(requested) && this.isFree(requested, mac, now)) return requested;
    // Two passes from the cursor: never-used addresses first, then expired or released ones.
    const size = pool.end - pool.start + 1;
    for (const pass of now < pool.exhaustedUntil ? [] : [0, 1]) {
      let n = pool.cursor;
      for (let i = 0; i < size; i++) {
        const a = intToIp(n);
        n = n >= pool.end ? pool.start : n + 1;
        if (this.reservedAddresses.has(a)) continue;
        const offer = this.offers.get(a);
        if (offer && offer.until > now) continue;
        const lease = this.store.get(a);
        if (pass === 0 ? lease === undefined : this.isFree(a, mac, now)) {
          pool.cursor = n;
          return a;
        }
      }
    }
    if (now >= pool.exhaustedUntil) pool.exhaustedUntil = now + 1000;
    const last = this.exhaustedLoggedAt.get(pool.cfg.subnet) ?? 0;
    if (now - last > 10_000) {
      this.exhaustedLoggedAt.set(pool.cfg.subnet, now);
      this.logger.warn(
        { subnet: pool.cfg.subnet, range: `${pool.cfg.range.start}-${pool.cfg.range.end}`, mac },
        "DHCP pool exhausted: no free address, no offer sent",
      );
    }
    return undefined;
  }

  /** Malformed datagrams: logged at most 10 per 10 s, with a count of those not logged. */
  private logBadPacket(ctx: ExchangeContext, error: string, length: number): void {
    this.counters.malformed++;
    const now = Date.now();
    const b = this.badPackets;
    if (now - b.windowStart > 10_000) {
      if (b.suppressed > 0)
        this.logger.warn({ suppressed: b.suppressed }, "malformed DHCP datagrams not logged");
      b.windowStart = now;
      b.logged = 0;
      b.suppressed = 0;
    }
    if (b.logged < 10) {
      b.logged++;
      this.logger.warn(
        { from: `${ctx.from.address}:${ctx.from.port}`, iface: ctx.iface, length, error },
        "malformed DHCP datagram dropped",
      );
    } else {
      b.suppressed++;
    }
  }

  /** Outstanding offers, by address and by MAC (the two must stay the same size). */
  offerCounts(): { byAddress: number; byMac: number } {
    return { byAddress: this.offers.size, byMac: this.offerByMac.size };
  }

  /** Expired offers are forgotten (called periodically). */
  sweepOffers(now = Date.now()): void {
    for (const [address, offer] of this.offers) {
      if (offer.until <= now) {
        this.offers.delete(address);
        if (this.offerByMac.get(offer.mac) === address) this.offerByMac.delete(offer.mac);
      }
    }
  }
}
