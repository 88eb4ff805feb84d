/**
 * A boot's timeline: the network side from the DHCP/TFTP server's log lines, the rest from the
 * serial console. Every time is in ms since QEMU started. Parsers are pure functions of one line.
 */

export type EventKind =
  | "dhcp"
  | "tftp"
  | "firmware-pxe"
  | "kernel-start"
  | "iscsi-login"
  | "root-disk"
  | "root-mounted"
  | "marker"
  | "time-limit";

export interface TimelineEvent {
  t: number;
  kind: EventKind;
  source: "server" | "serial" | "target" | "lab";
  detail: string;
}

/** A file the server sent: over TFTP, or (the appliance's boot HTTP server) over HTTP. */
export interface TftpFileRow {
  /** ms since QEMU start at which the transfer ended (as logged). */
  t: number;
  /** Absent means TFTP (dnsmasq and the appliance's TFTP lines). */
  protocol?: "tftp" | "http";
  client?: string;
  file: string;
  bytes?: number;
  blksize?: number;
  windowsize?: number;
  ms?: number;
  outcome: string;
}

export interface DhcpRow {
  t: number;
  message: string;
  mac?: string;
  ip?: string;
  arch?: number;
  vendorClass?: string;
  file?: string;
}

/** What a server log line means, if anything; `at` is the epoch ms the line arrived. */
export type ServerLogItem =
  | { kind: "dhcp"; at: number; row: Omit<DhcpRow, "t"> }
  | { kind: "tftp"; at: number; row: Omit<TftpFileRow, "t"> };

const DNSMASQ_DHCP =
  /^dnsmasq-dhcp\[\d+\]: (?:\d+ )?(DHCP[A-Z]+)\([^)]*\) (?:(\d+\.\d+\.\d+\.\d+) )?([0-9a-f:]{17})/;
const DNSMASQ_VENDOR = /^dnsmasq-dhcp\[\d+\]: (?:\d+ )?vendor class: (\S+)/;
const DNSMASQ_SENT = /^dnsmasq-tftp\[\d+\]: sent (\S+) to (\S+)/;
const DNSMASQ_NOTFOUND = /^dnsmasq-tftp\[\d+\]: file (\S+) not found(?: for (\S+))?/;
const DNSMASQ_TFTP_ERR =
  /^dnsmasq-tftp\[\d+\]: (?:error (\d+) (.*) received from (\S+)|failed sending (\S+) to (\S+))/;

/**
 * dnsmasq with `--log-dhcp --log-facility=-`. It logs a TFTP transfer once, when it ends, and
 * neither its size nor its options: bytes come from `sizeOf`, blksize/windowsize stay unknown.
 * The vendor class line precedes its DHCP message, so it is carried by the caller (see DnsmasqLogReader).
 */
export function parseDnsmasqLine(
  line: string,
  at: number,
  tftpRoot: string,
  sizeOf: (path: string) => number | undefined,
): ServerLogItem | { kind: "vendor"; vendorClass: string } | undefined {
  const rel = (p: string) => (p.startsWith(`${tftpRoot}/`) ? p.slice(tftpRoot.length + 1) : p);
  let m = DNSMASQ_DHCP.exec(line);
  if (m) {
    const row: Omit<DhcpRow, "t"> = { message: m[1] ?? "" };
    if (m[2]) row.ip = m[2];
    if (m[3]) row.mac = m[3];
    return { kind: "dhcp", at, row };
  }
  m = DNSMASQ_VENDOR.exec(line);
  if (m) return { kind: "vendor", vendorClass: m[1] ?? "" };
  m = DNSMASQ_SENT.exec(line);
  if (m) {
    const path = m[1] ?? "";
    const row: Omit<TftpFileRow, "t"> = { file: rel(path), client: m[2] ?? "", outcome: "ok" };
    const bytes = sizeOf(path);
    if (bytes !== undefined) row.bytes = bytes;
    return { kind: "tftp", at, row };
  }
  m = DNSMASQ_NOTFOUND.exec(line);
  if (m) {
    const row: Omit<TftpFileRow, "t"> = { file: rel(m[1] ?? ""), outcome: "not-found" };
    if (m[2]) row.client = m[2];
    return { kind: "tftp", at, row };
  }
  m = DNSMASQ_TFTP_ERR.exec(line);
  if (m) {
    if (m[1])
      return {
        kind: "tftp",
        at,
        row: { file: "?", client: m[3] ?? "", outcome: `client-error ${m[1]} ${m[2] ?? ""}`.trim() },
      };
    return { kind: "tftp", at, row: { file: rel(m[4] ?? ""), client: m[5] ?? "", outcome: "failed" } };
  }
  return undefined;
}

export function archFromVendorClass(vc: string): number | undefined {
  const m = /Arch:(\d{5})/.exec(vc);
  return m ? Number(m[1]) : undefined;
}

