/**
 * Issue 15, the image rows: the flashable appliance image (packaging/image/build.sh) boots in QEMU with OVMF and
 * two NICs, real systemd starts netboot-appliance.service under the hardened unit, configured only by files on
 * its ESP, and a client VM on the provisioning bridge PXE-boots through it to its iSCSI root (the target on the
 * host side). A second boot gives the image a broken config and a provisioning NIC it does not have.
 */
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  type ApplianceVmReport,
  applianceVmServer,
  findApplianceImage,
  launchApplianceVm,
  prepareApplianceDisk,
  sshArgv,
  waitForApi,
  waitForConsole,
  waitForSsh,
} from "../../qemu/appliance-vm.js";
import { runBoot } from "../../qemu/lab.js";
import { createLabNetwork, type LabNetwork } from "../../qemu/netns.js";
import { run } from "../../qemu/proc.js";
import { formatTimeline } from "../../qemu/timeline.js";
import { ensureLabArtefacts, labLeftovers, labLoaderRoot, labToolsAvailable } from "../support/lab.js";
import { resourceAvailable } from "../support/require.js";

const IMAGE = "debian12-x64-initramfs";
const repo = join(import.meta.dirname, "..", "..");

/** Builds the image when it is missing (cached by recipe hash; .ci/run builds it before the tests). */
function ensureApplianceImage(): boolean {
  if (!findApplianceImage("x64") && process.getuid?.() === 0) {
    try {
      execFileSync("bash", [join(repo, "packaging", "image", "build.sh"), "amd64"], {
        stdio: "inherit",
        timeout: 1_200_000,
      });
    } catch (err) {
      console.warn(`appliance image: ${(err as Error).message}`);
    }
  }
  return resourceAvailable(
    "the appliance image (bash packaging/image/build.sh amd64)",
    findApplianceImage("x64") !== undefined,
  );
}

const ready =
  labToolsAvailable("x64") &&
  resourceAvailable("mtools (mcopy)", existsSync("/usr/bin/mcopy")) &&
  resourceAvailable("ssh", existsSync("/usr/bin/ssh")) &&
  ensureLabArtefacts(IMAGE, "x64") &&
  ensureApplianceImage();

const MiB = 1024 * 1024;

/** A built image, a scratch folder and a lab network for one test; both removed after the describe block. */
function scratchLab() {
  let net: LabNetwork | undefined;
  let dir: string | undefined;
  afterAll(async () => {
    await net?.destroy();
    if (dir) await rm(dir, { recursive: true, force: true });
  });
  return {
    async open(arch: "x64" | "aa64") {
      const image = findApplianceImage(arch);
      if (!image) throw new Error(`no ${arch} appliance image`);
      dir = await mkdtemp(join(tmpdir(), `nblab-image-${arch}-`));
      net = await createLabNetwork();
      return { image, dir, net };
    },
  };
}

describe.skipIf(!ready)("the flashable appliance image under real systemd", () => {
  it("boots with OVMF, serves a client VM's PXE boot to its iSCSI root, hardened and logging JSON", async () => {
    let report: ApplianceVmReport | undefined;
    const r = await runBoot({
      arch: "x64",
      image: IMAGE,
      loaderRoot: labLoaderRoot(),
      outDir: join(repo, "test-results", "e2e", "appliance-image"),
      timeLimitMs: 600_000,
      // Flashed onto a disk 512 MiB larger than the image: the root must grow into it.
      server: applianceVmServer({ growBy: 512 * MiB, onReport: (rep) => (report = rep) }),
    });
    console.log(`appliance image, client boot\n${formatTimeline(r.timeline)}`);
    console.log(
      `appliance image: service ready ${((report?.readyMs ?? Number.NaN) / 1000).toFixed(1)} s after power-on; ` +
        `client marker ${(r.durationMs / 1000).toFixed(1)} s after its power-on (${r.accel.toUpperCase()})`,
    );
    console.log(
      `appliance image report: ${JSON.stringify({ ...report, sessions: report?.sessions?.length })}`,
    );
    expect(r.ok, "the client reached its iSCSI root's marker").toBe(true);
    expect(r.targetSawLogin).toBe(true);
    expect(r.servedFiles).toEqual(expect.arrayContaining(["x64/shimx64.efi", "x64/grubx64.efi"]));

    expect(report, "the appliance VM was read over SSH").toBeDefined();
    const rep = report as ApplianceVmReport;
    expect(rep.consoleLines.join("\n")).toMatch(
      /provisioning NIC \S+ \(52:54:00:6e:61:02\) is prov0, 10\.77\.0\.2\/24/,
    );
    expect(rep.consoleLines.join("\n")).toContain("config from /boot/efi/netboot/config.yaml is valid");
    // The hardened unit as on the host (test/systemd: at most 2.5), now under a running systemd.
    expect(rep.securityExposure).toBeLessThanOrEqual(2.5);
    expect(rep.serviceUid, "a DynamicUser uid").toBeGreaterThanOrEqual(61184);
    expect(rep.serviceUid).toBeLessThanOrEqual(65519);
    // Port 67 bound to the provisioning NIC (SO_BINDTODEVICE, CAP_NET_RAW), port 69 on its address.
    expect(rep.sockets.join("\n")).toMatch(/%prov0:67\b/);
    expect(rep.sockets.join("\n")).toMatch(/10\.77\.0\.2:69\b/);
    expect(rep.journalJsonLines).toBeGreaterThan(10);
    expect(rep.rootBytes, "the root grew into the larger disk").toBeGreaterThan(
      rep.imageRootBytes + 400 * MiB,
    );
    const session = rep.sessions?.[0];
    expect(session, "the appliance's API shows the client's boot session").toBeDefined();
  }, 900_000);
});

