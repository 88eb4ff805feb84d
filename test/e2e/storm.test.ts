/**
 * A small boot storm in CI: 20 UEFI x64 machines power on at once and boot through `netboot serve` as
 * OVMF, shim and GRUB do (bench/lib/storm-machine.ts): udhcpc, a tsize probe, shim and GRUB windowed,
 * both GRUB configs, the real kernel and initrd in lockstep, each download checked for its size.
 * No timing is asserted here; `npm run bench:storm` measures (200 machines, beside dnsmasq).
 * While the appliance still runs, its management API must show every machine's boot session, in order and
 * handed off; a machine that then stops after shim must get the stall diagnosis; /metrics must count it all.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { writeMachineScript } from "../../bench/lib/storm-machine.js";
import { createStormNet, STORM_SERVER_ADDRESS, type StormNet } from "../../bench/lib/storm-net.js";
import { runMachine, runStorm } from "../../bench/lib/storm-run.js";
import {
  applianceConfig,
  dnsmasqRoot,
  serverSequence,
  startAppliance,
} from "../../bench/lib/storm-servers.js";
import type { BootSession } from "../../src/machines/sessions.js";
import { packageRoot } from "../../src/package-root.js";
import { commandsAvailable, isRoot, resourceAvailable } from "../support/require.js";

const LAB = process.env.NETBOOT_LAB_CACHE ?? "/var/cache/netboot-lab";
const INPUTS = {
  shim: join(LAB, "loaders/x64/shimx64.efi"),
  grub: join(LAB, "loaders/x64/grubx64.efi"),
  kernel: join(LAB, "images/debian12-x64-initramfs/vmlinuz"),
  initrd: join(LAB, "images/debian12-x64-initramfs/initrd.img"),
};
const MACHINES = 20;
const ADMIN = `${STORM_SERVER_ADDRESS}:9090`;
const TOKEN = "storm-admin-token-0123456789";
const ready =
  resourceAvailable("root (network namespaces)", isRoot()) &&
  commandsAvailable("ip", "nft", "udhcpc", "atftp", "python3", "taskset", "curl") &&
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
    const configFile = applianceConfig(dir, INPUTS, net, {
      admin: { listen: ADMIN, token: TOKEN },
      sessions: { stall_after_seconds: 2 },
    });
    // The same rendered configs the appliance serves, for the sizes each machine checks.
    const root = await dnsmasqRoot(dir, configFile, INPUTS, net);
    const first = net.machines[0]?.mac as string;
    const script = writeMachineScript(dir, STORM_SERVER_ADDRESS, serverSequence(root, first));
    const stormNet = net;
    const api = (path: string, token: string | null = TOKEN) => {
      const args = ["-s", "-w", "\n%{http_code}", ...(token ? ["-H", `Authorization: Bearer ${token}`] : [])];
      const [cmd, argv] = stormNet.exec(stormNet.serverNs, "curl", ...args, `http://${ADMIN}${path}`);
      const out = spawnSync(cmd, argv, { encoding: "utf8", timeout: 10_000 }).stdout ?? "";
      const cut = out.lastIndexOf("\n");
      return { status: Number(out.slice(cut + 1)), body: out.slice(0, cut) };
    };
    const boots = (mac: string) =>
      JSON.parse(api(`/api/v1/machines/${mac}/boots`).body).boots as BootSession[];
    let operatorChecks: Promise<void> | undefined;
    const result = await runStorm({
      net: stormNet,
      script,
      sequence: (mac) => serverSequence(root, mac),
      outDir: join(dir, "out"),
      machineTimeoutMs: 240_000,
      start: () => startAppliance(stormNet, configFile, join(dir, "appliance.log")),
      beforeStop: () => {
        operatorChecks = checkOperatorSurface();
        return operatorChecks.catch(() => undefined);
      },
    });
    await operatorChecks;
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

    async function checkOperatorSurface(): Promise<void> {
      // Every machine: one session, handed off, its steps in the boot chain's order.
      for (const m of stormNet.machines) {
        const [latest] = boots(m.mac);
        expect(latest?.state, m.mac).toBe("handed-off");
        expect(latest?.steps[0]?.kind).toBe("dhcp");
        const roles = latest?.steps.filter((st) => st.kind === "file").map((st) => st.role);
        expect(roles, m.mac).toEqual(["shim", "grub", "grub-master", "grub-config", "kernel", "initrd"]);
      }
      // The API and the page want the token; /metrics does not.
      expect(api("/api/v1/machines", null).status).toBe(401);
      expect(api("/api/v1/machines", "wrong-token-0123456789").status).toBe(401);
      expect(api("/", null).status).toBe(401);
      expect(api("/").status).toBe(200);
      const metrics = api("/metrics", null);
      expect(metrics.status).toBe(200);
      expect(metrics.body).toContain(`netboot_boot_sessions_total{outcome="handed-off"} ${MACHINES}`);
      expect(metrics.body).toMatch(/netboot_dhcp_messages_total\{type="request",outcome="ack"\} [1-9]/);
      const tftpOk = /netboot_file_transfers_total\{protocol="tftp",outcome="ok"\} (\d+)/.exec(metrics.body);
      expect(Number(tftpOk?.[1])).toBeGreaterThanOrEqual(MACHINES * 6);

      // The first machine boots again and stops after shim: its new session stalls, with the diagnosis.
      const stopperDir = join(dir, "stopper");
      mkdirSync(stopperDir, { recursive: true });
      const shimOnly = serverSequence(root, first).filter((f) => f.step === "shim");
      const stopper = await runMachine(stormNet, 0, {
        script: writeMachineScript(stopperDir, STORM_SERVER_ADDRESS, shimOnly),
        sequence: () => shimOnly,
        outDir: join(stopperDir, "out"),
        machineTimeoutMs: 60_000,
      });
      expect(stopper.ok).toBe(true);
      let latest: BootSession | undefined;
      for (let i = 0; i < 60 && latest?.state !== "stalled"; i++) {
        await new Promise((r) => setTimeout(r, 500));
        latest = boots(first)[0];
      }
      expect(latest?.state).toBe("stalled");
      expect(latest?.diagnosis).toMatch(/^shim was fetched but the next loader \(GRUB\) was never asked for/);
      expect(boots(first)).toHaveLength(2);
      expect(api("/metrics", null).body).toContain('netboot_boot_sessions_total{outcome="stalled"} 1');

      // The same picture in a terminal.
      const cli = join(packageRoot(), "dist/src/bin.js");
      const status = (...args: string[]) => {
        const [cmd, argv] = stormNet.exec(
          stormNet.serverNs,
          process.execPath,
          cli,
          "status",
          "--url",
          `http://${ADMIN}`,
          ...args,
        );
        return spawnSync(cmd, argv, {
          encoding: "utf8",
          env: { ...process.env, NETBOOT_ADMIN_TOKEN: TOKEN },
        });
      };
      const all = status();
      expect(all.status).toBe(0);
      expect(all.stdout).toMatch(/storm1 +52:54:00:90:\S+ .*stalled/);
      expect(all.stdout.match(/handed-off/g)).toHaveLength(MACHINES - 1);
      const one = status("--mac", first);
      expect(one.stdout).toContain("diagnosis: shim was fetched");
      expect(one.stdout).toContain("x64/shimx64.efi");
    }
  }, 600_000);
});
