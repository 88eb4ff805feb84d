/**
 * `netboot serve` as a pair, as deployed: two appliances (DHCP full, TFTP, the boot plan) in two namespaces
 * on one bridge, leases on a real PostgreSQL. A machine takes a lease from the appliance owning its RFC 3074
 * bucket; that appliance is killed (-9); the survivor serves the machine's own config (with its CHAP secret)
 * to the leased address only, and `netboot leases` lists the lease from the database.
 *   nbps-a [nbps-a0 10.83.0.1] ─┐
 *                               ├─ nbps-br (nbps-c: udhcpc, curl)
 *   nbps-b [nbps-b0 10.83.0.2] ─┘
 */
import { type ChildProcess, execFile } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { HaScope } from "../../src/ha/scope.js";
import { Lab, tempDir } from "../dhcp/helpers/netns.js";
import { peImage } from "../support/pe.js";
import { postgresAvailable, TestPostgres } from "../support/postgres.js";
import { commandsAvailable, isRoot, resourceAvailable } from "../support/require.js";
import { CLI, startServe } from "../support/serve.js";

const execFileP = promisify(execFile);
const ready =
  resourceAvailable("root (network namespaces)", isRoot()) &&
  commandsAvailable("ip", "udhcpc", "curl") &&
  postgresAvailable();
const MAC = "52:54:00:83:00:01";
const CHAP_SECRET = "Chap-Secret-For-Pair-Node";
const SIDES = ["a", "b"] as const;
const ADDRESS = { a: "10.83.0.1", b: "10.83.0.2" };

