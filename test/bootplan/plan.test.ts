import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseDracutCmdline, parseOpenIscsiCmdline } from "../../src/bootplan/cmdline.js";
import { BootPlan } from "../../src/bootplan/plan.js";
import { UnresolvableMachineError } from "../../src/bootplan/resolver.js";
import { MachineRegistry } from "../../src/machines/registry.js";
import { commandsAvailable } from "../support/require.js";
import {
  captureLogger,
  fakeImageFiles,
  grubScriptCheck,
  grubWords,
  leasedRegistry,
  planOptionsFromYaml,
  tempDir,
} from "./helpers.js";

function commandArgs(config: string, command: string): string[] {
  const line = config.split("\n").find((l) => l.trim().startsWith(`${command} `));
  if (!line) throw new Error(`no ${command} line in:\n${config}`);
  return grubWords(line.trim()).slice(1);
}

const SECRET = "Zq9-chap-Secret_x";
const IN_SECRET = "Rv7-target-Secret";
const dir = tempDir();
const files = fakeImageFiles(dir, "deb");
const tftpRoot = join(dir, "tftp");
mkdirSync(join(tftpRoot, "x64"), { recursive: true });
mkdirSync(join(tftpRoot, "aa64"), { recursive: true });

const yaml = `
boot:
  loaders:
    x64: { shim: x64/shimx64.efi, grub: x64/grubx64.efi }
    aa64: { shim: aa64/shimaa64.efi, grub: aa64/grubnetaa64.efi }
  grub:
    timeout: 3
    extra_entries:
      - title: "Firmware setup (it's \\"odd\\" $HOME *)"
        commands: ["fwsetup"]
      - title: "Reboot; echo 'x'"
        commands: ["echo 'rebooting'", "reboot"]
  default_machine: plain
images:
  deb-tools:
    kernel: { path: ${files.kernel} }
    initrd: { path: ${files.initrd} }
    flavour: initramfs-tools
    root: UUID=0e5b4a8c-3c1a-4f6e-9d2b-7a1c5e9f0b11
    extra_args: ["console=ttyS0,115200", rw]
  deb-dracut:
    kernel: { path: ${files.kernel} }
    initrd: { path: ${files.initrd} }
    flavour: dracut
    root: UUID=0e5b4a8c-3c1a-4f6e-9d2b-7a1c5e9f0b11
    extra_args: ["console=ttyS0,115200", rw]
  whole-disk:
    kernel: { path: ${files.kernel} }
    initrd: { path: ${files.initrd} }
    flavour: initramfs-tools
machines:
  - name: plain
    macs: [52:54:00:00:00:01]
    image: deb-tools
    volume: { resolver: static, portals: [10.0.0.5:3260], iqn: iqn.2024-01.org.example:plain, lun: 1 }
  - name: chap-dracut
    macs: [52:54:00:00:00:02, 52:54:00:00:00:12]
    image: deb-dracut
    initiator_iqn: iqn.2024-01.org.example.initiators:chap-dracut
    volume:
      resolver: static
      portals: ["10.0.0.5:3260", "[fd00:10::5]:3260"]
      iqn: iqn.2024-01.org.example:chap
      lun: 1
      chap: { username: node02, password: ${SECRET}, in_username: tgt02, in_password: ${IN_SECRET} }
  - name: arm-v6
    arch: aa64
    macs: [52:54:00:00:00:03]
    image: deb-tools
    volume:
      resolver: static
      portals: ["[fd00:10::5]:3261"]
      iqn: iqn.2024-01.org.example:arm
      lun: 2
      chap: { username: node03, password: ${SECRET} }
  - name: whole
    macs: [52:54:00:00:00:04]
    uuid: 8F1E2D3C-4B5A-4978-8695-A4B3C2D1E0F9
    image: whole-disk
    volume: { resolver: static, portals: [10.0.0.6], iqn: iqn.2024-01.org.example:whole, lun: 1 }
`;

