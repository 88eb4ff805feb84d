/**
 * The end-to-end matrix of issue 7: real UEFI firmware (OVMF, AAVMF) PXE-boots through `netboot serve`
 * in a throw-away lab namespace into a root filesystem on a tgt iSCSI LUN. The appliance renders each
 * machine's GRUB config (and so the kernel command line) from its own inventory.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { applianceServer } from "../../qemu/appliance-server.js";
import { type BootOptions, type BootResult, runBoot } from "../../qemu/lab.js";
import { formatTimeline } from "../../qemu/timeline.js";
import { ensureLabArtefacts, labLeftovers, labLoaderRoot, labToolsAvailable } from "../support/lab.js";

const outDir = join(import.meta.dirname, "..", "..", "test-results", "e2e");
const summary: { row: string; ok: boolean; seconds: number; accel: string }[] = [];

type Call = { method: string; path: string; status: number };

interface Row {
  name: string;
  arch: "x64" | "aa64";
  image: string;
  boot: Partial<BootOptions>;
  server?: Parameters<typeof applianceServer>[0];
  check?: (r: BootResult, calls: Call[]) => void;
}

const OTHER_ARCH = { x64: /(^|\/)(aa64\/|[a-z]+aa64\.efi)/, aa64: /(^|\/)(x64\/|[a-z]+x64\.efi)/ };
const SHIM = { x64: "x64/shimx64.efi", aa64: "aa64/shimaa64.efi" };
const GRUB = { x64: "x64/grubx64.efi", aa64: "aa64/grubaa64.efi" };
const ARCH_CODE = { x64: 7, aa64: 11 };

const rows: Row[] = [
  { name: "1. x64 UEFI, initramfs-tools, no CHAP", arch: "x64", image: "debian12-x64-initramfs", boot: {} },
  {
    name: "2. x64 UEFI, dracut, CHAP",
    arch: "x64",
    image: "debian12-x64-dracut",
    boot: { flavour: "dracut", chap: { user: "nblab-user", password: "Lab-Chap-Secret-1" } },
  },
  {
    name: "3. x64 Secure Boot (signed shim, GRUB, kernel), initramfs-tools, booting systemd",
    arch: "x64",
    image: "debian12-x64-initramfs",
    boot: { secureBoot: true, init: null },
    check: (r) => expect(r.marker).toContain("boot=systemd"),
  },
  {
    name: "4. aarch64 UEFI (AAVMF), initramfs-tools",
    arch: "aa64",
    image: "debian12-aa64-initramfs",
    boot: {},
  },
  {
    name: "5. ProxyDHCP beside dnsmasq (site DHCP hands out addresses only), x64",
    arch: "x64",
    image: "debian12-x64-initramfs",
    boot: {},
    server: { dhcpMode: "proxy" },
    check: (r) => {
      // The appliance assigned nothing: every DHCP answer it logged is a proxy answer without an address lease.
      expect(r.timeline.dhcp.some((d) => d.file === SHIM.x64)).toBe(true);
      expect(r.timeline.dhcp.some((d) => d.message === "ack")).toBe(false);
    },
  },
  {
    name: "6. Cinder resolver (Keystone, attachments API, Glance kernel and initrd), x64",
    arch: "x64",
    image: "debian12-x64-initramfs",
    boot: {},
    server: { cinder: true },
    check: (r, calls) => {
      expect(r.servedFiles.filter((f) => f.startsWith("glance/")).length).toBe(2);
      expect(
        calls.some((c) => c.method === "POST" && c.path.endsWith("/auth/tokens") && c.status === 201),
      ).toBe(true);
      expect(calls.some((c) => c.method === "POST" && c.path.endsWith("/attachments"))).toBe(true);
      expect(
        calls.filter((c) => c.method === "GET" && /\/v2\/images\/[^/]+\/file$/.test(c.path)).length,
      ).toBe(2);
    },
  },
];

afterAll(() => {
  mkdirSync(outDir, { recursive: true });
  writeFileSync(join(outDir, "matrix.json"), `${JSON.stringify(summary, null, 2)}\n`);
  for (const s of summary)
    console.log(`matrix ${s.ok ? "ok  " : "FAIL"} ${s.seconds.toFixed(1)} s ${s.accel}  ${s.row}`);
});

// NETBOOT_E2E_ROWS=1,3 runs only those rows (a developer's shortcut; CI runs them all).
const only = process.env.NETBOOT_E2E_ROWS?.split(",").map((n) => n.trim());

for (const row of rows) {
  const number = row.name.split(".")[0] ?? "";
  if (only && !only.includes(number)) {
    console.warn(`SKIP: matrix row ${number} (NETBOOT_E2E_ROWS=${process.env.NETBOOT_E2E_ROWS})`);
    continue;
  }
  const ready = labToolsAvailable(row.arch) && ensureLabArtefacts(row.image, row.arch);
  describe.skipIf(!ready)(row.name, () => {
    it("boots to the root filesystem's marker through the appliance", async () => {
      let calls: Call[] = [];
      const r = await runBoot({
        arch: row.arch,
        image: row.image,
        loaderRoot: labLoaderRoot(),
        outDir: join(outDir, row.name.slice(0, 2).replace(/\W/g, "")),
        timeLimitMs: row.arch === "aa64" ? 900_000 : 540_000,
        ...row.boot,
        server: applianceServer({
          ...row.server,
          onStopped: (report) => {
            calls = report.openstackCalls ?? [];
          },
        }),
      });
      console.log(`${row.name}\n${formatTimeline(r.timeline)}`);
      console.log(`${row.name}: ${(r.durationMs / 1000).toFixed(1)} s ${r.accel.toUpperCase()} ok=${r.ok}`);
      summary.push({ row: row.name, ok: r.ok, seconds: r.durationMs / 1000, accel: r.accel.toUpperCase() });

      expect(r.timedOut).toBe(false);
      expect(r.ok).toBe(true);
      expect(r.marker).toMatch(/NETBOOT-E2E-OK .*iscsi=iqn\.2026-11\.lab\.netboot:root-/);
      expect(r.targetSawLogin).toBe(true);
      expect(r.initiators).toContain(r.initiatorIqn);

      // The right architecture's chain, from the appliance, and nothing of the other architecture.
      expect(r.timeline.dhcp.some((d) => d.arch === ARCH_CODE[row.arch])).toBe(true);
      for (const f of [SHIM[row.arch], GRUB[row.arch], "grub/grub.cfg"]) expect(r.servedFiles).toContain(f);
      expect(r.servedFiles.some((f) => /^grub\/[0-9a-f:]{17}\.conf$/.test(f))).toBe(true);
      expect(r.servedFiles.filter((f) => OTHER_ARCH[row.arch].test(f))).toEqual([]);
      row.check?.(r, calls);
      expect(await labLeftovers(r.resources)).toEqual([]);
    }, 1_000_000);
  });
}