describe.skipIf(!ready)("the appliance image with bad input on its ESP", () => {
  const scratch = scratchLab();

  it("prints the file:line error and the missing NIC on the console and in the journal, and does not serve", async () => {
    const { image, dir, net } = await scratch.open("x64");
    // The serial logs are kept under test-results.
    const keep = join(repo, "test-results", "e2e", "appliance-image-bad-input");
    await mkdir(keep, { recursive: true });
    const DONE = /netboot-image: \d+ error\(s\): the appliance does not start/;
    /** One boot from a fresh copy of the image; the VM cannot outlive the test. */
    const boot = async (attempt: number) => {
      const bootDir = join(dir, `boot${attempt}`);
      const { disk, key } = await prepareApplianceDisk({
        image,
        dir: bootDir,
        // A typo in dhcp.mode, on line 4 of the file the operator edits.
        config: "listen:\n  address: 10.77.0.2\ndhcp:\n  mode: fulll\ntftp:\n  root: /srv/netboot/tftp\n",
        networkConf: "provisioning_nic = 52:54:00:aa:bb:cc\nprovisioning_address = 10.77.0.2/24\n",
      });
      const vm = await launchApplianceVm({
        net,
        arch: "x64",
        disk,
        dir: bootDir,
        logger: quietLogger(),
        serialLog: join(keep, `serial-${attempt}.log`),
        timeLimitMs: 280_000,
      });
      return { vm, key };
    };
    // esp-config prints its verdict about 50 s after power-on under TCG. One CI run saw no console line in
    // 10 minutes (cause unknown: the test then had no bound and kept no console). A boot that stalls now
    // fails in 240 s with the console's tail, and is booted once more; a second stall fails the test.
    let { vm, key } = await boot(1);
    const stalled = await waitForConsole(vm, DONE, 240_000).then(
      () => undefined,
      (err: Error) => err.message,
    );
    if (stalled) {
      console.warn(`appliance image, bad input: the first boot stalled, booting again. ${stalled}`);
      await vm.kill();
      ({ vm, key } = await boot(2));
    }
    try {
      if (stalled) await waitForConsole(vm, DONE, 240_000);
      const console_ = vm.lines.map((l) => l.text).join("\n");
      console.log(
        `appliance image, bad input: ${console_
          .split("\n")
          .filter((l) => l.includes("netboot-image:"))
          .join("\n")}`,
      );
      expect(console_).toContain(
        "the provisioning NIC 52:54:00:aa:bb:cc (network.conf) is not in this machine",
      );
      expect(console_).toMatch(/\/boot\/efi\/netboot\/config\.yaml:4 dhcp\.mode: /);
      await waitForSsh(net, key, vm, 120_000);
      const sh = async (command: string) => {
        const [cmd, args] = sshArgv(net, key, command);
        return run(cmd, args, { timeoutMs: 60_000 });
      };
      expect((await sh("systemctl is-active netboot-appliance.service || true")).trim()).toBe("inactive");
      const journal = await sh("journalctl -b -u netboot-esp-config.service -o cat --no-pager");
      expect(journal).toMatch(/\/boot\/efi\/netboot\/config\.yaml:4 dhcp\.mode: /);
      expect(journal).toContain("is not in this machine");
      expect(await sh("ss -Hulpn 'sport = :67' | wc -l")).toBe("0\n");
    } finally {
      await vm.kill();
    }
    expect(await labLeftovers({ ns: "", pids: [vm.pid] })).toEqual([]);
  }, 720_000);
});

function quietLogger() {
  // The lab's own logger type; warnings only (QEMU's stderr).
  return {
    info: () => undefined,
    debug: () => undefined,
    warn: (o: unknown, m?: string) => console.warn(m ?? "", o),
    error: (o: unknown, m?: string) => console.error(m ?? "", o),
  } as unknown as import("pino").Logger;
}

