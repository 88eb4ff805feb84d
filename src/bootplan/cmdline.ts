import { isIPv6, type Portal } from "./config.js";

/**
 * Kernel command lines for an iSCSI root, one builder per initramfs flavour, and parsers that read
 * them back with the grammar of the initramfs itself (tests use them to prove round trips):
 *   dracut 059   modules.d/95iscsi/parse-iscsiroot.sh, iscsiroot.sh, 40network/net-lib.sh parse_iscsi_root
 *   open-iscsi   /usr/share/initramfs-tools/scripts/local-top/iscsi (parse_iscsi_ops, parse_root_param)
 */

export type Flavour = "dracut" | "initramfs-tools";

export interface Chap {
  username: string;
  password: string;
  in_username?: string | undefined;
  in_password?: string | undefined;
}

export interface IscsiTarget {
  portals: Portal[];
  iqn: string;
  lun: number;
  chap?: Chap | undefined;
}

export interface CmdlineInput {
  flavour: Flavour;
  target: IscsiTarget;
  initiatorIqn: string;
  /** e.g. UUID=...; absent: the whole LUN is the root filesystem. */
  root?: string | undefined;
  ip: string;
  extraArgs: string[];
}

/** GRUB passes at most the kernel's COMMAND_LINE_SIZE (2048) and drops the rest silently. */
export const CMDLINE_LIMIT = 1900;

function portalText(p: Portal): string {
  return isIPv6(p.host) ? `[${p.host}]` : p.host;
}

function authPrefix(chap: Chap | undefined): string {
  if (!chap) return "";
  const parts = [chap.username, chap.password];
  if (chap.in_username !== undefined && chap.in_password !== undefined)
    parts.push(chap.in_username, chap.in_password);
  return `${parts.join(":")}@`;
}

/** `iscsi:[auth@]host:proto:port:lun:iqn` as dracut's parse_iscsi_root reads it (protocol empty). */
export function dracutNetroot(target: IscsiTarget, portal: Portal): string {
  return `iscsi:${authPrefix(target.chap)}${portalText(portal)}::${portal.port}:${target.lun}:${target.iqn}`;
}

/** Kernel arguments, iSCSI and root first so that nothing essential is cut if the line is long. */
export function buildKernelArgs(input: CmdlineInput): string[] {
  const { target } = input;
  const args: string[] = [];
  if (input.flavour === "dracut") {
    // A whole-LUN root needs root=iscsi: (only that form installs dracut's udev rule for
    // /dev/root), but root=iscsi: makes dracut ignore every netroot=, so it allows one portal.
    // Otherwise: root=<fs> and one netroot= per portal (multipath).
    if (input.root === undefined && target.portals.length === 1 && target.portals[0]) {
      args.push(`root=${dracutNetroot(target, target.portals[0])}`);
    } else {
      if (input.root === undefined)
        throw new Error("dracut with several portals needs images.<name>.root (e.g. UUID=...)");
      args.push(`root=${input.root}`);
      for (const portal of target.portals) args.push(`netroot=${dracutNetroot(target, portal)}`);
    }
    args.push(`rd.iscsi.initiator=${input.initiatorIqn}`, `ip=${input.ip}`, "rd.neednet=1");
  } else {
    // open-iscsi's initramfs logs in to one portal (iscsi_target_ip takes one address here).
    const portal = target.portals[0];
    if (!portal) throw new Error("no portal");
    args.push(
      `iscsi_initiator=${input.initiatorIqn}`,
      `iscsi_target_name=${target.iqn}`,
      `iscsi_target_ip=${portal.host}`,
      `iscsi_target_port=${portal.port}`,
      "iscsi_target_group=1",
    );
    if (target.chap) {
      args.push(`iscsi_username=${target.chap.username}`, `iscsi_password=${target.chap.password}`);
      if (target.chap.in_username !== undefined && target.chap.in_password !== undefined)
        args.push(
          `iscsi_in_username=${target.chap.in_username}`,
          `iscsi_in_password=${target.chap.in_password}`,
        );
    }
    args.push(`ip=${input.ip}`);
    if (input.root !== undefined) {
      args.push(`root=${input.root}`);
    } else {
      // The compact form finds the whole disk of that LUN; it cannot carry an IPv6 address.
      if (isIPv6(portal.host))
        throw new Error("initramfs-tools with an IPv6 portal needs images.<name>.root (e.g. UUID=...)");
      args.push(`root=iscsi:${portal.host}:6:${portal.port}:${target.lun}:${target.iqn}`);
    }
  }
  args.push(...input.extraArgs);
  const length = Buffer.byteLength(args.join(" "));
  if (length > CMDLINE_LIMIT)
    throw new Error(`kernel command line is ${length} bytes, over the ${CMDLINE_LIMIT}-byte limit`);
  return args;
}

