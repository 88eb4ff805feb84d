import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { describe, expect, it } from "vitest";
import { labCacheDir, runBoot } from "../../qemu/lab.js";
import { listLabNamespaces } from "../../qemu/netns.js";
import { pidAlive } from "../../qemu/proc.js";
import { formatTimeline } from "../../qemu/timeline.js";
import { ensureLabArtefacts, labLeftovers, labLoaderRoot, labToolsAvailable } from "../support/lab.js";
import { resourceAvailable } from "../support/require.js";

// The reference boot of issue 7: OVMF (TCG unless KVM really works) PXE-boots through dnsmasq as
// DHCP+TFTP, shim -> GRUB -> Debian kernel + initramfs-tools initrd -> iSCSI root on tgt -> marker.
const IMAGE = "debian12-x64-initramfs";
const ready = labToolsAvailable("x64") && ensureLabArtefacts(IMAGE, "x64");
const outDir = join(import.meta.dirname, "..", "..", "test-results", "e2e");
const repo = join(import.meta.dirname, "..", "..");

describe.skipIf(!ready)(
  "reference boot: x64 UEFI, initramfs-tools, dnsmasq DHCP+TFTP, tgt iSCSI root",
  () => {
    it("boots to the root filesystem's marker; the target saw the login; dnsmasq served the x64 chain", async () => {
      const r = await runBoot({
        arch: "x64",
        flavour: "initramfs-tools",
        loaderRoot: labLoaderRoot(),
        outDir,
        // About 45 s on an idle 2-core machine under TCG; the limit allows for a machine shared with other work.
        timeLimitMs: 540_000,
      });
      console.log(formatTimeline(r.timeline));
      console.log(
        `reference boot (dnsmasq): ${(r.durationMs / 1000).toFixed(1)} s ${r.accel.toUpperCase()} ok=${r.ok}`,
      );

      expect(r.timedOut).toBe(false);
      expect(r.ok).toBe(true);
      expect(r.marker).toMatch(/^NETBOOT-E2E-OK host=\S+ root=\S+ iscsi=\S+/);
      expect(r.marker).toContain(`iscsi=iqn.2026-11.lab.netboot:root-${IMAGE}`);
      expect(r.targetSawLogin).toBe(true);
      expect(r.initiators).toContain(r.initiatorIqn);

      const discover = r.timeline.dhcp.find((d) => d.message === "DHCPDISCOVER");
      expect(discover?.arch).toBe(7);
      for (const f of ["shimx64.efi", "grubx64.efi", "grub/grub.cfg", "vmlinuz", "initrd.img"])
        expect(r.servedFiles).toContain(f);
      expect(r.servedFiles.some((f) => /aa64/.test(f))).toBe(false);
      // Milestones in boot order.
      const m = r.timeline.milestones;
      expect(m.dhcp).toBeLessThan(m.marker ?? 0);
      expect(m["iscsi-login"]).toBeLessThan(m.marker ?? 0);

      expect(await labLeftovers(r.resources)).toEqual([]);
    }, 600_000);

    it("a boot that fails (time limit) reports it and leaves no namespace, tap, tgtd, dnsmasq or QEMU", async () => {
      // 15 s is well before the kernel under TCG: the firmware is still in DHCP/TFTP.
      const r = await runBoot({ arch: "x64", loaderRoot: labLoaderRoot(), timeLimitMs: 15_000 });
      console.log(
        `time-limited boot: ${(r.durationMs / 1000).toFixed(1)} s ${r.accel.toUpperCase()} ok=${r.ok}`,
      );
      expect(r.ok).toBe(false);
      expect(r.timedOut).toBe(true);
      expect(r.timeline.milestones["time-limit"]).toBeDefined();
      expect(r.resources.pids.length).toBeGreaterThanOrEqual(3);
      expect(await labLeftovers(r.resources)).toEqual([]);
    }, 120_000);

    const cli = join(repo, "dist", "qemu", "boot.js");
    it.skipIf(!resourceAvailable("compiled lab CLI (npm run build)", existsSync(cli)))(
      "Ctrl-C during a boot tears the lab down",
      async () => {
        const before = await listLabNamespaces();
        const child = spawn(process.execPath, [cli, "--loaders", labLoaderRoot(), "--time-limit", "120"], {
          stdio: ["ignore", "ignore", "pipe"],
          env: { ...process.env, NETBOOT_LAB_LOG: "info", NETBOOT_LAB_CACHE: labCacheDir() },
        });
        const pids: number[] = [];
        const lines = createInterface({ input: child.stderr });
        await new Promise<void>((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error("QEMU did not start within 60 s")), 60_000);
          lines.on("line", (l) => {
            try {
              const o = JSON.parse(l) as {
                msg?: string;
                qemuPid?: number;
                tgtdPid?: number;
                dnsmasqPid?: number;
                appliancePid?: number;
              };
              for (const p of [o.qemuPid, o.tgtdPid, o.dnsmasqPid, o.appliancePid])
                if (typeof p === "number") pids.push(p);
              if (o.msg === "qemu started") {
                clearTimeout(timer);
                resolve();
              }
            } catch {
              // pretty or partial line
            }
          });
        });
        const during = (await listLabNamespaces()).filter((n) => !before.includes(n));
        expect(during.length).toBe(1);
        child.kill("SIGINT");
        const code = await new Promise<number | null>((r) => child.once("exit", (c) => r(c)));
        expect(code).toBe(130);
        expect(pids.length).toBe(3);
        expect(pids.filter((p) => pidAlive(p))).toEqual([]);
        const after = await listLabNamespaces();
        for (const ns of during) expect(after).not.toContain(ns);
      },
      120_000,
    );
  },
);
