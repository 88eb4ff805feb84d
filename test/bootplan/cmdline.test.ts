import { describe, expect, it } from "vitest";
import {
  buildKernelArgs,
  type CmdlineInput,
  parseDracutCmdline,
  parseDracutIscsiRoot,
  parseOpenIscsiCmdline,
} from "../../src/bootplan/cmdline.js";

const IQN = "iqn.2010-10.org.openstack:volume-3f2a9c1e";
const INITIATOR = "iqn.2024-01.org.netboot-appliance:node-01";

function input(
  over: Partial<Omit<CmdlineInput, "target">> & { target?: Partial<CmdlineInput["target"]> },
): CmdlineInput {
  return {
    flavour: "dracut",
    initiatorIqn: INITIATOR,
    root: "UUID=0e5b4a8c-3c1a-4f6e-9d2b-7a1c5e9f0b11",
    ip: "dhcp",
    extraArgs: ["console=ttyS0,115200", "rw"],
    ...over,
    target: { portals: [{ host: "10.0.0.5", port: 3260 }], iqn: IQN, lun: 1, ...over.target },
  };
}

const CHAP = { username: "node01-user", password: "Sup3r-s3cret_PW.x" };
const MUTUAL = { ...CHAP, in_username: "target-user", in_password: "t4rget,Secret%+" };

describe("dracut command line", () => {
  it("matches the working lab command line, iSCSI and root first", () => {
    const args = buildKernelArgs(input({ target: { chap: CHAP } }));
    expect(args.slice(0, 5)).toEqual([
      "root=UUID=0e5b4a8c-3c1a-4f6e-9d2b-7a1c5e9f0b11",
      `netroot=iscsi:node01-user:Sup3r-s3cret_PW.x@10.0.0.5::3260:1:${IQN}`,
      `rd.iscsi.initiator=${INITIATOR}`,
      "ip=dhcp",
      "rd.neednet=1",
    ]);
    expect(args.slice(-2)).toEqual(["console=ttyS0,115200", "rw"]);
  });

  const cases: [string, Partial<CmdlineInput["target"]>][] = [
    ["no CHAP", {}],
    ["CHAP", { chap: CHAP }],
    ["mutual CHAP", { chap: MUTUAL }],
    ["IPv6 portal", { portals: [{ host: "fd00:10::5", port: 3261 }], chap: CHAP }],
    [
      "multipath",
      {
        portals: [
          { host: "10.0.0.5", port: 3260 },
          { host: "10.0.1.5", port: 3260 },
          { host: "fd00:11::5", port: 3260 },
        ],
        chap: MUTUAL,
      },
    ],
    ["LUN 0 and an eui. name", { lun: 0, iqn: "eui.02004567A425678D" }],
    ["naa. name", { lun: 7, iqn: "naa.52004567BA64678D" }],
  ];
  for (const [name, target] of cases) {
    it(`parses back with dracut's grammar: ${name}`, () => {
      const i = input({ target });
      const parsed = parseDracutCmdline(buildKernelArgs(i).join(" "));
      expect(parsed.initiator).toBe(INITIATOR);
      expect(parsed.root).toBe(i.root);
      expect(parsed.ip).toBe("dhcp");
      expect(parsed.targets).toHaveLength(i.target.portals.length);
      parsed.targets.forEach((t, n) => {
        const portal = i.target.portals[n];
        expect(t.targetIp).toBe(portal?.host);
        expect(t.port).toBe(String(portal?.port));
        expect(t.protocol).toBe("");
        expect(t.lun).toBe(String(i.target.lun));
        expect(t.targetName).toBe(i.target.iqn);
        expect(t.username).toBe(i.target.chap?.username);
        expect(t.password).toBe(i.target.chap?.password);
        expect(t.in_username).toBe(i.target.chap?.in_username);
        expect(t.in_password).toBe(i.target.chap?.in_password);
      });
    });
  }

  it("uses root=iscsi: (whole LUN) when no root filesystem is given and there is one portal", () => {
    const args = buildKernelArgs(input({ root: undefined }));
    expect(args[0]).toBe(`root=iscsi:10.0.0.5::3260:1:${IQN}`);
    expect(args.some((a) => a.startsWith("netroot="))).toBe(false);
    const parsed = parseDracutCmdline(args.join(" "));
    expect(parsed.root).toBe("/dev/root");
    expect(parsed.targets[0]?.targetName).toBe(IQN);
  });

  it("refuses multipath without a root filesystem (root=iscsi: would hide the other netroots)", () => {
    expect(() =>
      buildKernelArgs(
        input({
          root: undefined,
          target: {
            portals: [
              { host: "10.0.0.5", port: 3260 },
              { host: "10.0.1.5", port: 3260 },
            ],
          },
        }),
      ),
    ).toThrow(/root/);
  });

  it("reproduces dracut's documented quirks in the parser (so the round trip proves something)", () => {
    // An empty auth part lets an @ live in the target name.
    expect(
      parseDracutIscsiRoot("iscsi:@192.168.1.100::3260::iqn.2009-01.com.example:testdi@sk"),
    ).toMatchObject({
      targetIp: "192.168.1.100",
      port: "3260",
      lun: "",
      targetName: "iqn.2009-01.com.example:testdi@sk",
    });
    // A password with @ corrupts the address (why CHAP values with @ are refused).
    const bad = parseDracutIscsiRoot(`iscsi:user:p@ss@10.0.0.5::3260:1:${IQN}`);
    expect(bad?.targetIp).not.toBe("10.0.0.5");
    // The target name is found by its last ":iqn.".
    expect(
      parseDracutIscsiRoot("iscsi:10.0.0.5::3260:1:iqn.2001-04.com.a:x:iqn.2001-04.com.b")?.targetName,
    ).toBe("iqn.2001-04.com.b");
  });
});

