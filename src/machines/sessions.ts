/**
 * Boot sessions: one record per boot attempt of a machine, built from the DHCP and file events the servers
 * emit. A session is "booting" until its kernel and initrd are delivered ("handed-off"), or until it has
 * been silent for `stallAfterMs` ("stalled", with a diagnosis). Bounded: the last `perMachine` sessions of
 * each machine, `total` in all, `MAX_STEPS` steps per session. Plain data, so it persists as JSON.
 */
import { type DiagnosedStep, diagnose } from "./diagnosis.js";
import type { DhcpEvent, FileEvent, FileRole } from "./events.js";

export type SessionState = "booting" | "handed-off" | "stalled";

export interface SessionStep {
  at: number;
  kind: "dhcp" | "file";
  /** DHCP: the message and the server's answer ("discover → offer"); file: the name. */
  label: string;
  outcome: string;
  role?: FileRole | undefined;
  protocol?: "tftp" | "http" | undefined;
  client?: "firmware" | "ipxe" | "os" | undefined;
  ip?: string | undefined;
  bootFile?: string | undefined;
  bytes?: number | undefined;
  ms?: number | undefined;
  blksize?: number | undefined;
  windowsize?: number | undefined;
  retransmits?: number | undefined;
}

export interface BootSession {
  id: string;
  mac: string;
  machine?: string | undefined;
  startedAt: number;
  updatedAt: number;
  endedAt?: number | undefined;
  state: SessionState;
  diagnosis?: string | undefined;
  address?: string | undefined;
  archCode?: number | undefined;
  steps: SessionStep[];
  /** Steps dropped beyond MAX_STEPS (a client looping on one request). */
  droppedSteps: number;
  /** Transfers running now: a session is not silent while one runs (a long initrd in lockstep). */
  running?: number | undefined;
}

export interface SessionLimits {
  perMachine: number;
  total: number;
  stallAfterMs: number;
}

export const DEFAULT_SESSION_LIMITS: SessionLimits = { perMachine: 10, total: 10_000, stallAfterMs: 120_000 };
const MAX_STEPS = 64;

/** What the store is told when a session ends, for metrics. */
export type SessionEnded = (session: BootSession) => void;

export class SessionStore {
  /** MAC → its sessions, oldest first. */
  private readonly byMac = new Map<string, BootSession[]>();
  private count = 0;
  private seq = 0;
  /** Bumped on every change; persistence writes when it moved. */
  version = 0;

  constructor(
    private limits: SessionLimits = DEFAULT_SESSION_LIMITS,
    private readonly onEnded?: SessionEnded,
  ) {}

  setLimits(limits: SessionLimits): void {
    this.limits = limits;
    this.trim();
  }

  /** A DHCP exchange: the firmware starting over opens a session; iPXE and the OS add to the current one. */
  dhcp(e: DhcpEvent, machine: string | undefined): BootSession | undefined {
    const current = this.current(e.mac);
    const step: SessionStep = {
      at: e.at,
      kind: "dhcp",
      label: `${e.message} → ${e.outcome}`,
      outcome: e.outcome,
      client: e.client,
      ip: e.ip,
      bootFile: e.file,
    };
    let session = current;
    if (e.client === "firmware" && e.message === "discover" && (!current || this.startsOver(current))) {
      if (current?.state === "booting")
        this.end(
          current,
          "stalled",
          e.at,
          `${diagnose(current.steps.map(diagnosed))}; the firmware then started over`,
        );
      session = this.open(e.mac, machine, e.at);
    }
    if (!session) {
      // A lone REQUEST (a firmware that kept its address), or iPXE after a restart: a session all the same.
      if (e.client === "os") return undefined;
      session = this.open(e.mac, machine, e.at);
    }
    if (e.archCode !== undefined && e.client !== "os") session.archCode = e.archCode;
    if (e.ip && ["ack", "offer", "learned", "proxy-ack"].includes(e.outcome)) session.address = e.ip;
    this.add(session, step);
    return session;
  }

  /** A file sent to the machine with this MAC (found from the client's address by the caller). */
  file(mac: string, e: FileEvent, role: FileRole): BootSession | undefined {
    const session = this.current(mac) ?? this.open(mac, undefined, e.at);
    if (e.outcome === "head" || e.outcome === "size-probe") return session; // probes, not steps
    this.add(session, {
      at: e.at,
      kind: "file",
      label: e.file,
      outcome: e.outcome,
      role,
      protocol: e.protocol,
      bytes: e.bytes,
      ms: e.ms,
      blksize: e.blksize,
      windowsize: e.windowsize,
      retransmits: e.retransmits,
    });
    if (session.state === "booting" && e.outcome === "ok" && (role === "kernel" || role === "initrd")) {
      const got = (r: FileRole) => session.steps.some((s) => s.role === r && s.outcome === "ok");
      if (got("kernel") && got("initrd")) this.end(session, "handed-off", e.at);
    }
    return session;
  }