describe.runIf(ready)("netboot serve as an HA pair: the survivor serves the machine's config", () => {
  const lab = new Lab();
  const dir = tempDir("nbps-");
  let pg: TestPostgres;
  const servers = new Map<string, { child: ChildProcess; output: string[] }>();
  const configFile = (side: string) => join(dir, `config-${side}.yaml`);

  function writeConfig(side: "a" | "b"): void {
    const root = join(dir, "tftp");
    writeFileSync(
      configFile(side),
      stringify({
        listen: { interfaces: [`nbps-${side}0`], address: ADDRESS[side] },
        state_dir: join(dir, `state-${side}`),
        cache_dir: join(dir, `cache-${side}`),
        state: { backend: "postgres", url: pg.url },
        admin: { listen: `${ADDRESS[side]}:9100` },
        ha: {
          mode: "load-balancing",
          this: `appliance-${side}`,
          peers: [
            { name: "appliance-a", role: "primary" },
            { name: "appliance-b", role: "secondary" },
          ],
          failover_ms: 2000,
        },
        dhcp: {
          mode: "full",
          subnets: [
            {
              subnet: "10.83.0.0/16",
              range: { start: "10.83.1.0", end: "10.83.1.200" },
              interface: `nbps-${side}0`,
            },
          ],
        },
        tftp: { root },
        boot: {
          loaders: { x64: { shim: "x64/shimx64.efi", grub: "x64/grubx64.efi" } },
          grub: { timeout: 0 },
        },
        images: {
          deb: {
            kernel: { path: join(dir, "vmlinuz") },
            initrd: { path: join(dir, "initrd.img") },
            flavour: "initramfs-tools",
            root: "UUID=0b7c1f52-9d1e-4a53-8a55-0d1f0b7c1f52",
          },
        },
        machines: [
          {
            name: "node1",
            macs: [MAC],
            image: "deb",
            initiator_iqn: "iqn.2026-12.lab.netboot:node1",
            volume: {
              resolver: "static",
              portals: ["10.83.0.9:3260"],
              iqn: "iqn.2026-12.lab.netboot:node1-root",
              lun: 1,
              chap: { username: "node1", password: { file: "chap.secret" } },
            },
          },
        ],
      }),
    );
  }

  async function serve(side: "a" | "b"): Promise<void> {
    servers.set(side, await startServe(lab, `nbps-${side}`, configFile(side)));
  }

  beforeAll(async () => {
    pg = new TestPostgres();
    pg.init();
    const root = join(dir, "tftp");
    mkdirSync(join(root, "x64"), { recursive: true });
    writeFileSync(join(root, "x64/shimx64.efi"), peImage(0x8664));
    writeFileSync(join(root, "x64/grubx64.efi"), peImage(0x8664));
    writeFileSync(join(dir, "vmlinuz"), "kernel bytes");
    writeFileSync(join(dir, "initrd.img"), "initrd bytes");
    writeFileSync(join(dir, "chap.secret"), `${CHAP_SECRET}\n`);
    for (const ns of ["nbps-a", "nbps-b", "nbps-c"]) lab.ns(ns);
    lab.exec("nbps-c", "ip", ["link", "add", "nbps-br", "type", "bridge"]);
    for (const side of SIDES) {
      lab.link(`nbps-${side}`, `nbps-${side}0`, `${ADDRESS[side]}/16`, "nbps-c", `nbps-p${side}`, undefined);
      lab.exec("nbps-c", "ip", ["link", "set", `nbps-p${side}`, "master", "nbps-br"]);
    }
    // The client's interface is a veth behind the bridge, with the machine's MAC.
    lab.link("nbps-c", "nbps-m", undefined, "nbps-c", "nbps-pm", undefined);
    lab.exec("nbps-c", "ip", ["link", "set", "nbps-pm", "master", "nbps-br"]);
    lab.exec("nbps-c", "ip", ["link", "set", "nbps-m", "down"]);
    lab.exec("nbps-c", "ip", ["link", "set", "nbps-m", "address", MAC]);
    lab.exec("nbps-c", "ip", ["link", "set", "nbps-m", "up"]);
    lab.exec("nbps-c", "ip", ["link", "set", "nbps-br", "up"]);
    for (const side of SIDES) writeConfig(side);
    await Promise.all(SIDES.map((side) => serve(side)));
    // Each has read the other's heartbeat: until then the one that started first serves everyone.
    const end = Date.now() + 10_000;
    while (
      SIDES.some((side) => !servers.get(side)?.output.join("").includes("ha: peer is up")) &&
      Date.now() < end
    )
      await new Promise((r) => setTimeout(r, 50));
  }, 120_000);

  afterAll(() => {
    if (process.env.NB_DEBUG) for (const [side, s] of servers) console.log(side, s.output.join(""));
    lab.cleanup();
    pg?.destroy();
  });

  // udhcpc sends option 61 (type 1, then the MAC): RFC 3074 hashes that, as Kea does, not chaddr.
  const clientId = [1, ...MAC.split(":").map((h) => Number.parseInt(h, 16))];
  const owner = HaScope.bucketOwner(Buffer.from(clientId)) === 0 ? "a" : "b";
  const survivor = owner === "a" ? "b" : "a";
  let leased = "";

  it("the machine's lease comes from the appliance owning its bucket, and is in the database", () => {
    const envFile = join(dir, "udhcpc.env");
    const script = join(dir, "udhcpc.sh");
    writeFileSync(
      script,
      `#!/bin/sh\nif [ "$1" = bound ]; then ip addr add "$ip/16" dev "$interface"; env > ${envFile}; fi\n`,
      { mode: 0o755 },
    );
    lab.exec(
      "nbps-c",
      "udhcpc",
      [
        "-i",
        "nbps-m",
        "-n",
        "-q",
        "-f",
        "-t",
        "5",
        "-T",
        "1",
        "-s",
        script,
        "-x",
        "0x5d:0007",
        "-V",
        "PXEClient:Arch:00007:UNDI:003000",
      ],
      { timeout: 30_000 },
    );
    const env = Object.fromEntries(
      readFileSync(envFile, "utf8")
        .split("\n")
        .filter((l) => l.includes("="))
        .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
    );
    leased = env.ip as string;
    expect(leased).toMatch(/^10\.83\.1\./);
    expect(env.serverid).toBe(ADDRESS[owner]);
    expect(pg.psql(`SELECT mac||' '||served_by FROM netboot_leases WHERE address = '${leased}'`)).toBe(
      `${MAC} appliance-${owner}`,
    );
  });

  const tftp = (server: string, file: string, source?: string) =>
    execFileP("ip", [
      "netns",
      "exec",
      "nbps-c",
      "curl",
      "-sS",
      "--max-time",
      "10",
      ...(source ? ["--interface", source] : []),
      `tftp://${server}/${file}`,
    ]).then((r) => r.stdout);

  it("after kill -9 of that appliance, the survivor serves the machine's config to its leased address only", async () => {
    const killed = servers.get(owner)?.child as ChildProcess;
    // The survivor may have logged "peer is down" at its start (the first to start serves all): count from here.
    const seenBefore = servers.get(survivor)?.output.join("").length ?? 0;
    const gone = new Promise((r) => killed.once("exit", r));
    killed.kill("SIGKILL");
    await gone;
    const own = await tftp(ADDRESS[survivor], `grub/${MAC}.conf`);
    expect(own).toMatch(/menuentry .*--id boot_iscsi/);
    expect(own).toContain("iscsi_target_name=iqn.2026-12.lab.netboot:node1-root");
    expect(own).toContain(`iscsi_password=${CHAP_SECRET}`);
    lab.exec("nbps-c", "ip", ["addr", "add", "10.83.0.77/16", "dev", "nbps-m"]);
    await expect(tftp(ADDRESS[survivor], `grub/${MAC}.conf`, "10.83.0.77")).rejects.toThrow();
    // Once the survivor has seen the peer's heartbeat go stale, its metrics say so.
    const end = Date.now() + 15_000;
    while (
      !servers.get(survivor)?.output.join("").slice(seenBefore).includes("ha: peer is down") &&
      Date.now() < end
    )
      await new Promise((r) => setTimeout(r, 100));
    const { stdout: metrics } = await execFileP("ip", [
      "netns",
      "exec",
      "nbps-c",
      "curl",
      "-sS",
      "--max-time",
      "10",
      `http://${ADDRESS[survivor]}:9100/metrics`,
    ]);
    expect(metrics).toMatch(new RegExp(`netboot_ha_peer_up\\{peer="appliance-${owner}"\\} 0`));
    expect(metrics).toMatch(/netboot_lease_database_up 1/);
    const logs = servers.get(survivor)?.output.join("") ?? "";
    expect(logs).toContain("machine config refused");
    expect(logs).not.toContain(CHAP_SECRET);
  });

  it("netboot leases reads the pair's leases from the database", async () => {
    const { stdout } = await execFileP("node", [CLI, "leases", "--config", configFile(survivor)]);
    expect(stdout).toMatch(new RegExp(`${leased.replace(/\./g, "\\.")}\\s+${MAC}\\s+bound`));
    expect(stdout).toContain("in the shared PostgreSQL database");
  });
});