// ---------------------------------------------------------------------------------------------
// Parsers, following the shell code of the initramfs closely (including its quirks).

/** POSIX field splitting with a non-blank IFS: empty fields kept, one trailing separator dropped. */
function ifsSplit(text: string, sep: string): string[] {
  if (text === "") return [];
  const fields = text.split(sep);
  if (fields.length > 1 && fields[fields.length - 1] === "") fields.pop();
  return fields;
}

/** Kernel cmdline words: the kernel splits on spaces (no quoting used by us). */
export function splitCmdline(cmdline: string): string[] {
  return cmdline.split(/\s+/).filter((w) => w !== "");
}

/** dracut getarg: the last `key=value` wins. */
function getarg(words: string[], key: string): string | undefined {
  let value: string | undefined;
  for (const w of words) if (w.startsWith(`${key}=`)) value = w.slice(key.length + 1);
  return value;
}

function getargs(words: string[], key: string): string[] {
  return words.filter((w) => w.startsWith(`${key}=`)).map((w) => w.slice(key.length + 1));
}

export interface ParsedIscsiRoot {
  username?: string;
  password?: string;
  in_username?: string;
  in_password?: string;
  targetIp: string;
  protocol: string;
  port: string;
  lun: string;
  targetName: string;
}

/** dracut's parse_iscsi_root (net-lib.sh), returning undefined where it warns and returns 1. */
export function parseDracutIscsiRoot(arg: string): ParsedIscsiRoot | undefined {
  let v = arg.startsWith("iscsi:") ? arg.slice(6) : arg;
  const out: Partial<ParsedIscsiRoot> = {};
  // case "$v" in *@*:*:*:*:*)
  if (/@.*:.*:.*:.*:/.test(v)) {
    const at = v.indexOf("@");
    const authinfo = v.slice(0, at);
    v = v.slice(at + 1);
    if (authinfo !== "") {
      const f = ifsSplit(authinfo, ":");
      if (f.length > 4) return undefined;
      if (f[0] !== undefined) out.username = f[0];
      if (f[1] !== undefined) out.password = f[1];
      if (f.length > 2) {
        if (f[2] !== undefined) out.in_username = f[2];
        if (f[3] !== undefined) out.in_password = f[3];
      }
    }
  }
  const bracket = /^\[([^\]]*)\]:/.exec(v);
  if (bracket) {
    out.targetIp = bracket[1] ?? "";
    v = v.slice(bracket[0].length);
  } else {
    const colon = v.indexOf(":");
    out.targetIp = colon < 0 ? v : v.slice(0, colon);
    v = colon < 0 ? v : v.slice(colon + 1);
  }
  let targetName: string | undefined;
  for (const kind of ["iqn", "eui", "naa"]) {
    const idx = v.lastIndexOf(`:${kind}.`);
    if (idx >= 0) {
      targetName = `${kind}.${v.slice(idx + kind.length + 2)}`;
      v = `${v.slice(0, idx)}:`;
      break;
    }
  }
  let f = ifsSplit(v, ":");
  out.protocol = f[0] ?? "";
  f = f.slice(1);
  out.port = f[0] ?? "";
  f = f.slice(1);
  if (targetName !== undefined) {
    if (f.length === 3) f = f.slice(1); // iface name
    if (f.length === 2) f = f.slice(1); // netdev name
    out.lun = f[0] ?? "";
    f = f.slice(1);
    if (f.length !== 0) return undefined;
    out.targetName = targetName;
    return out as ParsedIscsiRoot;
  }
  if (f.length > 3 && `${f[0]}${f[1]}` !== "" && (f[2] === "" || Number(f[2]) >= 0)) f = f.slice(2);
  out.lun = f[0] ?? "";
  out.targetName = f.slice(1).join(":");
  return out as ParsedIscsiRoot;
}

export interface ParsedBoot {
  initiator?: string;
  root?: string;
  ip?: string;
  targets: ParsedIscsiRoot[];
}

