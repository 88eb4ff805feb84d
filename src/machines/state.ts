/**
 * The one owner of machine state: who a MAC is (the inventory, through the boot plan), which address it
 * holds (MachineRegistry, from the lease store), and its boot sessions (SessionStore, persisted in
 * state_dir). The servers emit events; the appliance passes them here; the API reads from here.
 */
import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "pino";
import type { Metrics } from "../metrics/metrics.js";
import type { BootEventFeed } from "../state/pg-boot-events.js";
import type { BootEvent, FileRole } from "./events.js";
import type { MachineRegistry } from "./registry.js";
import { type BootSession, DEFAULT_SESSION_LIMITS, type SessionLimits, SessionStore } from "./sessions.js";

export interface MachineStateOptions {
  registry: MachineRegistry;
  /** The inventory's name for a MAC, if it has one. */
  nameOf: (mac: string) => string | undefined;
  /** What a served path is in the boot chain. */
  roleOf: (path: string) => FileRole;
  /** The MAC holding a leased address (full mode), from the lease store. */
  macOfLease?: ((address: string) => string | undefined) | undefined;
  stateDir: string;
  limits?: SessionLimits | undefined;
  /** False: count metrics, keep no sessions (sessions.record: false). */
  record?: boolean | undefined;
  metrics?: Metrics | undefined;
  /**
   * In a pair: the events this appliance serves go out on it, and the peer's come in, so both appliances
   * hold the same sessions whichever served a step.
   */
  feed?: BootEventFeed | undefined;
  logger: Logger;
  now?: () => number;
}

const FILE = "boot-sessions.json";
const PERSIST_EVERY_MS = 2_000;
const SWEEP_EVERY_MS = 5_000;

export type SessionListener = (session: BootSession) => void;

export class MachineState {
  readonly sessions: SessionStore;
  private readonly listeners = new Set<SessionListener>();
  /** Address → MAC from DHCP answers (the only source in proxy mode; leases win in full mode). */
  private readonly macByAddress = new Map<string, string>();
  /** Transfers running now → the MAC they serve. */
  private readonly running = new Map<string, string>();
  private timers: NodeJS.Timeout[] = [];
  private persisted = -1;
  private writing: Promise<void> | undefined;
  private lastWriteAt = 0;
  private lastWriteMs = 0;
  private readonly now: () => number;

  constructor(private readonly opts: MachineStateOptions) {
    this.now = opts.now ?? Date.now;
    this.sessions = new SessionStore(opts.limits ?? DEFAULT_SESSION_LIMITS, (s) => {
      opts.metrics?.bootSessions.inc({ outcome: s.state });
      if (s.state === "handed-off" && s.endedAt !== undefined)
        opts.metrics?.bootSeconds.observe((s.endedAt - s.startedAt) / 1000);
      if (s.state === "stalled")
        opts.logger.warn({ mac: s.mac, machine: s.machine, diagnosis: s.diagnosis }, "boot stalled");
      else
        opts.logger.info(
          { mac: s.mac, machine: s.machine, ms: (s.endedAt ?? 0) - s.startedAt },
          "boot handed off",
        );
    });
  }

  get registry(): MachineRegistry {
    return this.opts.registry;
  }

  setLimits(limits: SessionLimits): void {
    this.sessions.setLimits(limits);
  }

  /** Loads the persisted sessions, then sweeps for stalls and persists changes on timers. */
  async start(): Promise<void> {
    const path = join(this.opts.stateDir, FILE);
    let peerCursor = 0;
    try {
      const parsed = JSON.parse(await readFile(path, "utf8")) as {
        sessions?: BootSession[];
        peerCursor?: number;
      };
      if (Array.isArray(parsed.sessions)) this.sessions.restore(parsed.sessions.filter(isSession));
      if (Number.isSafeInteger(parsed.peerCursor) && (parsed.peerCursor as number) > 0)
        peerCursor = parsed.peerCursor as number;
      this.persisted = this.sessions.version;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT")
        this.opts.logger.warn(
          { path, err: (err as Error).message },
          "boot sessions not restored: starting empty",
        );
    }
    // The peer's events since the last one these sessions hold (restored with them).
    if (this.opts.record !== false) await this.opts.feed?.start(peerCursor, (e) => this.apply(e, "peer"));
    this.timers = [
      setInterval(() => this.sweep(), SWEEP_EVERY_MS),
      setInterval(() => {
        // A big store takes a while to serialise (10,000 sessions: about 32 MB of JSON): writes are
        // spaced to at least 20 times the last one's cost, so the event loop stays free for boots.
        if (this.now() - this.lastWriteAt >= Math.max(PERSIST_EVERY_MS, 20 * this.lastWriteMs))
          void this.persist();
      }, PERSIST_EVERY_MS),
    ];
    for (const t of this.timers) t.unref();
  }

