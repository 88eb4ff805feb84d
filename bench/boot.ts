/**
 * Lab boots, interleaved, on the same x64 VM image and firmware (OVMF without Secure Boot enforcement,
 * so only the chain and the server differ):
 *   - the appliance's fast path: PXE → iPXE (TFTP) → script, kernel and initrd over HTTP;
 *   - the appliance's Secure Boot path: PXE → signed shim → signed GRUB → kernel and initrd over TFTP;
 *   - dnsmasq, the reference: the same shim → GRUB chain, its own TFTP.
 * Network phase: from the server's first DHCP line for the VM to the end of the initrd's transfer, both
 * from the server's own log. Time to marker: QEMU start to the root filesystem's marker on the console.
 * Writes bench/results/boot.{md,json}.   npm run bench:boot   (NETBOOT_BOOT_REPEATS, default 3)
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { applianceServer } from "../qemu/appliance-server.js";
import type { BootServerFactory } from "../qemu/boot-server.js";
import { dnsmasqServer } from "../qemu/dnsmasq-server.js";
import { type BootResult, labCacheDir, runBoot } from "../qemu/lab.js";
import { packageRoot } from "../src/package-root.js";
import { markdownTable, median, ratio } from "./lib/report.js";

const REPEATS = Number(process.env.NETBOOT_BOOT_REPEATS ?? 3);
const IMAGE = "debian12-x64-initramfs";

interface Row {
  key: "fast" | "secure" | "dnsmasq";
  label: string;
  server: BootServerFactory;
}

const rows: Row[] = [
  { key: "fast", label: "appliance, fast path (iPXE, HTTP)", server: applianceServer({ loader: "ipxe" }) },
  { key: "secure", label: "appliance, Secure Boot path (shim, GRUB, TFTP)", server: applianceServer() },
  { key: "dnsmasq", label: "dnsmasq (shim, GRUB, TFTP)", server: dnsmasqServer },
];

interface Sample {
  key: Row["key"];
  ok: boolean;
  networkMs: number | undefined;
  firstDhcpMs: number | undefined;
  initrdDoneMs: number | undefined;
  markerMs: number | undefined;
  kernelStartMs: number | undefined;
}

/** From the server's log: its first DHCP line for the VM, and the end of the initrd's transfer. */
export function networkPhase(r: BootResult): Omit<Sample, "key" | "ok" | "markerMs" | "kernelStartMs"> {
  const firstDhcpMs = r.timeline.dhcp[0]?.t;
  const initrd = r.timeline.tftp.filter((f) => f.outcome === "ok" && /initrd|glance\//.test(f.file)).at(-1);
  const initrdDoneMs = initrd?.t;
  const networkMs =
    firstDhcpMs !== undefined && initrdDoneMs !== undefined ? initrdDoneMs - firstDhcpMs : undefined;
  return { firstDhcpMs, initrdDoneMs, networkMs };
}

const sec = (ms: number | undefined) => (ms === undefined ? "n/a" : (ms / 1000).toFixed(1));

async function main(): Promise<void> {
  const samples: Sample[] = [];
  const loaderRoot = join(labCacheDir(), "loaders");
  for (let i = 0; i < REPEATS; i++) {
    for (const row of rows) {
      const r = await runBoot({
        arch: "x64",
        image: IMAGE,
        loaderRoot,
        server: row.server,
        timeLimitMs: 400_000,
      });
      const s: Sample = {
        key: row.key,
        ok: r.ok,
        ...networkPhase(r),
        markerMs: r.ok ? r.durationMs : undefined,
        kernelStartMs: r.timeline.milestones["kernel-start"],
      };
      samples.push(s);
      console.log(
        `round ${i + 1}/${REPEATS} ${row.label}: ok=${s.ok} network ${sec(s.networkMs)} s (DHCP at ${sec(s.firstDhcpMs)}, initrd done ${sec(s.initrdDoneMs)}), marker ${sec(s.markerMs)} s`,
      );
    }
  }
  const summary = rows.map((row) => {
    const mine = samples.filter((s) => s.key === row.key);
    const ok = mine.filter((s) => s.ok && s.networkMs !== undefined);
    return {
      key: row.key,
      label: row.label,
      boots: mine.length,
      failed: mine.length - ok.length,
      networkMs: median(ok.map((s) => s.networkMs as number)),
      markerMs: median(ok.map((s) => s.markerMs as number)),
      networkRuns: mine.map((s) => s.networkMs),
      markerRuns: mine.map((s) => s.markerMs),
    };
  });
  const ref = summary.find((s) => s.key === "dnsmasq");
  const table = markdownTable(
    [
      "server and chain",
      "boots",
      "failed",
      "network phase, median (s)",
      "vs dnsmasq",
      "runs (s)",
      "to marker, median (s)",
      "vs dnsmasq",
    ],
    summary.map((s) => [
      s.label,
      s.boots,
      s.failed,
      sec(s.networkMs),
      ratio(s.networkMs, ref?.networkMs),
      s.networkRuns.map(sec).join(", "),
      sec(s.markerMs),
      ratio(s.markerMs, ref?.markerMs),
    ]),
  );
  const md = [
    `# bench:boot (${new Date().toISOString().slice(0, 10)})`,
    "",
    `x64 OVMF under ${process.env.NETBOOT_LAB_ACCEL ?? "the lab's accelerator (TCG here)"}, image ${IMAGE} (8.2 MB kernel, 28 MB initrd), ${REPEATS} rounds, the three servers interleaved in each round.`,
    "Network phase: the server's first DHCP line for the VM to the end of the initrd's transfer, from the server's log.",
    "",
    table,
    "",
  ].join("\n");
  const out = join(packageRoot(), "bench", "results");
  mkdirSync(out, { recursive: true });
  writeFileSync(join(out, "boot.md"), md);
  writeFileSync(join(out, "boot.json"), `${JSON.stringify({ samples, summary }, null, 2)}\n`);
  console.log(md);
}

await main();