/** What dracut 059 would do with these words: every iscsi netroot (root=iscsi: overrides them). */
export function parseDracutCmdline(cmdline: string): ParsedBoot {
  const words = splitCmdline(cmdline);
  const root = getarg(words, "root");
  const parsed: ParsedBoot = { targets: [] };
  const initiator = getarg(words, "rd.iscsi.initiator") ?? getarg(words, "iscsi_initiator");
  if (initiator !== undefined) parsed.initiator = initiator;
  const ip = getarg(words, "ip");
  if (ip !== undefined) parsed.ip = ip;
  if (root?.startsWith("iscsi:")) {
    const t = parseDracutIscsiRoot(root);
    if (t) parsed.targets.push(t);
    parsed.root = "/dev/root";
    return parsed;
  }
  if (root !== undefined) parsed.root = root;
  for (const nroot of getargs(words, "netroot")) {
    if (!nroot.startsWith("iscsi:")) continue;
    const t = parseDracutIscsiRoot(nroot);
    if (t) parsed.targets.push(t);
  }
  return parsed;
}

/** open-iscsi's initramfs (local-top/iscsi parse_iscsi_ops and parse_root_param); last word wins. */
export function parseOpenIscsiCmdline(cmdline: string): ParsedBoot & { group?: string; rootLun?: string } {
  const v: Record<string, string> = {};
  let hadRoot: ParsedIscsiRoot | undefined;
  let rootWord: string | undefined;
  const keys = [
    "iscsi_initiator",
    "iscsi_target_name",
    "iscsi_target_ip",
    "iscsi_target_port",
    "iscsi_target_group",
    "iscsi_username",
    "iscsi_password",
    "iscsi_in_username",
    "iscsi_in_password",
  ];
  let ip: string | undefined;
  for (const x of splitCmdline(cmdline)) {
    const key = keys.find((k) => x.startsWith(`${k}=`));
    if (key) v[key] = x.slice(key.length + 1);
    if (x.startsWith("ip=")) ip = x.slice(3);
    if (x.startsWith("root=")) rootWord = x.slice(5);
    if (x.startsWith("root=iscsi:")) {
      const rest = x.slice("root=iscsi:".length);
      const at = rest.indexOf("@");
      const t = parseRootParam(at >= 0 ? rest.slice(at + 1) : rest, at >= 0 ? rest.slice(0, at) : "");
      if (t) hadRoot = t;
    }
  }
  if (hadRoot) {
    v.iscsi_target_ip = hadRoot.targetIp;
    v.iscsi_target_port = hadRoot.port;
    v.iscsi_target_name = hadRoot.targetName;
    if (hadRoot.username) {
      v.iscsi_username = hadRoot.username;
      v.iscsi_password = hadRoot.password ?? "";
    }
    if (hadRoot.in_username) {
      v.iscsi_in_username = hadRoot.in_username;
      v.iscsi_in_password = hadRoot.in_password ?? "";
    }
  }
  const parsed: ParsedBoot & { group?: string; rootLun?: string } = { targets: [] };
  if (v.iscsi_initiator !== undefined) parsed.initiator = v.iscsi_initiator;
  if (ip !== undefined) parsed.ip = ip;
  if (rootWord !== undefined) parsed.root = rootWord;
  // The script exits unless both the target name and address are set (iscsi_auto needs iBFT).
  if (v.iscsi_target_name && v.iscsi_target_ip) {
    const t: ParsedIscsiRoot = {
      targetIp: v.iscsi_target_ip,
      protocol: "6",
      port: v.iscsi_target_port || "3260",
      lun: hadRoot?.lun || "0",
      targetName: v.iscsi_target_name,
    };
    if (v.iscsi_username) t.username = v.iscsi_username;
    if (v.iscsi_password) t.password = v.iscsi_password;
    if (v.iscsi_in_username) t.in_username = v.iscsi_in_username;
    if (v.iscsi_in_password) t.in_password = v.iscsi_in_password;
    parsed.targets.push(t);
    parsed.group = v.iscsi_target_group || "1";
    if (hadRoot) parsed.rootLun = hadRoot.lun || "0";
  }
  return parsed;
}

function parseRootParam(target: string, auth: string): ParsedIscsiRoot | undefined {
  const f = ifsSplit(target, ":");
  const ip = f[0] ?? "";
  const name = f.slice(4).join(":");
  if (ip === "" || name === "") return undefined;
  const a = ifsSplit(auth, ":");
  if (a.length > 4) return undefined;
  const t: ParsedIscsiRoot = {
    targetIp: ip,
    protocol: f[1] ?? "",
    port: f[2] ?? "",
    lun: f[3] ?? "",
    targetName: name,
  };
  if (a.length > 0 && a[0]) {
    t.username = a[0];
    t.password = a[1] ?? "";
    if (a.length > 2 && a[2]) {
      t.in_username = a[2];
      t.in_password = a[3] ?? "";
    }
  }
  return t;
}