  /** A transfer to the machine began (+1) or ended (-1). */
  busy(mac: string, delta: 1 | -1, at: number): void {
    const s = this.current(mac);
    if (!s) return;
    s.running = Math.max(0, (s.running ?? 0) + delta);
    s.updatedAt = Math.max(s.updatedAt, at);
  }

  /** Ends the sessions silent for longer than the limit; returns them. */
  sweep(now: number): BootSession[] {
    const ended: BootSession[] = [];
    for (const list of this.byMac.values()) {
      const s = list.at(-1);
      if (s?.state === "booting" && !s.running && now - s.updatedAt >= this.limits.stallAfterMs) {
        this.end(s, "stalled", now, diagnose(s.steps.map(diagnosed)));
        ended.push(s);
      }
    }
    return ended;
  }

  sessionsOf(mac: string): readonly BootSession[] {
    return this.byMac.get(mac) ?? [];
  }

  current(mac: string): BootSession | undefined {
    return this.byMac.get(mac)?.at(-1);
  }

  macs(): string[] {
    return [...this.byMac.keys()];
  }

  get size(): number {
    return this.count;
  }

  /** Everything, for persistence. */
  snapshot(): BootSession[] {
    return [...this.byMac.values()].flat();
  }

  /** Restores persisted sessions (oldest first); the limits apply. */
  restore(sessions: BootSession[]): void {
    for (const s of [...sessions].sort((a, b) => a.startedAt - b.startedAt)) {
      const list = this.byMac.get(s.mac) ?? [];
      list.push(s);
      this.byMac.set(s.mac, list);
      this.count++;
      const n = Number(s.id.split("-").at(-1));
      if (Number.isInteger(n) && n > this.seq) this.seq = n;
    }
    this.trim();
    this.version++;
  }

  /** A session that already got past DHCP, or ended, is over when the firmware sends DISCOVER again. */
  private startsOver(s: BootSession): boolean {
    return s.state !== "booting" || s.steps.some((st) => st.kind === "file");
  }

  private open(mac: string, machine: string | undefined, at: number): BootSession {
    const session: BootSession = {
      id: `${mac.replaceAll(":", "")}-${++this.seq}`,
      mac,
      machine,
      startedAt: at,
      updatedAt: at,
      state: "booting",
      steps: [],
      droppedSteps: 0,
    };
    const list = this.byMac.get(mac) ?? [];
    list.push(session);
    this.byMac.set(mac, list);
    this.count++;
    this.trim();
    this.version++;
    return session;
  }

  private add(session: BootSession, step: SessionStep): void {
    if (session.steps.length < MAX_STEPS) session.steps.push(step);
    else session.droppedSteps++;
    session.updatedAt = Math.max(session.updatedAt, step.at);
    this.version++;
  }

  private end(session: BootSession, state: SessionState, at: number, diagnosis?: string): void {
    session.state = state;
    session.endedAt = at;
    session.diagnosis = diagnosis;
    this.version++;
    this.onEnded?.(session);
  }

  /** Per machine first, then the oldest sessions of all (by start time) until the total fits. */
  private trim(): void {
    for (const [mac, list] of this.byMac) {
      while (list.length > this.limits.perMachine) {
        list.shift();
        this.count--;
      }
      if (list.length === 0) this.byMac.delete(mac);
    }
    // Each list is oldest first: the oldest of all is the oldest of the lists' heads.
    while (this.count > this.limits.total) {
      let oldest: BootSession[] | undefined;
      for (const list of this.byMac.values())
        if (!oldest || (list[0]?.startedAt ?? 0) < (oldest[0]?.startedAt ?? 0)) oldest = list;
      if (!oldest) break;
      const gone = oldest.shift();
      this.count--;
      if (gone && oldest.length === 0) this.byMac.delete(gone.mac);
    }
  }
}

function diagnosed(s: SessionStep): DiagnosedStep {
  return {
    kind: s.kind,
    outcome: s.outcome,
    file: s.label,
    role: s.role,
    retransmits: s.retransmits,
    bootFile: s.bootFile,
  };
}
