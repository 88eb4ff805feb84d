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
import type { BootSession } from "../../src/machines/sessions.js";
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
  /** The chain the firmware starts: shim → GRUB (default) or iPXE. */
  chain?: "grub" | "ipxe";
  check?: (r: BootResult, calls: Call[]) => void;
}

/** Which protocol carried each file the appliance sent (the appliance's own log lines). */
function protocols(r: BootResult): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>();
  for (const f of r.timeline.tftp.filter((row) => row.outcome === "ok")) {
    const seen = out.get(f.file) ?? new Set<string>();
    seen.add(f.protocol ?? "tftp");
    out.set(f.file, seen);
  }
  return out;
}

/** Every file that carried something came over exactly `want` (a file name or a pattern per protocol). */
function expectCarriedBy(r: BootResult, want: Record<string, "tftp" | "http">): void {
  const got = protocols(r);
  for (const [file, protocol] of Object.entries(want)) {
    const hit = [...got.entries()].find(([name]) =>
      file.startsWith("^") ? new RegExp(file).test(name) : name === file,
    );
    expect(hit, `${file} was not served`).toBeDefined();
    expect([...(hit?.[1] ?? [])], `${file} came over`).toEqual([protocol]);
  }
}

const SCRIPT = "^ipxe/[0-9a-f:]{17}\\.ipxe$";

const OTHER_ARCH = { x64: /(^|\/)(aa64\/|[a-z]+aa64\.efi)/, aa64: /(^|\/)(x64\/|[a-z]+x64\.efi)/ };
const SHIM = { x64: "x64/shimx64.efi", aa64: "aa64/shimaa64.efi" };
const GRUB = { x64: "x64/grubx64.efi", aa64: "aa64/grubaa64.efi" };
const ARCH_CODE = { x64: 7, aa64: 11 };

const IPXE = { x64: "x64/ipxe.efi", aa64: "aa64/ipxe.efi" };
const HTTP_ARCH_CODE = { x64: 16, aa64: 19 };

/** UEFI HTTP boot with the firmware's PXE off: iPXE by URL, then its script, kernel and initrd; no TFTP. */
function httpBootRow(name: string, arch: "x64" | "aa64"): Row {
  return {
    name,
    arch,
    image: `debian12-${arch}-initramfs`,
    boot: { httpBoot: true },
    server: { loader: "ipxe" },
    chain: "ipxe",
    check: (r) => {
      expect(
        r.timeline.dhcp.some(
          (d) => d.arch === HTTP_ARCH_CODE[arch] && d.file?.endsWith(`:8080/${IPXE[arch]}`),
        ),
      ).toBe(true);
      expectCarriedBy(r, {
        [IPXE[arch]]: "http",
        [`${arch}/autoexec.ipxe`]: "http",
        [SCRIPT]: "http",
        "images/lab/kernel": "http",
        "images/lab/initrd": "http",
      });
      expect(r.timeline.tftp.filter((f) => (f.protocol ?? "tftp") === "tftp")).toEqual([]);
    },
  };
}

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
  {
    name: "7. x64 fast path: PXE loads iPXE over TFTP, iPXE loads kernel and initrd over HTTP",
    arch: "x64",
    image: "debian12-x64-initramfs",
    boot: {},
    server: { loader: "ipxe" },
    chain: "ipxe",
    check: (r) => {
      expectCarriedBy(r, {
        [IPXE.x64]: "tftp",
        "autoexec.ipxe": "tftp",
        [SCRIPT]: "http",
        "images/lab/kernel": "http",
        "images/lab/initrd": "http",
      });
      // iPXE asked again with user class iPXE and was given its script, not a loader.
      expect(r.timeline.dhcp.some((d) => /\/ipxe\/[0-9a-f:]{17}\.ipxe$/.test(d.file ?? ""))).toBe(true);
    },
  },
  httpBootRow(
    "8. x64 UEFI HTTP boot (OVMF's PXE off): iPXE, script, kernel and initrd all over HTTP, no TFTP",
    "x64",
  ),
  httpBootRow(
    "9. aarch64 UEFI HTTP boot (AAVMF's PXE off): Debian 13's arm64 iPXE, everything over HTTP",
    "aa64",
  ),
  {
    name: "10. Ironic resolver: node by MAC (ports), iqn connector, masked boot target through Cinder, x64",
    arch: "x64",
    image: "debian12-x64-initramfs",
    boot: {},
    server: { ironic: true },
    check: (r, calls) => {
      expect(calls.some((c) => c.path === "/baremetal/v1/ports" && c.status === 200)).toBe(true);
      expect(calls.some((c) => /^\/baremetal\/v1\/nodes\/[^/]+\/volume\/targets$/.test(c.path))).toBe(true);
      expect(calls.some((c) => /^\/baremetal\/v1\/nodes\/[^/]+\/volume\/connectors$/.test(c.path))).toBe(
        true,
      );
      // The masked target was resolved through Cinder's attachments API; the kernel came from Glance.
      expect(calls.some((c) => c.method === "POST" && c.path.endsWith("/attachments"))).toBe(true);
      expect(r.servedFiles.filter((f) => f.startsWith("glance/")).length).toBe(2);
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
      let sessions: BootSession[] | undefined;
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
            sessions = report.sessions;
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
      if ((row.chain ?? "grub") === "grub") {
        expectCarriedBy(r, {
          [SHIM[row.arch]]: "tftp",
          [GRUB[row.arch]]: "tftp",
          "grub/grub.cfg": "tftp",
          "^grub/[0-9a-f:]{17}\\.conf$": "tftp",
        });
        // GRUB fetches kernel and initrd over TFTP too: nothing of this chain went over HTTP.
        expect(r.timeline.tftp.filter((f) => f.protocol === "http")).toEqual([]);
      } else {
        // The fast path never touches the signed chain.
        expect(r.servedFiles.filter((f) => f === SHIM[row.arch] || f === GRUB[row.arch])).toEqual([]);
        expect(r.servedFiles.filter((f) => f.startsWith("grub/"))).toEqual([]);
      }
      expect(r.servedFiles.filter((f) => OTHER_ARCH[row.arch].test(f))).toEqual([]);
      // The appliance's own record of the boot: one session, its chain in order, handed off.
      const latest = sessions?.[0];
      for (const session of sessions ?? [])
        console.log(
          `${row.name}: session ${session.id} ${session.state}: ${session.steps.map((st) => `${st.kind === "dhcp" ? `${st.client} ${st.label}` : st.label} ${st.outcome}`).join(" | ")}`,
        );
      expect(latest?.state).toBe("handed-off");
      const roles = latest?.steps.filter((s) => s.kind === "file" && s.outcome === "ok").map((s) => s.role);
      expect(roles).toEqual(
        (row.chain ?? "grub") === "grub"
          ? ["shim", "grub", "grub-master", "grub-config", "kernel", "initrd"]
          : ["ipxe", "ipxe-autoexec", "ipxe-script", "kernel", "initrd"],
      );
      expect(latest?.steps[0]?.kind).toBe("dhcp");
      row.check?.(r, calls);
      expect(await labLeftovers(r.resources)).toEqual([]);
    }, 1_000_000);
  });
}