const arm64Ready =
  labToolsAvailable("aa64") &&
  resourceAvailable("udhcpc", existsSync("/usr/bin/udhcpc") || existsSync("/sbin/udhcpc")) &&
  ensureLabArtefacts("debian12-aa64-initramfs", "aa64") &&
  resourceAvailable(
    "the arm64 appliance image (bash packaging/image/build.sh arm64)",
    findApplianceImage("aa64") !== undefined,
  );

describe.skipIf(!arm64Ready)("the arm64 appliance image under AAVMF", () => {
  const scratch = scratchLab();

  it("boots with real systemd and answers a UEFI aarch64 client's DHCP and TFTP", async () => {
    const { image, dir, net } = await scratch.open("aa64");
    const lab = join(
      process.env.NETBOOT_LAB_CACHE ?? "/var/cache/netboot-lab",
      "images",
      "debian12-aa64-initramfs",
    );
    const clientMac = "52:54:00:6e:62:aa";
    const config = [
      "listen: { interfaces: [prov0], address: 10.77.0.2 }",
      "tftp: { root: /srv/netboot/tftp }",
      "dhcp:",
      "  mode: full",
      "  subnets: [{ subnet: 10.77.0.0/24, interface: prov0, range: { start: 10.77.0.100, end: 10.77.0.150 } }]",
      "admin: { listen: '10.77.0.2:9090' }",
      "boot: { loaders: { aa64: { shim: aa64/shimaa64.efi, grub: aa64/grubaa64.efi } } }",
      "images:",
      "  lab:",
      "    kernel: { path: /srv/netboot/images/lab/vmlinuz }",
      "    initrd: { path: /srv/netboot/images/lab/initrd.img }",
      "    flavour: initramfs-tools",
      "machines:",
      `  - { name: arm1, macs: ["${clientMac}"], arch: aa64, image: lab, volume: { resolver: static, portals: ["10.77.0.1:3260"], iqn: "iqn.2026-11.lab.netboot:arm1", lun: 1 } }`,
      "",
    ].join("\n");
    const { disk } = await prepareApplianceDisk({
      image,
      dir,
      config,
      files: [
        { from: join(lab, "vmlinuz"), to: "/netboot/images/lab/vmlinuz" },
        { from: join(lab, "initrd.img"), to: "/netboot/images/lab/initrd.img" },
      ],
    });
    const vm = await launchApplianceVm({ net, arch: "aa64", disk, dir, logger: quietLogger() });
    try {
      const readyMs = await waitForApi(net, "http://10.77.0.2:9090", vm, 900_000);
      console.log(
        `arm64 appliance image: service ready ${(readyMs / 1000).toFixed(1)} s after power-on (TCG)`,
      );
      // A client port on the lab bridge: udhcpc as a UEFI aarch64 PXE client (option 93 = 11).
      const ip = (...args: string[]) => run("ip", ["-n", net.ns, ...args]);
      await ip("link", "add", "nblab-c0", "type", "veth", "peer", "name", "nblab-c1");
      await ip("link", "set", "nblab-c0", "master", net.bridge, "up");
      await ip("link", "set", "nblab-c1", "address", clientMac, "up");
      const envFile = join(dir, "udhcpc.env");
      const script = join(dir, "udhcpc.sh");
      await writeFile(script, `#!/bin/sh\n[ "$1" = bound ] && env > ${envFile}\nexit 0\n`, { mode: 0o755 });
      const [ucmd, uargs] = net.exec(
        "udhcpc",
        ...["-i", "nblab-c1", "-n", "-q", "-f", "-t", "10", "-T", "3", "-s", script],
        ...["-x", "0x5d:000b", "-V", "PXEClient:Arch:00011:UNDI:003000", "-O", "bootfile"],
      );
      await run(ucmd, uargs, { timeoutMs: 60_000 });
      const env = Object.fromEntries(
        (await readFile(envFile, "utf8"))
          .split("\n")
          .filter((l) => l.includes("="))
          .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
      );
      console.log(`arm64 appliance image: DHCP ${env.ip} from ${env.serverid}, boot file ${env.boot_file}`);
      expect(env.serverid).toBe("10.77.0.2");
      expect(env.ip).toMatch(/^10\.77\.0\.1[0-5]\d$/);
      expect(env.boot_file).toBe("aa64/shimaa64.efi");
      const got = join(dir, "shim.efi");
      const [tcmd, targs] = net.exec(
        "curl",
        "-sf",
        "-m",
        "120",
        "-o",
        got,
        "tftp://10.77.0.2/aa64/shimaa64.efi",
      );
      await run(tcmd, targs, { timeoutMs: 150_000 });
      const want = await readFile(join(labLoaderRoot(), "aa64", "shimaa64.efi"));
      expect((await readFile(got)).equals(want), "TFTP gave the signed shim byte for byte").toBe(true);
    } finally {
      await vm.kill();
    }
  }, 1_200_000);
});
