/**
 * The lab's boot server as an HA pair: two `netboot serve` in two namespaces, each on a veth into the lab
 * bridge, sharing leases (and so machine bindings) on one PostgreSQL, load-balancing by RFC 3074 bucket.
 * The iSCSI target stays in the lab namespace, as in every row.
 *
 *   nblab-…-a [eth0 .2] ─┐
 *                        ├─ nblab-br0 [.1: iSCSI target] ─ tap ─ VM
 *   nblab-…-b [eth0 .3] ─┘
 *
 * `strike` kills (-9) the appliance that answered the VM's DHCP once it has served a given file to the VM:
 * the rest of the boot must come from the survivor.
 */
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { stringify } from "yaml";
import type { BootSession } from "../src/machines/sessions.js";
import {
  fullDhcp,
  LAB_ADMIN_PORT_NUMBER,
  labConfig,
  labMachine,
  labTftpRoot,
  readSessions,
  startLabAppliance,
} from "./appliance-server.js";
import type { BootServerFactory, RunningBootServer } from "./boot-server.js";
import { type Daemon, killPid, run, runQuiet } from "./proc.js";
import type { ServerLogItem } from "./timeline.js";

export type PairSide = "a" | "b";

export interface PairStrike {
  /** The file (as the appliance logs it, e.g. grub/grub.cfg) after whose delivery the answerer dies. */
  afterFile: string;
  /**
   * A file the answerer must never serve: its RRQs are dropped (nftables, in the answerer's namespace)
   * from the moment it ACKs the VM. GRUB asks for the next file 3 ms after the last: a kill triggered by a
   * log line cannot win that race every time, a dropped request can. Only the first 16 bytes are matched.
   */
  neverFrom?: string;
}

export interface PairReport {
  /** The appliance that answered the VM's DHCP, and when it was killed (epoch ms), if it was. */
  answered?: PairSide | undefined;
  killed?: { side: PairSide; at: number } | undefined;
  /** Each appliance's log lines (JSON), for the test's own checks. */
  lines: Record<PairSide, string[]>;
  items: Record<PairSide, ServerLogItem[]>;
  addresses: Record<PairSide, string>;
  /** The VM's boot sessions as each appliance still running at the end showed them (its admin API). */
  sessions: Partial<Record<PairSide, BootSession[]>>;
}

export interface PairServerOptions {
  /** postgres:// URL both appliances use (the test starts the server). */
  databaseUrl: string;
  failoverMs?: number;
  strike?: PairStrike;
  /** Told what happened, when the pair stops. */
  onStopped?: (report: PairReport) => void;
}

const SIDES: readonly PairSide[] = ["a", "b"];

interface Member {
  side: PairSide;
  ns: string;
  address: string;
  daemon?: Daemon;
  exec: (cmd: string, ...args: string[]) => [string, string[]];
  items: ServerLogItem[];
  lines: string[];
}