  async stop(): Promise<void> {
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    await this.opts.feed?.stop();
    await this.persist();
  }

  /** One DHCP exchange or file transfer, from any server. */
  record(e: BootEvent): void {
    const m = this.opts.metrics;
    if (e.kind === "dhcp") {
      m?.dhcpMessages.inc({ type: e.message, outcome: e.outcome });
      // Option 97 makes the SMBIOS UUID a lookup key for the boot plan, beside the MAC.
      if (e.uuid) this.registry.noteUuid(e.mac, e.uuid);
    } else {
      m?.transfers.inc({ protocol: e.protocol, outcome: e.outcome });
      if (e.bytes > 0) m?.transferBytes.inc({ protocol: e.protocol }, e.bytes);
      if (e.outcome === "ok") m?.transferSeconds.observe({ protocol: e.protocol }, e.ms / 1000);
      if (e.retransmits) m?.tftpRetransmits.inc(e.retransmits);
    }
    if (this.opts.record === false) return;
    this.opts.feed?.publish(e);
    this.apply(e, "self");
  }

  /** An event into the sessions: one this appliance served, or (in a pair) one its peer did. */
  private apply(e: BootEvent, servedBy: "self" | "peer"): void {
    if (e.kind === "dhcp") {
      if (servedBy === "peer" && e.uuid) this.registry.noteUuid(e.mac, e.uuid);
      // For attributing files only, never for ownership (that is MachineRegistry's, from leases): in proxy
      // mode the address the client claims in its REQUEST to the site's server ("learned") is all there is.
      if (e.ip && e.outcome !== "nak") this.macByAddress.set(e.ip, e.mac);
      const session = this.sessions.dhcp(e, this.opts.nameOf(e.mac));
      if (session) this.changed(session);
      return;
    }
    const runningMac = e.transferKey === undefined ? undefined : this.running.get(e.transferKey);
    if (runningMac !== undefined) {
      this.running.delete(e.transferKey as string);
      this.sessions.busy(runningMac, -1, e.at);
    }
    const mac = this.macOf(e.client);
    if (mac === undefined) return; // a client no DHCP answer or lease names (a test's curl, an operator)
    const session = this.sessions.file(mac, e, this.opts.roleOf(e.file));
    if (session) this.changed(session);
  }

  /**
   * A transfer began (key: one per transfer, e.g. client address:port and file): its machine's boot is
   * busy, never stalled, until the event with the same transferKey is recorded.
   */
  transferStarted(key: string, address: string): void {
    if (this.opts.record === false) return;
    const mac = this.macOf(address);
    if (mac === undefined) return;
    this.running.set(key, mac);
    this.sessions.busy(mac, +1, this.now());
  }

  /** The MAC at an address: the lease first, then what DHCP answered last. */
  macOf(address: string): string | undefined {
    return this.opts.macOfLease?.(address) ?? this.macByAddress.get(address);
  }

  /** Live updates (the web page's event stream). Returns the unsubscribe function. */
  subscribe(listener: SessionListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  sweep(): void {
    for (const s of this.sessions.sweep(this.now())) this.changed(s);
  }

  private changed(session: BootSession): void {
    for (const l of this.listeners) {
      try {
        l(session);
      } catch (err) {
        this.opts.logger.warn({ err: (err as Error).message }, "session listener failed");
      }
    }
  }

  /** Writes the sessions when they changed: a temporary file, then rename (never a torn file). */
  async persist(): Promise<void> {
    if (this.writing) return this.writing;
    const version = this.sessions.version;
    if (version === this.persisted) return;
    this.writing = (async () => {
      const path = join(this.opts.stateDir, FILE);
      const started = performance.now();
      try {
        await mkdir(this.opts.stateDir, { recursive: true });
        const peerCursor = this.opts.feed?.cursor;
        await writeFile(
          `${path}.tmp`,
          JSON.stringify({
            version: 1,
            sessions: this.sessions.snapshot(),
            ...(peerCursor ? { peerCursor } : {}),
          }),
        );
        await rename(`${path}.tmp`, path);
        this.persisted = version;
        this.lastWriteMs = performance.now() - started;
        this.lastWriteAt = this.now();
      } catch (err) {
        this.opts.logger.warn({ path, err: (err as Error).message }, "boot sessions not saved");
      }
    })().finally(() => {
      this.writing = undefined;
    });
    return this.writing;
  }
}

function isSession(s: unknown): s is BootSession {
  const o = s as BootSession;
  return (
    typeof o === "object" &&
    o !== null &&
    typeof o.id === "string" &&
    typeof o.mac === "string" &&
    typeof o.startedAt === "number" &&
    Array.isArray(o.steps)
  );
}
