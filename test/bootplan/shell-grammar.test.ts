import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import {
  buildKernelArgs,
  type CmdlineInput,
  parseDracutCmdline,
  parseOpenIscsiCmdline,
} from "../../src/bootplan/cmdline.js";
import { resourceAvailable } from "../support/require.js";

/**
 * The command lines we generate, read by the initramfs's own shell code (not our port of it):
 * open-iscsi's local-top/iscsi (package open-iscsi) and dracut's parse_iscsi_root (package
 * dracut-network, unpacked with apt-get download + dpkg -x since installing it would replace
 * initramfs-tools). Only the parsing functions are taken from the scripts and run with sh.
 */

const OPEN_ISCSI = "/usr/share/initramfs-tools/scripts/local-top/iscsi";

function extractFunction(script: string, name: string): string {
  const text = readFileSync(script, "utf8");
  const start = text.search(new RegExp(`^${name}\\s*\\(\\)`, "m"));
  if (start < 0) throw new Error(`${name} not found in ${script}`);
  const end = text.indexOf("\n}\n", start);
  return text.slice(start, end + 3);
}

function dracutNetLib(): string | undefined {
  const installed = "/usr/lib/dracut/modules.d/40network/net-lib.sh";
  if (existsSync(installed)) return installed;
  const dir = join(tmpdir(), "nbbp-dracut-network");
  const unpacked = join(dir, "x/usr/lib/dracut/modules.d/40network/net-lib.sh");
  if (existsSync(unpacked)) return unpacked;
  try {
    mkdirSync(dir, { recursive: true });
    execFileSync("apt-get", ["download", "dracut-network"], { cwd: dir, stdio: "ignore", timeout: 60_000 });
    const deb = readdirSync(dir).find((f) => f.startsWith("dracut-network_") && f.endsWith(".deb"));
    if (!deb) return undefined;
    execFileSync("dpkg", ["-x", deb, "x"], { cwd: dir, stdio: "ignore" });
    return existsSync(unpacked) ? unpacked : undefined;
  } catch {
    return undefined;
  }
}

const VARS = [
  "iscsi_username",
  "iscsi_password",
  "iscsi_in_username",
  "iscsi_in_password",
  "iscsi_target_ip",
  "iscsi_target_port",
  "iscsi_lun",
  "iscsi_target_name",
];

function runDracut(netLib: string, netroot: string): Record<string, string> {
  const script = `warn() { echo "warn: $*" >&2; }\n${extractFunction(netLib, "parse_iscsi_root")}\nparse_iscsi_root "$1" || exit 3\n${VARS.map((v) => `printf '%s=%s\\n' ${v} "$${v}"`).join("\n")}\n`;
  const out = execFileSync("sh", ["-c", script, "sh", netroot], { encoding: "utf8" });
  return Object.fromEntries(
    out
      .trim()
      .split("\n")
      .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
  );
}

const OI_VARS = [
  "ISCSI_INITIATOR",
  "ISCSI_TARGET_NAME",
  "ISCSI_TARGET_IP",
  "ISCSI_TARGET_PORT",
  "ISCSI_TARGET_GROUP",
  "ISCSI_USERNAME",
  "ISCSI_PASSWORD",
  "ISCSI_IN_USERNAME",
  "ISCSI_IN_PASSWORD",
  "ISCSI_ROOT_LUN",
];

function runOpenIscsi(cmdline: string): Record<string, string> {
  const ops = extractFunction(OPEN_ISCSI, "parse_iscsi_ops").replace("$(cat /proc/cmdline)", "$CMDLINE");
  const script = `${extractFunction(OPEN_ISCSI, "parse_root_param")}\n${ops}\nparse_iscsi_ops\n${OI_VARS.map((v) => `printf '%s=%s\\n' ${v} "$${v}"`).join("\n")}\n`;
  const out = execFileSync("sh", ["-c", script], {
    encoding: "utf8",
    env: { CMDLINE: cmdline, PATH: process.env.PATH },
  });
  return Object.fromEntries(
    out
      .trim()
      .split("\n")
      .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
  );
}

const INITIATOR = "iqn.2024-01.org.netboot-appliance:node-01";
const IQN = "iqn.2010-10.org.openstack:volume-3f2a9c1e";
const CHAP = {
  username: "node01-user",
  password: "Sup3r-s3cret_PW.x",
  in_username: "tgt",
  in_password: "t4rget,Secret%+",
};
const targets: [string, CmdlineInput["target"]][] = [
  ["no CHAP", { portals: [{ host: "10.0.0.5", port: 3260 }], iqn: IQN, lun: 1 }],
  ["mutual CHAP", { portals: [{ host: "10.0.0.5", port: 3261 }], iqn: IQN, lun: 0, chap: CHAP }],
  [
    "IPv6 and CHAP",
    {
      portals: [{ host: "fd00:10::5", port: 3260 }],
      iqn: IQN,
      lun: 2,
      chap: { username: "u", password: "p-1" },
    },
  ],
  ["eui. name", { portals: [{ host: "10.0.0.5", port: 3260 }], iqn: "eui.02004567A425678D", lun: 1 }],
  [
    "multipath",
    {
      portals: [
        { host: "10.0.0.5", port: 3260 },
        { host: "fd00:11::5", port: 3260 },
      ],
      iqn: IQN,
      lun: 1,
      chap: CHAP,
    },
  ],
];