export function appliancePairServer(opts: PairServerOptions): BootServerFactory {
  return async (ctx) => {
    const { net, logger } = ctx;
    const volume = ctx.volume;
    if (!volume || !ctx.flavour) throw new Error("the pair needs the boot's volume and flavour");
    const root = await labTftpRoot(ctx, "shim");
    const { image, machine } = labMachine(ctx, volume, "shim");
    const members: Member[] = SIDES.map((side, i) => ({
      side,
      ns: `${net.ns}-${side}`,
      exec: (cmd, ...args) => ["ip", ["netns", "exec", `${net.ns}-${side}`, cmd, ...args]],
      address: `${net.subnet}.${2 + i}`,
      items: [],
      lines: [],
    }));
    const teardown = async () => {
      for (const m of members) await m.daemon?.stop(2_000);
      for (const m of members) await runQuiet("ip", ["netns", "del", m.ns]);
    };

    try {
      for (const m of members) {
        const port = `nblab-p${m.side}`;
        await run("ip", ["netns", "add", m.ns]);
        await run("ip", [
          "-n",
          net.ns,
          "link",
          "add",
          port,
          "type",
          "veth",
          "peer",
          "name",
          "eth0",
          "netns",
          m.ns,
        ]);
        await run("ip", ["-n", net.ns, "link", "set", port, "master", net.bridge, "up"]);
        await run("ip", ["-n", m.ns, "addr", "add", `${m.address}/${net.prefixLength}`, "dev", "eth0"]);
        await run("ip", ["-n", m.ns, "link", "set", "eth0", "up"]);
        await run("ip", ["-n", m.ns, "link", "set", "lo", "up"]);
      }
      for (const m of members) {
        const dir = join(ctx.workDir, `appliance-${m.side}`);
        await mkdir(dir, { recursive: true });
        const config = labConfig(ctx, {
          root,
          loader: "shim",
          listen: { interface: "eth0", address: m.address },
          dhcp: fullDhcp(ctx, "eth0"),
          image,
          machines: [machine],
          dir,
          extra: {
            state: { backend: "postgres", url: opts.databaseUrl },
            ha: {
              mode: "load-balancing",
              this: `appliance-${m.side}`,
              peers: members.map((p, i) => ({
                name: `appliance-${p.side}`,
                role: i === 0 ? "primary" : "secondary",
                address: p.address,
              })),
              failover_ms: opts.failoverMs ?? 2000,
            },
          },
        });
        const configFile = join(dir, "netboot.yaml");
        await writeFile(configFile, stringify(config));
        const started = await startLabAppliance(ctx, m, configFile, `appliance-${m.side}`);
        m.daemon = started.daemon;
        m.items = started.items;
        m.lines = started.lines;
      }
    } catch (err) {
      await teardown();
      throw err;
    }

    let killed: PairReport["killed"];
    let gated: Promise<unknown> | undefined;
    const answerer = (): Member | undefined =>
      members.find((m) =>
        m.items.some((i) => i.kind === "dhcp" && i.row.mac === ctx.mac && i.row.message === "ack"),
      );
    // Polled, not hooked into the log reader: a few milliseconds do not matter against GRUB's pace under TCG.
    const watcher = opts.strike
      ? setInterval(() => {
          const m = answerer();
          if (m && opts.strike?.neverFrom && !gated) gated = dropRequestsFor(m.ns, opts.strike.neverFrom);
          const served = m?.items.some(
            (i) => i.kind === "tftp" && i.row.file === opts.strike?.afterFile && i.row.outcome === "ok",
          );
          if (!m?.daemon || !served || killed) return;
          killPid(m.daemon.pid, "SIGKILL");
          killed = { side: m.side, at: Date.now() };
          logger.info(
            { side: m.side, after: opts.strike?.afterFile },
            "pair: killed the appliance that answered the VM",
          );
        }, 5)
      : undefined;
    const [a, b] = members as [Member, Member];
    logger.info({ a: a.address, b: b.address, pids: [a.daemon?.pid, b.daemon?.pid] }, "appliance pair ready");

    const server: RunningBootServer = {
      name: "netboot-appliance pair (load-balancing, postgres)",
      pid: a.daemon?.pid ?? 0,
      get items() {
        return [...a.items, ...b.items].sort((x, y) => x.at - y.at);
      },
      stop: async () => {
        if (watcher) clearInterval(watcher);
        await gated?.catch((err: Error) =>
          logger.warn({ err: err.message }, "pair: the request gate failed"),
        );
        const sessions: PairReport["sessions"] = {};
        for (const m of members) {
          if (!m.daemon?.alive()) continue;
          const url = `http://${m.address}:${LAB_ADMIN_PORT_NUMBER}`;
          sessions[m.side] = await readSessions(m, url, ctx.mac).catch((err: Error) => {
            logger.warn({ side: m.side, err: err.message }, "pair: boot sessions not read");
            return undefined;
          });
        }
        await teardown();
        opts.onStopped?.({
          answered: answerer()?.side,
          killed,
          lines: { a: a.lines, b: b.lines },
          items: { a: a.items, b: b.items },
          addresses: { a: a.address, b: b.address },
          sessions,
        });
      },
    };
    return server;
  };
}

/** Drops, in one namespace, TFTP read requests whose file name starts with the first 16 bytes of `file`. */
async function dropRequestsFor(ns: string, file: string): Promise<void> {
  const prefix = Buffer.from(file).subarray(0, 16);
  if (prefix.length < 16) throw new Error(`${file}: at least 16 bytes are needed to match`);
  // @th,80: after the UDP header (64 bits) and the TFTP opcode (16 bits) comes the file name.
  const nft = (...args: string[]) => run("ip", ["netns", "exec", ns, "nft", ...args]);
  await nft("add", "table", "inet", "nblab_strike");
  await nft(
    "add",
    "chain",
    "inet",
    "nblab_strike",
    "input",
    "{ type filter hook input priority 0; policy accept; }",
  );
  await nft(
    "add",
    "rule",
    "inet",
    "nblab_strike",
    "input",
    "udp",
    "dport",
    "69",
    "@th,80,128",
    `0x${prefix.toString("hex")}`,
    "counter",
    "drop",
  );
}