describe("boot plan rendering (static resolver)", () => {
  const log = captureLogger();
  const registry = new MachineRegistry({ role: "off" });
  let plan: BootPlan;
  let haveGrub = false;

  beforeAll(() => {
    plan = new BootPlan(
      planOptionsFromYaml(yaml, { cacheDir: join(dir, "cache"), logger: log.logger, tftpRoot }),
      registry,
    );
    haveGrub = commandsAvailable("grub-script-check");
  });

  it("master config sources $prefix/$net_default_mac.conf and passes grub-script-check", () => {
    const master = plan.masterConfig();
    // biome-ignore lint/suspicious/noTemplateCurlyInString: GRUB variables, not a JS template
    expect(master).toContain('source "${prefix}/${net_default_mac}.conf"');
    expect(master).toContain("set timeout=3");
    if (haveGrub) expect(grubScriptCheck(master)).toBeUndefined();
    expect(master).not.toContain("peer appliance");
  });

  it("in an HA pair, the master config asks the peer when this appliance gives no config", () => {
    const pair = new BootPlan(
      {
        ...planOptionsFromYaml(yaml, { cacheDir: join(dir, "cache"), logger: log.logger, tftpRoot }),
        fallbackServers: ["10.0.0.3"],
      },
      registry,
    );
    const master = pair.masterConfig();
    const lines = master.split("\n").map((l) => l.trim());
    // biome-ignore lint/suspicious/noTemplateCurlyInString: GRUB variables, not a JS template
    const source = 'source "${prefix}/${net_default_mac}.conf"';
    // First from the appliance that served GRUB, then, only if nothing loaded, from the peer: root and prefix
    // both move, so the kernel and initrd come from the peer too.
    const first = lines.indexOf(source);
    const fallback = lines.indexOf("set prefix='(tftp,10.0.0.3)/grub'");
    expect(first).toBeGreaterThanOrEqual(0);
    expect(fallback).toBeGreaterThan(first);
    expect(lines[fallback - 1]).toBe("set root='(tftp,10.0.0.3)'");
    expect(lines[fallback + 1]).toBe(source);
    const guard = lines
      .slice(first, fallback)
      .filter((l) => l.startsWith("if [") && l.includes("netboot_loaded"));
    expect(guard).toHaveLength(1);
    if (haveGrub) expect(grubScriptCheck(master)).toBeUndefined();
  });

  it("initramfs-tools, no CHAP: boot_iscsi entry with kernel, initrd and a command line that parses back", async () => {
    const r = await plan.render("52:54:00:00:00:01", "x64");
    expect(r).toMatchObject({
      machine: "plain",
      resolver: "static",
      flavour: "initramfs-tools",
      arch: "x64",
      viaDefault: false,
    });
    expect(r.grubConfig).toContain("--id boot_iscsi");
    expect(r.grubConfig).toContain("set default=boot_iscsi");
    expect(r.grubConfig).toContain("set timeout=3");
    const linux = commandArgs(r.grubConfig, "linux");
    expect(linux[0]).toBe("/images/deb-tools/kernel");
    expect(commandArgs(r.grubConfig, "initrd")).toEqual(["/images/deb-tools/initrd"]);
    expect(r.kernelPath).toBe("images/deb-tools/kernel");
    const parsed = parseOpenIscsiCmdline(linux.slice(1).join(" "));
    expect(parsed.initiator).toBe("iqn.2024-01.org.netboot-appliance:plain");
    expect(parsed.targets).toEqual([
      {
        targetIp: "10.0.0.5",
        protocol: "6",
        port: "3260",
        lun: "0",
        targetName: "iqn.2024-01.org.example:plain",
      },
    ]);
    expect(parsed.root).toBe("UUID=0e5b4a8c-3c1a-4f6e-9d2b-7a1c5e9f0b11");
    expect(linux.slice(1).join(" ")).toBe(r.cmdline);
    expect(r.secrets).toEqual([]);
    if (haveGrub) expect(grubScriptCheck(r.grubConfig)).toBeUndefined();
  });

  it("dracut, mutual CHAP, multipath with an IPv6 portal: one netroot per portal", async () => {
    const r = await plan.render("52-54-00-00-00-12");
    expect(r.machine).toBe("chap-dracut");
    const linux = commandArgs(r.grubConfig, "linux");
    const parsed = parseDracutCmdline(linux.slice(1).join(" "));
    expect(parsed.initiator).toBe("iqn.2024-01.org.example.initiators:chap-dracut");
    expect(
      parsed.targets.map((t) => [
        t.targetIp,
        t.port,
        t.lun,
        t.targetName,
        t.username,
        t.password,
        t.in_username,
        t.in_password,
      ]),
    ).toEqual([
      ["10.0.0.5", "3260", "1", "iqn.2024-01.org.example:chap", "node02", SECRET, "tgt02", IN_SECRET],
      ["fd00:10::5", "3260", "1", "iqn.2024-01.org.example:chap", "node02", SECRET, "tgt02", IN_SECRET],
    ]);
    expect(r.secrets).toEqual([SECRET, IN_SECRET]);
    if (haveGrub) expect(grubScriptCheck(r.grubConfig)).toBeUndefined();
  });

  it("aarch64 override, IPv6 portal and CHAP in the initramfs-tools flavour", async () => {
    const r = await plan.render("52:54:00:00:00:03", "x64");
    expect(r.arch).toBe("aa64");
    expect(plan.archFor("52:54:00:00:00:03")).toBe("aa64");
    const parsed = parseOpenIscsiCmdline(commandArgs(r.grubConfig, "linux").slice(1).join(" "));
    expect(parsed.targets[0]).toMatchObject({
      targetIp: "fd00:10::5",
      port: "3261",
      username: "node03",
      password: SECRET,
    });
    if (haveGrub) expect(grubScriptCheck(r.grubConfig)).toBeUndefined();
  });

  it("whole-LUN image: compact root=iscsi: with the LUN", async () => {
    const r = await plan.render("52:54:00:00:00:04");
    const parsed = parseOpenIscsiCmdline(r.cmdline);
    expect(parsed.rootLun).toBe("1");
    expect(parsed.targets[0]?.targetIp).toBe("10.0.0.6");
    if (haveGrub) expect(grubScriptCheck(r.grubConfig)).toBeUndefined();
  });

  it("quotes odd characters in extra entries so GRUB reads them literally", async () => {
    const r = await plan.render("52:54:00:00:00:01");
    expect(r.grubConfig).toContain(`menuentry 'Firmware setup (it'\\''s "odd" $HOME *)' {`);
    expect(r.grubConfig).toContain(`menuentry 'Reboot; echo '\\''x'\\''' {`);
    const titles = r.grubConfig
      .split("\n")
      .filter((l) => l.startsWith("menuentry "))
      .map((l) => grubWords(l.replace(/ \{$/, ""))[1]);
    expect(titles).toEqual([
      "Boot plain from iSCSI",
      `Firmware setup (it's "odd" $HOME *)`,
      "Reboot; echo 'x'",
    ]);
    if (haveGrub) expect(grubScriptCheck(r.grubConfig)).toBeUndefined();
  });

  it("unknown MACs get the default machine; isKnown tells them apart", async () => {
    expect(plan.isKnown("52:54:00:00:00:99")).toBe(false);
    expect(plan.isKnown("52:54:00:00:00:02")).toBe(true);
    const r = await plan.render("52:54:00:00:00:99");
    expect(r).toMatchObject({ machine: "plain", viaDefault: true, mac: "52:54:00:00:00:99" });
  });

  it("finds a machine by its SMBIOS UUID when it boots from a NIC not in the inventory", async () => {
    const uuid = "8f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9";
    expect(plan.findMachine("52:54:00:00:00:77")).toBeUndefined();
    expect(plan.findMachine("52:54:00:00:00:77", uuid.toUpperCase())?.name).toBe("whole");
    registry.noteUuid("52:54:00:00:00:77", uuid);
    expect(plan.isKnown("52:54:00:00:00:77")).toBe(true);
    const r = await plan.render("52:54:00:00:00:77");
    expect(r).toMatchObject({ machine: "whole", viaDefault: false });
  });

  it("a machine whose values cannot be expressed gets no config and a named error", async () => {
    const broken = yaml.replace(
      "flavour: initramfs-tools\n    root: UUID",
      "flavour: initramfs-tools\n    ip: dhcp\n    root: UUID",
    );
    const p = new BootPlan(planOptionsFromYaml(broken, { cacheDir: join(dir, "cache"), logger: log.logger }));
    const v6whole = planOptionsFromYaml(yaml, { cacheDir: join(dir, "cache"), logger: log.logger });
    const whole = v6whole.machines.find((m) => m.name === "whole");
    if (whole?.volume.resolver === "static") whole.volume.portals = [{ host: "fd00::6", port: 3260 }];
    p.reload(v6whole);
    await expect(p.render("52:54:00:00:00:04")).rejects.toThrow(UnresolvableMachineError);
    await expect(p.render("52:54:00:00:00:04")).rejects.toThrow(/machine whole \(image whole-disk\): .*IPv6/);
  });

  it("refuses a config whose machine names a missing image", () => {
    const bad = yaml.replace("image: deb-dracut", "image: nope");
    expect(() => new BootPlan(planOptionsFromYaml(bad, { cacheDir: dir, logger: log.logger }))).toThrow(
      /chap-dracut: image nope/,
    );
  });

  afterAll(() => {
    expect(log.text()).not.toContain(SECRET);
    expect(log.text()).not.toContain(IN_SECRET);
  });
});

describe("TFTP provider", () => {
  const log = captureLogger();
  let owners: Awaited<ReturnType<typeof leasedRegistry>>;
  let plan: BootPlan;
  let provide: ReturnType<BootPlan["tftpProvider"]>;
  const client = (address: string) => ({ address, port: 1234 });
  const text = async (path: string, address = "10.0.0.50") => {
    const s = await provide(path, client(address));
    if (s?.kind !== "data") throw new Error(`expected data for ${path}, got ${JSON.stringify(s)}`);
    return s.data.toString();
  };

  beforeAll(async () => {
    owners = await leasedRegistry(log.logger);
    plan = new BootPlan(
      planOptionsFromYaml(yaml, { cacheDir: join(dir, "cache"), logger: log.logger, tftpRoot }),
      owners.registry,
    );
    provide = plan.tftpProvider();
  });

  it("serves the master config and a machine's config by its MAC", async () => {
    await owners.lease("52:54:00:00:00:02", "10.0.0.50");
    expect(await text("grub/grub.cfg")).toBe(plan.masterConfig());
    const conf = await text("grub/52:54:00:00:00:02.conf");
    expect(conf).toBe((await plan.render("52:54:00:00:00:02")).grubConfig);
  });

  it("serves a machine's config only to the address DHCP gave it", async () => {
    await owners.lease("52:54:00:00:00:02", "10.0.0.60");
    await expect(provide("grub/52:54:00:00:00:02.conf", client("10.0.0.61"))).rejects.toThrow(
      /only to the machine's own address/,
    );
    expect(await text("grub/52:54:00:00:00:02.conf", "10.0.0.60")).toContain(SECRET);
    expect(log.text()).toContain("machine config refused");
  });

  it("serves kernel and initrd as files, and nothing else it does not know", async () => {
    await plan.render("52:54:00:00:00:01");
    expect(await provide("images/deb-tools/kernel", client("10.0.0.50"))).toEqual({
      kind: "file",
      path: files.kernel,
    });
    expect(await provide("images/deb-dracut/initrd", client("10.0.0.50"))).toEqual({
      kind: "file",
      path: files.initrd,
    });
    expect(await provide("x64/shimx64.efi", client("10.0.0.50"))).toBeUndefined();
    expect(await provide("grub/x86_64-efi/command.lst", client("10.0.0.50"))).toBeUndefined();
    expect(await provide("images/nope/kernel", client("10.0.0.50"))).toBeUndefined();
  });

  it("answers shim's fixed grub names at the root and beside shim, but not the real path", async () => {
    // shim loaded from x64/ may still ask at the root (rhboot/shim#524).
    expect(await provide("grubx64.efi", client("10.0.0.50"))).toEqual({
      kind: "file",
      path: join(tftpRoot, "x64/grubx64.efi"),
    });
    expect(await provide("x64/grubx64.efi", client("10.0.0.50"))).toBeUndefined();
    expect(await provide("grubaa64.efi", client("10.0.0.50"))).toEqual({
      kind: "file",
      path: join(tftpRoot, "aa64/grubnetaa64.efi"),
    });
    expect(await provide("aa64/grubaa64.efi", client("10.0.0.50"))).toEqual({
      kind: "file",
      path: join(tftpRoot, "aa64/grubnetaa64.efi"),
    });
    expect(await provide("other/grubaa64.efi", client("10.0.0.50"))).toBeUndefined();
  });

  it("an unknown MAC without a default machine gets no config (falls through to not found)", async () => {
    const p = new BootPlan(
      planOptionsFromYaml(yaml.replace("  default_machine: plain\n", ""), {
        cacheDir: dir,
        logger: log.logger,
      }),
    );
    expect(await p.tftpProvider()("grub/52:54:00:00:00:99.conf", client("10.0.0.50"))).toBeUndefined();
    expect(log.text()).toContain("no boot config for machine");
  });

  it("reload keeps DHCP bindings and uses the new inventory", async () => {
    await owners.lease("52:54:00:00:00:01", "10.0.0.70");
    plan.reload(
      planOptionsFromYaml(yaml.replace("timeout: 3", "timeout: 9"), {
        cacheDir: dir,
        logger: log.logger,
        tftpRoot,
      }),
    );
    expect(await text("grub/grub.cfg")).toContain("set timeout=9");
    await expect(provide("grub/52:54:00:00:00:01.conf", client("10.0.0.50"))).rejects.toThrow();
  });

  afterAll(async () => {
    await owners.store.close();
    expect(log.text()).not.toContain(SECRET);
  });
});

describe("alias when grub sits at the root", () => {
  it("maps x64/grubx64.efi to a root-level grub", async () => {
    const log = captureLogger();
    const y = yaml.replace("grub: x64/grubx64.efi", "grub: grubnetx64.efi");
    const p = new BootPlan(planOptionsFromYaml(y, { cacheDir: dir, logger: log.logger, tftpRoot }));
    writeFileSync(join(tftpRoot, "grubnetx64.efi"), "x");
    const provide = p.tftpProvider();
    expect(await provide("x64/grubx64.efi", { address: "10.0.0.1", port: 1 })).toEqual({
      kind: "file",
      path: join(tftpRoot, "grubnetx64.efi"),
    });
    expect(await provide("grubx64.efi", { address: "10.0.0.1", port: 1 })).toEqual({
      kind: "file",
      path: join(tftpRoot, "grubnetx64.efi"),
    });
  });
});