/** Reads dnsmasq's lines in order, joining each DHCP message with the vendor class logged just before it. */
export class DnsmasqLogReader {
  private vendorClass: string | undefined;
  private probeAbortedBy: string | undefined;
  readonly items: ServerLogItem[] = [];
  constructor(
    private readonly tftpRoot: string,
    private readonly sizeOf: (path: string) => number | undefined,
  ) {}
  push(line: string, at: number): void {
    const item = parseDnsmasqLine(line, at, this.tftpRoot, this.sizeOf);
    if (!item) return;
    if (item.kind === "vendor") {
      this.vendorClass = item.vendorClass;
      return;
    }
    if (item.kind === "tftp") {
      // OVMF asks for the size (tsize) and aborts with ERROR 8; dnsmasq logs the abort, then "sent".
      if (item.row.outcome.startsWith("client-error 8")) {
        this.probeAbortedBy = item.row.client;
        return;
      }
      if (
        this.probeAbortedBy !== undefined &&
        item.row.client === this.probeAbortedBy &&
        item.row.outcome === "ok"
      ) {
        item.row.outcome = "size-probe";
        this.probeAbortedBy = undefined;
      }
    }
    if (item.kind === "dhcp" && this.vendorClass) {
      item.row.vendorClass = this.vendorClass;
      const arch = archFromVendorClass(this.vendorClass);
      if (arch !== undefined) item.row.arch = arch;
      this.vendorClass = undefined;
    }
    this.items.push(item);
  }
}

/**
 * The appliance's pino JSON lines: TFTP transfers carry client,file,blksize,windowsize,bytes,ms,outcome;
 * DHCP exchanges carry mac,ip,arch,file,outcome. pino's `time` (epoch ms) is preferred to the arrival time.
 */
export function parseApplianceLine(line: string, at: number): ServerLogItem | undefined {
  if (!line.startsWith("{")) return undefined;
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return undefined;
  }
  const when = typeof o.time === "number" ? o.time : at;
  const str = (k: string) => (typeof o[k] === "string" ? (o[k] as string) : undefined);
  const num = (k: string) => (typeof o[k] === "number" ? (o[k] as number) : undefined);
  if (typeof o.file === "string" && (o.blksize !== undefined || o.windowsize !== undefined)) {
    const row: Omit<TftpFileRow, "t"> = { file: o.file, outcome: str("outcome") ?? "?" };
    const c = str("client");
    if (c) row.client = c;
    for (const k of ["bytes", "blksize", "windowsize", "ms"] as const) {
      const v = num(k);
      if (v !== undefined) row[k] = v;
    }
    return { kind: "tftp", at: when, row: { ...row, protocol: "tftp" } };
  }
  if (o.msg === "http request" && typeof o.path === "string") {
    const status = num("status") ?? 0;
    const complete = status >= 200 && status < 300 && o.aborted !== true;
    const row: Omit<TftpFileRow, "t"> = {
      file: o.path.replace(/^\/+/, ""),
      protocol: "http",
      outcome:
        o.method === "HEAD" ? "head" : complete ? "ok" : `http ${status}${o.aborted ? " aborted" : ""}`,
    };
    const c = str("client");
    if (c) row.client = c;
    for (const k of ["bytes", "ms"] as const) {
      const v = num(k);
      if (v !== undefined) row[k] = v;
    }
    return { kind: "tftp", at: when, row };
  }
  // Only the exchange lines: other lines name a MAC too (e.g. "machine config generated").
  if (typeof o.mac === "string" && o.msg === "dhcp exchange") {
    const row: Omit<DhcpRow, "t"> = {
      message: str("outcome") ?? str("type") ?? str("msg") ?? "dhcp",
      mac: o.mac,
    };
    const ip = str("ip");
    if (ip) row.ip = ip;
    const file = str("file");
    if (file) row.file = file;
    const arch = num("arch") ?? num("archCode");
    if (arch !== undefined) row.arch = arch;
    else if (typeof o.arch === "string") row.vendorClass = `arch ${o.arch}`;
    return { kind: "dhcp", at: when, row };
  }
  return undefined;
}

const SERIAL_EVENTS: { kind: EventKind; re: RegExp }[] = [
  { kind: "firmware-pxe", re: /Start PXE over IPv4/ },
  { kind: "kernel-start", re: /Linux version \d|EFI stub: |^\[\s*0\.0+\]/ },
  // open-iscsi initramfs (iscsistart) and dracut (iscsid) both say "... is operational now".
  { kind: "iscsi-login", re: /is operational now|iSCSI Initiator over TCP\/IP|Login to \[iface/ },
  // A notice, so still visible with quiet loglevel=6; the ext4 mount line below is an info line.
  { kind: "root-disk", re: /\] Attached SCSI disk/ },
  {
    kind: "root-mounted",
    re: /EXT4-fs \([^)]+\): mounted filesystem|Run \/\S+ as init process|VFS: Mounted root/,
  },
  { kind: "marker", re: /NETBOOT-E2E-OK/ },
];

