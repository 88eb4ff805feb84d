import { existsSync } from "node:fs";
import { mkdir, mkdtemp, rm, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { dnsmasqServer } from "../../qemu/dnsmasq-server.js";
import { parseTgtShow, startTgtTarget } from "../../qemu/iscsi-target.js";
import { createLabNetwork, type LabNetwork, listHostLabLinks, listLabNamespaces } from "../../qemu/netns.js";
import { pidAlive, run } from "../../qemu/proc.js";
import { buildTimeline, formatTimeline } from "../../qemu/timeline.js";
import { launchVm, prepareFirmware, probeAccel, qemuCommand } from "../../qemu/vm.js";
import { commandsAvailable, hasCommand, isRoot, resourceAvailable } from "../support/require.js";

// The lab's pieces without a root image: namespace and bridge, tgt, dnsmasq, OVMF and AAVMF reaching PXE.
const ready =
  resourceAvailable("root (network namespaces)", isRoot()) &&
  commandsAvailable("ip", "tgtd", "tgtadm", "dnsmasq", "qemu-system-x86_64") &&
  resourceAvailable("OVMF (package ovmf)", existsSync("/usr/share/OVMF/OVMF_CODE_4M.fd"));

const logger = pino({ level: process.env.NETBOOT_LAB_LOG ?? "warn" });

describe.skipIf(!ready)("QEMU lab harness", () => {
  let work: string;
  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), "nblab-harness-"));
  });
  afterAll(async () => {
    await rm(work, { recursive: true, force: true });
  });

  it("creates a namespace with a bridge and taps, and removes all of it", async () => {
    const net = await createLabNetwork();
    try {
      expect(await listLabNamespaces()).toContain(net.ns);
      const tap = await net.addTap();
      const links = await run("ip", ["-n", net.ns, "-o", "link", "show", "master", net.bridge]);
      expect(links).toContain(tap);
      const addr = await run("ip", ["-n", net.ns, "-o", "-4", "addr", "show", "dev", net.bridge]);
      expect(addr).toContain(`${net.serverIp}/24`);
    } finally {
      await net.destroy();
    }
    expect(await listLabNamespaces()).not.toContain(net.ns);
    expect(await listHostLabLinks()).toEqual([]);
  });

  it("runs tgtd in the namespace with LUN 1 and CHAP, managed from outside, and stops it", async () => {
    const lun = join(work, "lun.img");
    await writeFile(lun, "");
    await truncate(lun, 64 * 1024 * 1024);
    const net = await createLabNetwork();
    let pid: number | undefined;
    try {
      const target = await startTgtTarget({
        net,
        backingFile: lun,
        targetIqn: "iqn.2026-11.lab.netboot:harness",
        chap: { user: "labuser", password: "labsecret123" },
        logger,
      });
      pid = target.pid;
      const listening = await run("ip", ["netns", "exec", net.ns, "ss", "-Hltn", `sport = :3260`]);
      expect(listening).toContain(`${net.serverIp}:3260`);
      const show = await run("tgtadm", [
        "-C",
        String(target.controlPort),
        "--lld",
        "iscsi",
        "--op",
        "show",
        "--mode",
        "target",
      ]);
      const parsed = parseTgtShow(show);
      expect(parsed[0]?.iqn).toBe("iqn.2026-11.lab.netboot:harness");
      expect(parsed[0]?.luns).toEqual([0, 1]);
      expect(parsed[0]?.accounts).toEqual(["labuser"]);
      expect(await target.sessions()).toEqual([]);
      await target.stop();
    } finally {
      await net.destroy();
    }
    expect(pid !== undefined && pidAlive(pid)).toBe(false);
  });

  it("parses tgtadm's I_T nexus listing", () => {
    const text = [
      "Target 1: iqn.2026-11.lab.netboot:root",
      "    System information:",
      "        Driver: iscsi",
      "        State: ready",
      "    I_T nexus information:",
      "        I_T nexus: 1",
      "            Initiator: iqn.2026-11.lab.netboot:vm-525400 alias: nblab-vm",
      "            Connection: 0",
      "                IP Address: 10.77.0.10",
      "    LUN information:",
      "        LUN: 0",
      "            Type: controller",
      "        LUN: 1",
      "            Type: disk",
      "    Account information:",
      "        labuser",
      "    ACL information:",
      "        ALL",
    ].join("\n");
    expect(parseTgtShow(text)).toEqual([
      {
        tid: 1,
        iqn: "iqn.2026-11.lab.netboot:root",
        sessions: [{ initiator: "iqn.2026-11.lab.netboot:vm-525400", address: "10.77.0.10" }],
        luns: [0, 1],
        accounts: ["labuser"],
      },
    ]);
  });

  it("builds the documented QEMU command lines", () => {
    const [x64, xa] = qemuCommand({
      arch: "x64",
      secureBoot: true,
      accel: "tcg",
      code: "C",
      vars: "V",
      tap: "t0",
      mac: "52:54:00:00:00:01",
    });
    expect(x64).toBe("qemu-system-x86_64");
    expect(xa.join(" ")).toContain("-M q35,smm=on -global driver=cfi.pflash01,property=secure,value=on");
    expect(xa.join(" ")).toContain("virtio-net-pci,netdev=n0,mac=52:54:00:00:00:01,romfile=,bootindex=1");
    expect(xa.join(" ")).toContain("tap,id=n0,ifname=t0,script=no,downscript=no");
    const [aa, aargs] = qemuCommand({
      arch: "aa64",
      secureBoot: false,
      accel: "tcg",
      code: "C",
      vars: "V",
      tap: "t0",
      mac: "52:54:00:00:00:02",
    });
    expect(aa).toBe("qemu-system-aarch64");
    expect(aargs.join(" ")).toContain("-M virt -cpu cortex-a57");
  });

  const firmwareCases = [
    {
      arch: "x64" as const,
      code: 7,
      shim: "shimx64.efi",
      grub: "grubx64.efi",
      qemu: "qemu-system-x86_64",
      fw: "/usr/share/OVMF/OVMF_CODE_4M.fd",
    },
    {
      arch: "aa64" as const,
      code: 11,
      shim: "shimaa64.efi",
      grub: "grubaa64.efi",
      qemu: "qemu-system-aarch64",
      fw: "/usr/share/AAVMF/AAVMF_CODE.fd",
    },
  ];
  for (const c of firmwareCases) {
    const here = hasCommand(c.qemu) && existsSync(c.fw);
    it.skipIf(!resourceAvailable(`${c.qemu} and ${c.fw}`, here))(
      `${c.arch} firmware gets a DHCP offer with option 93 = ${c.code} and fetches ${c.shim} over TFTP from dnsmasq`,
      async () => {
        const net: LabNetwork = await createLabNetwork();
        const vmDir = join(work, `pxe-${c.arch}`);
        const loaders = join(vmDir, "loaders", c.arch);
        await mkdir(loaders, { recursive: true });
        // Not a PE image: the firmware fetches it and refuses to run it, which is all this test needs.
        await writeFile(join(loaders, c.shim), Buffer.alloc(4096, 0x5a));
        await writeFile(join(loaders, c.grub), "not used");
        const mac = c.arch === "x64" ? "52:54:00:6e:62:99" : "52:54:00:6e:62:98";
        const server = await dnsmasqServer({
          net,
          workDir: vmDir,
          mac,
          logger,
          boot: {
            arch: c.arch,
            loaderDir: loaders,
            kernel: "/nonexistent",
            initrd: "/nonexistent",
            cmdline: "quiet",
          },
        });
        let vmPid: number | undefined;
        try {
          const tap = await net.addTap();
          const accel = await probeAccel(c.arch, vmDir, logger);
          const fw = await prepareFirmware(c.arch, false, vmDir);
          const vm = await launchVm({
            net,
            spec: { arch: c.arch, secureBoot: false, accel, ...fw, tap, mac },
            timeLimitMs: 90_000,
            serialLog: join(vmDir, "serial.log"),
            logger,
          });
          vmPid = vm.pid;
          const deadline = Date.now() + 90_000;
          while (
            Date.now() < deadline &&
            !server.items.some((i) => i.kind === "tftp" && i.row.outcome === "ok")
          ) {
            await new Promise((r) => setTimeout(r, 200));
          }
          const startedAt = vm.startedAt;
          const elapsed = Date.now() - startedAt;
          await vm.kill();
          const tl = buildTimeline({
            startedAt,
            arch: c.arch,
            accel,
            server: server.name,
            durationMs: elapsed,
            ok: true,
            serial: vm.lines,
            serverItems: [...server.items],
          });
          console.log(formatTimeline(tl));
          const discover = tl.dhcp.find((d) => d.message === "DHCPDISCOVER");
          expect(discover?.arch).toBe(c.code);
          expect(discover?.mac).toBe(mac);
          expect(tl.dhcp.find((d) => d.message === "DHCPACK")?.ip).toBe(`${net.subnet}.10`);
          expect(tl.tftp.find((f) => f.file === c.shim && f.outcome === "ok")).toBeDefined();
        } finally {
          await server?.stop();
          await net.destroy();
        }
        expect(vmPid !== undefined && pidAlive(vmPid)).toBe(false);
        expect(server !== undefined && pidAlive(server.pid)).toBe(false);
      },
      150_000,
    );
  }
});
