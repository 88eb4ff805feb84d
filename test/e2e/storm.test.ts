/**
 * A small boot storm in CI: 20 UEFI x64 machines power on at once and boot through `netboot serve` as
 * OVMF, shim and GRUB do (bench/lib/storm-machine.ts): udhcpc, a tsize probe, shim and GRUB windowed,
 * both GRUB configs, the real kernel and initrd in lockstep, each download checked for its size.
 * No timing is asserted here; `npm run bench:storm` measures (200 machines, beside dnsmasq).
 */
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { writeMachineScript } from "../../bench/lib/storm-machine.js";
import { createStormNet, STORM_SERVER_ADDRESS, type StormNet } from "../../bench/lib/storm-net.js";
import { runStorm } from "../../bench/lib/storm-run.js";
import {
  applianceConfig,
  dnsmasqRoot,
  serverSequence,
  startAppliance,
} from "../../bench/lib/storm-servers.js";
import { commandsAvailable, isRoot, resourceAvailable } from "../support/require.js";

const LAB = process.env.NETBOOT_LAB_CACHE ?? "/var/cache/netboot-lab";
const INPUTS = {
  shim: join(LAB, "loaders/x64/shimx64.efi"),
  grub: join(LAB, "loaders/x64/grubx64.efi"),
  kernel: join(LAB, "images/debian12-x64-initramfs/vmlinuz"),
  initrd: join(LAB, "images/debian12-x64-initramfs/initrd.img"),
};
const MACHINES = 20;
const ready =
  resourceAvailable("root (network namespaces)", isRoot()) &&
  commandsAvailable("ip", "nft", "udhcpc", "atftp", "python3", "taskset") &&
  resourceAvailable(
    `the lab's loaders and image (${LAB}, built by qemu/ci-prepare.sh)`,
    Object.values(INPUTS).every((f) => existsSync(f)),
  );

describe.runIf(ready)(`boot storm: ${MACHINES} machines at once through netboot serve`, () => {
  const dir = mkdtempSync(join(tmpdir(), "nbsx-"));
  let net: StormNet | undefined;

  afterAll(() => {
    net?.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  it("every machine gets its address, shim, GRUB, both configs, kernel and initrd, complete", async () => {
    net = createStormNet("nbsx", MACHINES);
    const configFile = applianceConfig(dir, INPUTS, net);
    // The same rendered configs the appliance serves, for the sizes each machine checks.
    const root = await dnsmasqRoot(dir, configFile, INPUTS, net);
    const first = net.machines[0]?.mac as string;
    const script = writeMachineScript(dir, STORM_SERVER_ADDRESS, serverSequence(root, first));
    const stormNet = net;
    const result = await runStorm({
      net: stormNet,
      script,
      sequence: (mac) => serverSequence(root, mac),
      outDir: join(dir, "out"),
      machineTimeoutMs: 240_000,
      start: () => startAppliance(stormNet, configFile, join(dir, "appliance.log")),
    });
    expect(result.failures).toEqual([]);
    expect(result.machines.filter((m) => m.ok)).toHaveLength(MACHINES);
    for (const m of result.machines)
      expect(Object.keys(m.steps).sort()).toEqual([
        "dhcp",
        "grub",
        "initrd",
        "kernel",
        "master",
        "own",
        "probe",
        "shim",
      ]);
    console.log(
      `storm (${MACHINES} machines): ${result.wallS.toFixed(1)} s, server CPU ${result.serverCpuS.toFixed(1)} s, retransmits ${result.retransmits}`,
    );
  }, 600_000);
});
