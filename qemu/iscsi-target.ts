import { existsSync } from "node:fs";
import { rm } from "node:fs/promises";
import type { Logger } from "pino";
import type { LabNetwork } from "./netns.js";
import { type Daemon, run, runQuiet, sleep, startDaemon } from "./proc.js";

export interface ChapCredentials {
  user: string;
  password: string;
}

export interface IscsiTargetOptions {
  net: LabNetwork;
  /** The LUN's backing file: a per-boot copy, the target writes to it. */
  backingFile: string;
  targetIqn: string;
  chap?: ChapCredentials;
  /** tgtd management port (its unix socket /var/run/tgtd/socket.<port>); one per lab. */
  controlPort?: number;
  logger: Logger;
}

export interface IscsiSession {
  initiator: string;
  address?: string;
}

export interface IscsiTarget {
  readonly kind: "tgt" | "lio";
  readonly portalIp: string;
  readonly port: number;
  readonly targetIqn: string;
  readonly lun: number;
  readonly chap?: ChapCredentials;
  readonly pid?: number;
  /** tgt only: the management port tgtadm -C talks to. */
  readonly controlPort?: number;
  /** Sessions the target has right now. */
  sessions(): Promise<IscsiSession[]>;
  /** Every initiator seen since start (polled while a boot runs; a powered-off VM's session may vanish). */
  readonly seenInitiators: Set<string>;
  /** Time (Date.now()) the first session was seen. */
  firstLoginAt(): number | undefined;
  startWatching(intervalMs?: number): void;
  stop(): Promise<void>;
}

/** tgt where the kernel has no LIO (this machine); targetcli where /sys/kernel/config/target exists. */
export function startIscsiTarget(opts: IscsiTargetOptions): Promise<IscsiTarget> {
  const preferLio = process.env.NETBOOT_LAB_ISCSI === "lio" && existsSync("/sys/kernel/config/target");
  return preferLio ? startLioTarget(opts) : startTgtTarget(opts);
}

// tgtd refuses a control port above 32767 (it only names the unix socket): keep to 10000..29999.
let nextControlPort = 10_000 + (process.pid % 2000) * 10;

export async function startTgtTarget(opts: IscsiTargetOptions): Promise<IscsiTarget> {
  const { net, logger } = opts;
  const controlPort = opts.controlPort ?? nextControlPort++;
  const portalIp = net.serverIp;
  const [cmd, args] = net.exec("tgtd", "-f", "--iscsi", `portal=${portalIp}:3260`, "-C", String(controlPort));
  const daemon: Daemon = startDaemon(cmd, args, (line) => {
    // tgtd's own chatter at start (RDMA, oom_score_adj) is noise here.
    logger.debug({ tgtd: line }, "tgtd");
  });
  const adm = (...a: string[]) => run("tgtadm", ["-C", String(controlPort), "--lld", "iscsi", ...a]);

  // tgtd opens its management socket shortly after start.
  const deadline = Date.now() + 5_000;
  for (;;) {
    try {
      await adm("--op", "show", "--mode", "target");
      break;
    } catch (err) {
      if (!daemon.alive() || Date.now() > deadline) {
        await daemon.stop();
        throw new Error(`tgtd did not start: ${(err as Error).message}`);
      }
      await sleep(100);
    }
  }

  const seenInitiators = new Set<string>();
  let firstLogin: number | undefined;
  let watcher: NodeJS.Timeout | undefined;

  const sessions = async (): Promise<IscsiSession[]> => {
    const text = await adm("--op", "show", "--mode", "target");
    const found = parseTgtShow(text).find((t) => t.iqn === opts.targetIqn)?.sessions ?? [];
    for (const s of found) {
      seenInitiators.add(s.initiator);
      firstLogin ??= Date.now();
    }
    return found;
  };

  const target: IscsiTarget = {
    kind: "tgt",
    portalIp,
    port: 3260,
    targetIqn: opts.targetIqn,
    lun: 1,
    ...(opts.chap ? { chap: opts.chap } : {}),
    pid: daemon.pid,
    controlPort,
    sessions,
    seenInitiators,
    firstLoginAt: () => firstLogin,
    startWatching(intervalMs = 500) {
      watcher ??= setInterval(() => {
        sessions().catch(() => undefined);
      }, intervalMs);
    },
    async stop() {
      if (watcher) clearInterval(watcher);
      watcher = undefined;
      // tgtd ignores SIGTERM while it has targets: remove them, then kill it.
      if (daemon.alive())
        await runQuiet("tgtadm", [
          "-C",
          String(controlPort),
          "--lld",
          "iscsi",
          "--op",
          "delete",
          "--mode",
          "target",
          "--tid",
          "1",
          "--force",
        ]);
      await daemon.stop(300);
      await rm(`/var/run/tgtd/socket.${controlPort}`, { force: true });
      await rm(`/var/run/tgtd/socket.${controlPort}.lock`, { force: true });
    },
  };

  try {
    await adm("--op", "new", "--mode", "target", "--tid", "1", "-T", opts.targetIqn);
    await adm("--op", "new", "--mode", "logicalunit", "--tid", "1", "--lun", "1", "-b", opts.backingFile);
    await adm("--op", "bind", "--mode", "target", "--tid", "1", "-I", "ALL");
    if (opts.chap) {
      await adm(
        "--op",
        "new",
        "--mode",
        "account",
        "--user",
        opts.chap.user,
        "--password",
        opts.chap.password,
      );
      await adm("--op", "bind", "--mode", "account", "--tid", "1", "--user", opts.chap.user);
    }
  } catch (err) {
    await target.stop();
    throw err;
  }
  logger.info(
    { portal: `${portalIp}:3260`, iqn: opts.targetIqn, chap: opts.chap !== undefined, tgtdPid: daemon.pid },
    "iscsi target ready (tgt)",
  );
  return target;
}