/** The serial line's event kind, if it is one of the milestones. */
export function classifySerialLine(text: string): EventKind | undefined {
  return SERIAL_EVENTS.find((e) => e.re.test(text))?.kind;
}

export interface BootTimeline {
  startedAt: string;
  arch: string;
  accel: string;
  server: string;
  durationMs: number;
  ok: boolean;
  milestones: Partial<Record<EventKind, number>>;
  events: TimelineEvent[];
  dhcp: DhcpRow[];
  tftp: TftpFileRow[];
}

export interface TimelineInput {
  startedAt: number;
  arch: string;
  accel: string;
  server: string;
  durationMs: number;
  ok: boolean;
  serial: { t: number; text: string }[];
  serverItems: ServerLogItem[];
  targetFirstLoginAt?: number;
  timedOut?: boolean;
}

/** Joins the sources: the first occurrence of each milestone, every DHCP message and TFTP file. */
export function buildTimeline(input: TimelineInput): BootTimeline {
  const rel = (at: number) => at - input.startedAt;
  const events: TimelineEvent[] = [];
  const dhcp: DhcpRow[] = [];
  const tftp: TftpFileRow[] = [];
  for (const item of input.serverItems) {
    if (item.kind === "dhcp") {
      const row = { t: rel(item.at), ...item.row };
      dhcp.push(row);
      events.push({ t: row.t, kind: "dhcp", source: "server", detail: describeDhcp(row) });
    } else {
      const row = { t: rel(item.at), ...item.row };
      tftp.push(row);
      events.push({
        t: row.t,
        kind: "tftp",
        source: "server",
        detail: `${row.protocol === "http" ? "http " : ""}${row.file} ${row.outcome}${row.bytes !== undefined ? ` ${row.bytes} B` : ""}`,
      });
    }
  }
  const seen = new Set<EventKind>();
  for (const line of input.serial) {
    const kind = classifySerialLine(line.text);
    if (!kind || seen.has(kind)) continue;
    seen.add(kind);
    events.push({ t: line.t, kind, source: "serial", detail: line.text.slice(0, 100) });
  }
  if (input.targetFirstLoginAt !== undefined) {
    events.push({
      t: rel(input.targetFirstLoginAt),
      kind: "iscsi-login",
      source: "target",
      detail: "tgt lists the initiator's I_T nexus",
    });
  }
  if (input.timedOut)
    events.push({
      t: input.durationMs,
      kind: "time-limit",
      source: "lab",
      detail: "QEMU killed at the time limit",
    });
  events.sort((a, b) => a.t - b.t);
  const milestones: Partial<Record<EventKind, number>> = {};
  for (const e of events) milestones[e.kind] ??= e.t;
  return {
    startedAt: new Date(input.startedAt).toISOString(),
    arch: input.arch,
    accel: input.accel,
    server: input.server,
    durationMs: input.durationMs,
    ok: input.ok,
    milestones,
    events,
    dhcp,
    tftp,
  };
}

function describeDhcp(r: DhcpRow): string {
  return [r.message, r.mac, r.ip, r.arch !== undefined ? `arch=${r.arch}` : undefined, r.vendorClass, r.file]
    .filter(Boolean)
    .join(" ");
}

const sec = (ms: number | undefined) => (ms === undefined ? "-" : (ms / 1000).toFixed(1));

/** The timeline as plain-text tables for a terminal. */
export function formatTimeline(tl: BootTimeline): string {
  const out: string[] = [];
  out.push(
    `boot ${tl.ok ? "OK" : "FAILED"}: ${tl.arch} ${tl.accel.toUpperCase()} via ${tl.server}, ${sec(tl.durationMs)} s from QEMU start`,
  );
  out.push("");
  out.push(
    table(
      ["t (s)", "source", "event", "detail"],
      tl.events.map((e) => [sec(e.t), e.source, e.kind, e.detail]),
    ),
  );
  out.push("");
  out.push(
    table(
      ["end (s)", "via", "file", "bytes", "blksize", "windowsize", "ms", "outcome"],
      tl.tftp.map((r) => [
        sec(r.t),
        r.protocol ?? "tftp",
        r.file,
        r.bytes?.toString() ?? "-",
        r.blksize?.toString() ?? "-",
        r.windowsize?.toString() ?? "-",
        r.ms?.toString() ?? "-",
        r.outcome,
      ]),
    ),
  );
  return out.join("\n");
}

function table(head: string[], rows: string[][]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const fmt = (r: string[]) =>
    r
      .map((c, i) => c.padEnd(widths[i] ?? 0))
      .join("  ")
      .trimEnd();
  return [fmt(head), fmt(widths.map((w) => "-".repeat(w))), ...rows.map(fmt)].join("\n");
}