describe("open-iscsi initramfs-tools command line", () => {
  it("matches the working lab command line", () => {
    const args = buildKernelArgs(input({ flavour: "initramfs-tools" }));
    expect(args).toEqual([
      `iscsi_initiator=${INITIATOR}`,
      `iscsi_target_name=${IQN}`,
      "iscsi_target_ip=10.0.0.5",
      "iscsi_target_port=3260",
      "iscsi_target_group=1",
      "ip=dhcp",
      "root=UUID=0e5b4a8c-3c1a-4f6e-9d2b-7a1c5e9f0b11",
      "console=ttyS0,115200",
      "rw",
    ]);
  });

  const cases: [string, Partial<CmdlineInput["target"]>][] = [
    ["no CHAP", {}],
    ["CHAP", { chap: CHAP }],
    ["mutual CHAP", { chap: MUTUAL }],
    ["IPv6 portal", { portals: [{ host: "fd00:10::5", port: 3261 }], chap: CHAP }],
  ];
  for (const [name, target] of cases) {
    it(`parses back with open-iscsi's grammar: ${name}`, () => {
      const i = input({ flavour: "initramfs-tools", target });
      const parsed = parseOpenIscsiCmdline(buildKernelArgs(i).join(" "));
      expect(parsed.initiator).toBe(INITIATOR);
      expect(parsed.root).toBe(i.root);
      expect(parsed.group).toBe("1");
      expect(parsed.targets).toHaveLength(1);
      const t = parsed.targets[0];
      expect(t?.targetIp).toBe(i.target.portals[0]?.host);
      expect(t?.port).toBe(String(i.target.portals[0]?.port));
      expect(t?.targetName).toBe(i.target.iqn);
      expect(t?.username).toBe(i.target.chap?.username);
      expect(t?.password).toBe(i.target.chap?.password);
      expect(t?.in_username).toBe(i.target.chap?.in_username);
      expect(t?.in_password).toBe(i.target.chap?.in_password);
    });
  }

  it("uses the compact root=iscsi: form for whole-LUN roots and carries the LUN there", () => {
    const i = input({ flavour: "initramfs-tools", root: undefined, target: { lun: 3, chap: CHAP } });
    const args = buildKernelArgs(i);
    expect(args).toContain(`root=iscsi:10.0.0.5:6:3260:3:${IQN}`);
    const parsed = parseOpenIscsiCmdline(args.join(" "));
    expect(parsed.rootLun).toBe("3");
    expect(parsed.targets[0]?.username).toBe(CHAP.username);
  });

  it("refuses a whole-LUN root over IPv6 (the compact form cannot carry it)", () => {
    expect(() =>
      buildKernelArgs(
        input({
          flavour: "initramfs-tools",
          root: undefined,
          target: { portals: [{ host: "fd00::5", port: 3260 }] },
        }),
      ),
    ).toThrow(/IPv6/);
  });

  it("logs in to the first portal only, as the initramfs can", () => {
    const i = input({
      flavour: "initramfs-tools",
      target: {
        portals: [
          { host: "10.0.0.5", port: 3260 },
          { host: "10.0.1.5", port: 3260 },
        ],
      },
    });
    expect(parseOpenIscsiCmdline(buildKernelArgs(i).join(" ")).targets.map((t) => t.targetIp)).toEqual([
      "10.0.0.5",
    ]);
  });
});

describe("length", () => {
  it("refuses a command line the kernel would cut", () => {
    const long = Array.from({ length: 40 }, (_, n) => `opt${n}=${"x".repeat(50)}`);
    expect(() => buildKernelArgs(input({ extraArgs: long }))).toThrow(/bytes/);
  });

  it("keeps a typical mutual-CHAP multipath line well under the limit", () => {
    const args = buildKernelArgs(
      input({
        target: {
          portals: [
            { host: "10.0.0.5", port: 3260 },
            { host: "fd00:11::5", port: 3260 },
          ],
          chap: MUTUAL,
        },
      }),
    );
    expect(Buffer.byteLength(args.join(" "))).toBeLessThan(1000);
  });
});