describe("open-iscsi's own initramfs parser reads our command lines", () => {
  let have = false;
  beforeAll(() => {
    have = resourceAvailable(`${OPEN_ISCSI} (package open-iscsi)`, existsSync(OPEN_ISCSI));
  });
  for (const [name, target] of targets) {
    for (const root of ["UUID=0e5b4a8c-3c1a-4f6e-9d2b-7a1c5e9f0b11", undefined]) {
      if (root === undefined && target.portals[0]?.host.includes(":")) continue;
      it(`${name}, ${root ? "partition root" : "whole-LUN root"}`, (ctx) => {
        if (!have) return ctx.skip();
        const cmdline = buildKernelArgs({
          flavour: "initramfs-tools",
          target,
          initiatorIqn: INITIATOR,
          root,
          ip: "dhcp",
          extraArgs: ["rw"],
        }).join(" ");
        const sh = runOpenIscsi(cmdline);
        const ours = parseOpenIscsiCmdline(cmdline);
        const t = ours.targets[0];
        expect(sh).toEqual({
          ISCSI_INITIATOR: INITIATOR,
          ISCSI_TARGET_NAME: target.iqn,
          ISCSI_TARGET_IP: target.portals[0]?.host,
          ISCSI_TARGET_PORT: String(target.portals[0]?.port),
          ISCSI_TARGET_GROUP: "1",
          ISCSI_USERNAME: target.chap?.username ?? "",
          ISCSI_PASSWORD: target.chap?.password ?? "",
          ISCSI_IN_USERNAME: target.chap?.in_username ?? "",
          ISCSI_IN_PASSWORD: target.chap?.in_password ?? "",
          ISCSI_ROOT_LUN: root ? "" : String(target.lun),
        });
        // Our parser agrees with the script.
        expect([t?.targetIp, t?.port, t?.targetName, t?.username ?? "", t?.password ?? ""]).toEqual([
          sh.ISCSI_TARGET_IP,
          sh.ISCSI_TARGET_PORT,
          sh.ISCSI_TARGET_NAME,
          sh.ISCSI_USERNAME,
          sh.ISCSI_PASSWORD,
        ]);
      });
    }
  }
});

describe("dracut's own parse_iscsi_root reads our netroot= values", () => {
  let netLib: string | undefined;
  beforeAll(() => {
    netLib = dracutNetLib();
    resourceAvailable("dracut-network's net-lib.sh (apt-get download dracut-network)", netLib !== undefined);
  });
  for (const [name, target] of targets) {
    it(name, (ctx) => {
      if (!netLib) return ctx.skip();
      const cmdline = buildKernelArgs({
        flavour: "dracut",
        target,
        initiatorIqn: INITIATOR,
        root: "UUID=0e5b4a8c-3c1a-4f6e-9d2b-7a1c5e9f0b11",
        ip: "dhcp",
        extraArgs: [],
      }).join(" ");
      const netroots = cmdline
        .split(" ")
        .filter((w) => w.startsWith("netroot="))
        .map((w) => w.slice("netroot=".length));
      expect(netroots).toHaveLength(target.portals.length);
      const ours = parseDracutCmdline(cmdline).targets;
      netroots.forEach((netroot, i) => {
        const sh = runDracut(netLib ?? "", netroot);
        expect(sh).toEqual({
          iscsi_username: target.chap?.username ?? "",
          iscsi_password: target.chap?.password ?? "",
          iscsi_in_username: target.chap?.in_username ?? "",
          iscsi_in_password: target.chap?.in_password ?? "",
          iscsi_target_ip: target.portals[i]?.host,
          iscsi_target_port: String(target.portals[i]?.port),
          iscsi_lun: String(target.lun),
          iscsi_target_name: target.iqn,
        });
        const t = ours[i];
        expect([t?.targetIp, t?.port, t?.lun, t?.targetName]).toEqual([
          sh.iscsi_target_ip,
          sh.iscsi_target_port,
          sh.iscsi_lun,
          sh.iscsi_target_name,
        ]);
      });
    });
  }

  it("and shows why CHAP values with @ are refused", (ctx) => {
    if (!netLib) return ctx.skip();
    const sh = runDracut(netLib, `iscsi:user:p@ss@10.0.0.5::3260:1:${IQN}`);
    expect(sh.iscsi_target_ip).not.toBe("10.0.0.5");
  });
});