export interface TgtTargetInfo {
  tid: number;
  iqn: string;
  sessions: IscsiSession[];
  accounts: string[];
  luns: number[];
}

/** Parses `tgtadm --op show --mode target`: targets, their I_T nexus (initiator, address), accounts and LUNs. */
export function parseTgtShow(text: string): TgtTargetInfo[] {
  const targets: TgtTargetInfo[] = [];
  let current: TgtTargetInfo | undefined;
  let section = "";
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    const t = /^Target (\d+): (\S+)$/.exec(raw);
    if (t) {
      current = { tid: Number(t[1]), iqn: t[2] ?? "", sessions: [], accounts: [], luns: [] };
      targets.push(current);
      section = "";
      continue;
    }
    if (!current) continue;
    if (/^[A-Z_ ]+[a-z ]*information:$/i.test(line)) {
      section = line;
      continue;
    }
    if (section.startsWith("I_T nexus")) {
      const ini = /^Initiator: (\S+)/.exec(line);
      if (ini) current.sessions.push({ initiator: ini[1] ?? "" });
      const addr = /^IP Address: (\S+)/.exec(line);
      const last = current.sessions[current.sessions.length - 1];
      if (addr && last) last.address = addr[1] ?? "";
    } else if (section.startsWith("LUN")) {
      const lun = /^LUN: (\d+)$/.exec(line);
      if (lun) current.luns.push(Number(lun[1]));
    } else if (section.startsWith("Account")) {
      if (line !== "") current.accounts.push(line);
    }
  }
  return targets;
}

/**
 * LIO through targetcli, for kernels that have it. UNTESTED: this machine's kernel has no
 * /sys/kernel/config/target, so only the tgt path has ever run. Kept deliberately small.
 */
export async function startLioTarget(opts: IscsiTargetOptions): Promise<IscsiTarget> {
  const { net, targetIqn } = opts;
  // LIO portals bind in the namespace of the process that creates them.
  const tc = (...a: string[]) => {
    const [cmd, args] = net.exec("targetcli", ...a);
    return run(cmd, args);
  };
  const name = `${net.ns}-lun1`;
  await tc("/backstores/fileio", "create", name, opts.backingFile);
  await tc("/iscsi", "create", targetIqn);
  await tc(`/iscsi/${targetIqn}/tpg1/luns`, "create", `/backstores/fileio/${name}`, "lun=1");
  await tc(`/iscsi/${targetIqn}/tpg1/portals`, "delete", "0.0.0.0", "3260").catch(() => "");
  await tc(`/iscsi/${targetIqn}/tpg1/portals`, "create", net.serverIp, "3260");
  await tc(
    `/iscsi/${targetIqn}/tpg1`,
    "set",
    "attribute",
    "generate_node_acls=1",
    "demo_mode_write_protect=0",
  );
  if (opts.chap) {
    await tc(`/iscsi/${targetIqn}/tpg1`, "set", "attribute", "authentication=1");
    await tc(
      `/iscsi/${targetIqn}/tpg1`,
      "set",
      "auth",
      `userid=${opts.chap.user}`,
      `password=${opts.chap.password}`,
    );
  }
  const seenInitiators = new Set<string>();
  let firstLogin: number | undefined;
  let watcher: NodeJS.Timeout | undefined;
  const sessions = async (): Promise<IscsiSession[]> => {
    const out = await tc(`/iscsi/${targetIqn}`, "sessions", "detail");
    const found = [...out.matchAll(/alias: \S+\s+sid: \d+.*?\n\s*name: (\S+)/g)].map((m) => ({
      initiator: m[1] ?? "",
    }));
    for (const s of found) {
      seenInitiators.add(s.initiator);
      firstLogin ??= Date.now();
    }
    return found;
  };
  return {
    kind: "lio",
    portalIp: net.serverIp,
    port: 3260,
    targetIqn,
    lun: 1,
    ...(opts.chap ? { chap: opts.chap } : {}),
    sessions,
    seenInitiators,
    firstLoginAt: () => firstLogin,
    startWatching(intervalMs = 500) {
      watcher ??= setInterval(() => sessions().catch(() => undefined), intervalMs);
    },
    async stop() {
      if (watcher) clearInterval(watcher);
      await runQuiet("targetcli", ["/iscsi", "delete", targetIqn]);
      await runQuiet("targetcli", ["/backstores/fileio", "delete", name]);
    },
  };
}
