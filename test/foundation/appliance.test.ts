/**
 * The whole process, as deployed: `netboot serve` with DHCP (full), TFTP and the boot plan in a namespace;
 * a real DHCP client (udhcpc, as an x64 UEFI PXE client) and a real TFTP client (curl) in another.
 *
 *   nbap-srv [nbap-s0 10.79.0.1/24] ── [nbap-c0] nbap-cl
 */
import { execFile } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { Lab, tempDir } from "../dhcp/helpers/netns.js";
import { peImage } from "../support/pe.js";
import { commandsAvailable, isRoot, resourceAvailable } from "../support/require.js";
import { CLI, startServe } from "../support/serve.js";

const execFileP = promisify(execFile);
const ready =
  resourceAvailable("root (network namespaces)", isRoot()) && commandsAvailable("ip", "udhcpc", "curl");
const SRV = "nbap-srv";
const CL = "nbap-cl";
const MAC = "52:54:00:79:00:01";
const CHAP_SECRET = "Chap-Secret-For-Node1";

describe.runIf(ready)("netboot serve: DHCP + TFTP + boot plan in one process", () => {
  const lab = new Lab();
  const dir = tempDir("nbap-");
  let output: string[] = [];

  beforeAll(async () => {
    const root = join(dir, "tftp");
    mkdirSync(join(root, "x64"), { recursive: true });
    writeFileSync(join(root, "x64/shimx64.efi"), peImage(0x8664));
    writeFileSync(join(root, "x64/grubx64.efi"), peImage(0x8664));
    writeFileSync(join(dir, "vmlinuz"), "kernel bytes");
    writeFileSync(join(dir, "initrd.img"), "initrd bytes");
    writeFileSync(join(dir, "chap.secret"), `${CHAP_SECRET}\n`);
    const config = {
      listen: { interfaces: ["nbap-s0"], address: "10.79.0.1" },
      state_dir: join(dir, "state"),
      cache_dir: join(dir, "cache"),
      dhcp: {
        mode: "full",
        subnets: [
          {
            subnet: "10.79.0.0/24",
            range: { start: "10.79.0.100", end: "10.79.0.150" },
            interface: "nbap-s0",
          },
        ],
        reservations: [{ mac: MAC, address: "10.79.0.11", hostname: "node1" }],
      },
      tftp: { root },
      http: { enable: true, port: 8080 },
      boot: { loaders: { x64: { shim: "x64/shimx64.efi", grub: "x64/grubx64.efi" } }, grub: { timeout: 0 } },
      images: {
        deb: {
          kernel: { path: join(dir, "vmlinuz") },
          initrd: { path: join(dir, "initrd.img") },
          flavour: "initramfs-tools",
          root: "UUID=0b7c1f52-9d1e-4a53-8a55-0d1f0b7c1f52",
          extra_args: ["console=ttyS0,115200"],
        },
      },
      machines: [
        {
          name: "node1",
          macs: [MAC],
          image: "deb",
          initiator_iqn: "iqn.2026-11.lab.netboot:node1",
          volume: {
            resolver: "static",
            portals: ["10.79.0.1:3260"],
            iqn: "iqn.2026-11.lab.netboot:node1-root",
            lun: 1,
            chap: { username: "node1", password: { file: "chap.secret" } },
          },
        },
      ],
    };
    writeFileSync(join(dir, "config.yaml"), stringify(config));

    lab.ns(SRV);
    lab.ns(CL);
    lab.link(SRV, "nbap-s0", "10.79.0.1/24", CL, "nbap-c0", undefined);
    lab.exec(CL, "ip", ["link", "set", "nbap-c0", "down"]);
    lab.exec(CL, "ip", ["link", "set", "nbap-c0", "address", MAC]);
    lab.exec(CL, "ip", ["link", "set", "nbap-c0", "up"]);
    // lab.cleanup() stops it
    output = (await startServe(lab, SRV, join(dir, "config.yaml"), 20_000)).output;
  }, 60_000);

  afterAll(() => {
    if (process.env.NB_DEBUG) console.log(output.join(""));
    lab.cleanup();
  });

  let clientEnv: Record<string, string> = {};

  /** udhcpc as a UEFI client of this architecture and vendor class; returns what its script saw when bound. */
  function udhcpc(
    tag: string,
    arch: string,
    vendorClass: string,
    addAddress: boolean,
  ): Record<string, string> {
    const envFile = join(dir, `udhcpc-${tag}.env`);
    const script = join(dir, `udhcpc-${tag}.sh`);
    const add = addAddress ? 'ip addr add "$ip/24" dev "$interface"; ' : "";
    writeFileSync(script, `#!/bin/sh\nif [ "$1" = bound ]; then ${add}env > ${envFile}; fi\n`, {
      mode: 0o755,
    });
    const args = ["-i", "nbap-c0", "-n", "-q", "-f", "-t", "5", "-T", "1", "-s", script];
    lab.exec(
      CL,
      "udhcpc",
      [...args, "-x", `0x5d:${arch}`, "-V", vendorClass, "-O", "bootfile", "-O", "tftp"],
      {
        timeout: 30_000,
      },
    );
    return Object.fromEntries(
      readFileSync(envFile, "utf8")
        .split("\n")
        .filter((l) => l.includes("="))
        .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
    );
  }

  it("an x64 UEFI PXE client gets its reserved address, shim for x64 and the appliance as next-server", () => {
    clientEnv = udhcpc("pxe", "0007", "PXEClient:Arch:00007:UNDI:003000", true);
    expect(clientEnv.ip).toBe("10.79.0.11");
    expect(clientEnv.boot_file ?? clientEnv.bootfile).toBe("x64/shimx64.efi");
    expect(clientEnv.siaddr).toBe("10.79.0.1");
  });

  async function tftpFromClient(file: string, source?: string): Promise<string> {
    const args = ["netns", "exec", CL, "curl", "-sS", "--max-time", "10"];
    if (source) args.push("--interface", source);
    args.push(`tftp://10.79.0.1/${file}`);
    const { stdout } = await execFileP("ip", args);
    return stdout;
  }

  async function httpFromClient(path: string, source?: string): Promise<string> {
    const args = ["netns", "exec", CL, "curl", "-sS", "--fail", "--max-time", "10"];
    if (source) args.push("--interface", source);
    args.push(`http://10.79.0.1:8080/${path}`);
    const { stdout } = await execFileP("ip", args);
    return stdout;
  }

  it("the machine fetches shim, the master GRUB config and its own boot_iscsi config over TFTP", async () => {
    expect((await tftpFromClient("x64/shimx64.efi")).length).toBe(4096);
    const master = await tftpFromClient("grub/grub.cfg");
    expect(master).toContain("net_default_mac");
    const own = await tftpFromClient(`grub/${MAC}.conf`);
    expect(own).toMatch(/menuentry .*--id boot_iscsi/);
    expect(own).toContain("iscsi_target_name=iqn.2026-11.lab.netboot:node1-root");
    expect(own).toContain("iscsi_initiator=iqn.2026-11.lab.netboot:node1");
    expect(own).toContain(`iscsi_password=${CHAP_SECRET}`);
    expect(await tftpFromClient("images/deb/kernel")).toBe("kernel bytes");
  });

  it("a UEFI HTTP boot client gets the loader's URL on this process's HTTP port; the same names are served there", async () => {
    const env = udhcpc("http", "0010", "HTTPClient:Arch:00016:UNDI:003000", false);
    const url = env.boot_file ?? env.bootfile;
    expect(url).toBe("http://10.79.0.1:8080/x64/shimx64.efi");
    expect((await httpFromClient("x64/shimx64.efi")).length).toBe(4096);
    expect(await httpFromClient(`grub/${MAC}.conf`)).toContain(`iscsi_password=${CHAP_SECRET}`);
    expect(await httpFromClient("images/deb/kernel")).toBe("kernel bytes");
  });

  it("netboot leases lists the machine's lease from the state directory", async () => {
    const { stdout } = await execFileP("node", [CLI, "leases", "--config", join(dir, "config.yaml")]);
    expect(stdout).toMatch(/10\.79\.0\.11\s+52:54:00:79:00:01\s+bound\s+node1/);
  });

  it("refuses the machine's config to any other address", async () => {
    lab.exec(CL, "ip", ["addr", "add", "10.79.0.77/24", "dev", "nbap-c0"]);
    await expect(tftpFromClient(`grub/${MAC}.conf`, "10.79.0.77")).rejects.toThrow();
    await expect(httpFromClient(`grub/${MAC}.conf`, "10.79.0.77")).rejects.toThrow(/403/);
  });

  it("logs one line per DHCP exchange and TFTP transfer, and never the CHAP secret", async () => {
    await new Promise((r) => setTimeout(r, 300));
    const log = output.join("");
    expect(log).toMatch(/"msg":"dhcp exchange"/);
    expect(log).toMatch(/"file":"grub\/52:54:00:79:00:01.conf".*"outcome":"ok"/);
    expect(log).not.toContain(CHAP_SECRET);
    const rendered = await execFileP("node", [
      CLI,
      "render",
      "--mac",
      MAC,
      "--config",
      join(dir, "config.yaml"),
    ]);
    expect(rendered.stdout).toContain("iscsi_password=********");
    expect(`${rendered.stdout}${rendered.stderr}`).not.toContain(CHAP_SECRET);
  });
});
