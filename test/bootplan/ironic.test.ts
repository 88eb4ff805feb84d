/**
 * The Ironic resolver against the OpenStack fake with its Ironic API (test/support/ironic-fake.ts): nodes
 * found by MAC (ports) and by SMBIOS UUID, boot plans from volume connectors and targets, masked targets
 * resolved through Cinder, every refusal, the cache, and what is kept across a restart.
 */
import { execFile } from "node:child_process";
import { mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { parseDracutCmdline } from "../../src/bootplan/cmdline.js";
import { BootPlan } from "../../src/bootplan/plan.js";
import type { FakeIronicNode } from "../support/ironic-fake.js";
import { type OpenStackFake, startOpenStackFake } from "../support/openstack-fake.js";
import { peImage } from "../support/pe.js";
import { captureLogger, fakeImageFiles, leasedRegistry, planOptionsFromYaml, tempDir } from "./helpers.js";

const execFileP = promisify(execFile);
const CLI = join(import.meta.dirname, "../../dist/src/bin.js");
const KEYSTONE_PASSWORD = "Keystone-Ir0nic-pw";
const CHAP = "IronicChapPw-7rT";
const CINDER_CHAP = "CinderChapPw-2kQ";
const VOL_A = "6f0c7b1e-1a2b-4c3d-8e9f-0a1b2c3d4e5f";
const VOL_M = "9d8c7b6a-5f4e-4d3c-9b2a-1f0e9d8c7b6a";
const KERNEL_ID = "0a0b0c0d-1111-4222-8333-444455556666";
const RAMDISK_ID = "0a0b0c0d-7777-4888-9999-aaaabbbbcccc";
const T_A = `iqn.2010-10.org.openstack:volume-${VOL_A}`;
const T_M = `iqn.2010-10.org.openstack:volume-${VOL_M}`;
const SYS_C = "4c4c4544-0042-3510-8052-b3c04f4a3032";
const CAPS = "iscsi_boot:True,boot_mode:uefi";

const uuid = (n: number) => `00000000-0000-4000-8000-${String(n).padStart(12, "0")}`;
const mac = (n: number) => `52:54:00:bb:00:${n.toString(16).padStart(2, "0")}`;
const iqnOf = (name: string) => `iqn.2026-12.lab.ironic:${name}`;
const bootTarget = (volumeId: string, props: Record<string, unknown>) => ({
  volume_type: "iscsi",
  boot_index: 0,
  volume_id: volumeId,
  properties: props,
});

function node(n: number, name: string, over: Partial<FakeIronicNode> = {}): FakeIronicNode {
  return {
    uuid: uuid(n),
    name,
    properties: { capabilities: CAPS, cpu_arch: "x86_64" },
    ports: [mac(n)],
    connectors: [
      { type: "ip", connector_id: "10.0.0.50" },
      { type: "iqn", connector_id: iqnOf(name) },
    ],
    targets: [bootTarget(VOL_A, { target_portal: "10.0.0.5:3260", target_iqn: T_A, target_lun: 3 })],
    ...over,
  };
}

const NODES: FakeIronicNode[] = [
  // Multipath, CHAP, kernel and ramdisk from instance_info, a second (data) target, two ports.
  node(1, "bm-a", {
    properties: { capabilities: CAPS, cpu_arch: "aarch64" },
    ports: [mac(1), mac(0x11)],
    instance_info: { kernel: KERNEL_ID, ramdisk: RAMDISK_ID },
    targets: [
      bootTarget(VOL_A, {
        target_discovered: false,
        target_portal: "10.0.0.5:3260",
        target_iqn: T_A,
        target_lun: 1,
        target_portals: ["10.0.0.5:3260", "10.0.1.5:3260"],
        target_iqns: [T_A, T_A],
        target_luns: [1, 1],
        auth_method: "CHAP",
        auth_username: "ironicUser",
        auth_password: CHAP,
        volume_id: VOL_A,
        access_mode: "rw",
      }),
      { volume_type: "iscsi", boot_index: 1, volume_id: VOL_M, properties: { target_iqn: T_M } },
    ],
  }),
  // Masked by policy in the masking test: resolved through Cinder as VOL_M.
  node(2, "bm-masked", { targets: [bootTarget(VOL_M, {})] }),
  // Inspection recorded its SMBIOS UUID, and the NIC it boots from is not enrolled as a port.
  node(3, "bm-uuid", { ports: [], properties: { capabilities: CAPS, system_uuid: SYS_C.toUpperCase() } }),
  node(0xe1, "no-volume", { targets: [] }),
  node(0xe2, "fc-volume", { targets: [{ ...bootTarget(VOL_A, {}), volume_type: "fibre_channel" }] }),
  node(0xe3, "two-boot", {
    targets: [
      bootTarget(VOL_A, { target_portal: "10.0.0.5:3260", target_iqn: T_A, target_lun: 1 }),
      bootTarget(VOL_M, { target_portal: "10.0.0.5:3260", target_iqn: T_M, target_lun: 1 }),
    ],
  }),
  node(0xe4, "no-iqn", { connectors: [{ type: "ip", connector_id: "10.0.0.50" }] }),
  node(0xe5, "bios", { properties: { capabilities: "iscsi_boot:True,boot_mode:bios" } }),
  node(0xe6, "unselected", { properties: { capabilities: "boot_mode:uefi" } }),
  node(0xe7, "bad-lun", {
    targets: [bootTarget(VOL_A, { target_portal: "10.0.0.5:3260", target_iqn: T_A, target_lun: -1 })],
  }),
  node(0xe8, "url-kernel", { instance_info: { kernel: "http://example.com/vmlinuz", ramdisk: RAMDISK_ID } }),
];

function yaml(os: OpenStackFake, dir: string, ironic: Record<string, unknown> = {}, cinder = {}) {
  const files = fakeImageFiles(dir, "ironic");
  return stringify({
    boot: { loaders: { x64: { shim: "x64/shimx64.efi", grub: "x64/grubx64.efi" } } },
    images: {
      "ironic-img": {
        flavour: "dracut",
        root: "UUID=3f1e2d4c-5b6a-4978-8a9b-0c1d2e3f4a5b",
        kernel: { path: files.kernel },
        initrd: { path: files.initrd },
        extra_args: ["console=ttyS0,115200"],
      },
    },
    machines: [
      {
        // An inventory entry overrides Ironic for its MAC: pinned address and image, Ironic's volume.
        name: "pinned",
        macs: [mac(0x40)],
        uuid: "11111111-2222-4333-8444-555555555555",
        address: "10.0.0.40",
        image: "ironic-img",
        volume: { resolver: "ironic", node: "bm-masked" },
      },
    ],
    resolvers: {
      cinder: {
        auth_url: os.authUrl,
        auth: {
          type: "password",
          username: "netboot",
          password: KEYSTONE_PASSWORD,
          project_name: "baremetal",
        },
        timeout_ms: 1500,
        retries: 0,
        ...cinder,
      },
      ironic: { image: "ironic-img", ...ironic },
    },
  });
}

describe("Ironic resolver against the Ironic fake", () => {
  const log = captureLogger();
  let os: OpenStackFake;
  let dir: string;
  let plan: BootPlan;
  let owners: Awaited<ReturnType<typeof leasedRegistry>>;
  const ironicCalls = () => os.calls.filter((c) => c.path.startsWith("/baremetal/"));

  beforeAll(async () => {
    owners = await leasedRegistry(log.logger);
    os = await startOpenStackFake({
      password: KEYSTONE_PASSWORD,
      ironic: { nodes: NODES, maxLimit: 2 },
      images: [
        { id: KERNEL_ID, data: Buffer.from("instance_info kernel\n") },
        { id: RAMDISK_ID, data: Buffer.from("instance_info ramdisk\n") },
      ],
      volumes: [
        {
          id: VOL_M,
          connection: {
            target_portal: "10.0.0.6:3260",
            target_iqn: T_M,
            target_lun: 2,
            auth_method: "CHAP",
            auth_username: "cinderUser",
            auth_password: CINDER_CHAP,
          },
          kernelData: Buffer.from("volume kernel\n"),
          initrdData: Buffer.from("volume initrd\n"),
        },
      ],
    });
    dir = tempDir("nbir-");
    plan = new BootPlan(
      planOptionsFromYaml(yaml(os, dir), { cacheDir: join(dir, "cache"), logger: log.logger }),
      owners.registry,
    );
  });
  afterEach(() => {
    os.clearFaults();
    os.ironic?.setMasked(false);
  });
  afterAll(async () => {
    await os?.close();
    await owners?.store.close();
    const text = log.text();
    expect(text).not.toContain(CHAP);
    expect(text).not.toContain(CINDER_CHAP);
    expect(text).not.toContain(KEYSTONE_PASSWORD);
  });

  it("finds the node by MAC through /v1/ports and boots it from its boot_index 0 target (multipath, CHAP)", async () => {
    const r = await plan.render(mac(1));
    expect(r).toMatchObject({ machine: "bm-a", resolver: "ironic", arch: "aa64", fallback: false });
    expect(r.detail).toContain(`ironic node bm-a (${uuid(1)})`);
    const parsed = parseDracutCmdline(r.cmdline);
    expect(parsed.initiator).toBe(iqnOf("bm-a"));
    expect(
      parsed.targets.map((t) => [t.targetIp, t.port, t.lun, t.targetName, t.username, t.password]),
    ).toEqual([
      ["10.0.0.5", "3260", "1", T_A, "ironicUser", CHAP],
      ["10.0.1.5", "3260", "1", T_A, "ironicUser", CHAP],
    ]);
    expect(r.secrets).toEqual([CHAP]);
    // Kernel and ramdisk: instance_info's Glance images, through the cache.
    expect(r.kernelPath).toBe(`glance/${KERNEL_ID}`);
    expect(readFileSync(r.initrdFile, "utf8")).toBe("instance_info ramdisk\n");

    const calls = ironicCalls();
    expect(calls.length).toBeGreaterThanOrEqual(5);
    for (const c of calls) expect(c.headers["x-openstack-ironic-api-version"]).toBe("1.32");
    expect(calls.some((c) => c.path === "/baremetal/v1/ports")).toBe(true);
    expect(calls.some((c) => c.path === `/baremetal/v1/nodes/${uuid(1)}/volume/targets`)).toBe(true);
    // No Cinder call: the target's properties were readable.
    expect(os.calls.some((c) => c.path.startsWith("/volume/"))).toBe(false);
    // Its other port is now known too, without asking again.
    expect(plan.findMachine(mac(0x11))?.name).toBe("bm-a");
    expect(plan.archFor(mac(0x11))).toBe("aa64");
  });

  it("answers from the cache within the TTL: a boot does not wait on Ironic", async () => {
    const before = ironicCalls().length;
    const r = await plan.render(mac(1));
    expect(r.machine).toBe("bm-a");
    expect(ironicCalls().length).toBe(before);
  });

  it("serves the node's config only to the address holding its lease, and asks nothing before refusing", async () => {
    const provider = plan.tftpProvider();
    await owners.lease(mac(1), "10.0.0.31");
    const mine = await provider(`grub/${mac(1)}.conf`, { address: "10.0.0.31", port: 1 });
    expect(mine?.kind).toBe("data");
    await expect(provider(`grub/${mac(1)}.conf`, { address: "10.0.0.99", port: 1 })).rejects.toThrow(
      /served only to the machine's own address/,
    );
  });

  it("resolves a target whose properties policy masks through Cinder, with the node's iqn connector", async () => {
    os.ironic?.setMasked(true);
    const r = await plan.render(mac(2));
    expect(r).toMatchObject({ machine: "bm-masked", resolver: "ironic" });
    expect(r.detail).toContain(`masked: Cinder volume ${VOL_M}`);
    const parsed = parseDracutCmdline(r.cmdline);
    expect(parsed.initiator).toBe(iqnOf("bm-masked"));
    expect(parsed.targets.map((t) => [t.targetIp, t.lun, t.targetName, t.password])).toEqual([
      ["10.0.0.6", "2", T_M, CINDER_CHAP],
    ]);
    const create = os.calls.find((c) => c.method === "POST" && c.path.endsWith("/attachments"));
    expect(create?.body).toMatchObject({
      attachment: { volume_uuid: VOL_M, connector: { initiator: iqnOf("bm-masked"), host: "bm-masked" } },
    });
    // Kernel and initrd: the volume's image metadata (instance_info has none).
    expect(readFileSync(r.kernelFile, "utf8")).toBe("volume kernel\n");
  });

  it("lets an inventory entry override a node: its own MAC, address and image, Ironic's volume", async () => {
    const r = await plan.render(mac(0x40));
    expect(r).toMatchObject({ machine: "pinned", resolver: "ironic" });
    expect(parseDracutCmdline(r.cmdline).initiator).toBe(iqnOf("bm-masked"));
  });

  it("matches option 97 (SMBIOS UUID) against properties.system_uuid when the MAC is no port", async () => {
    const m = mac(0x33);
    await expect(plan.render(m)).rejects.toThrow(/not in the inventory nor in Ironic/);
    owners.registry.noteUuid(m, SYS_C);
    const r = await plan.render(m);
    expect(r.machine).toBe("bm-uuid");
    // The node list was paged (max_limit 2) and every page read.
    const lists = ironicCalls().filter((c) => c.path === "/baremetal/v1/nodes");
    expect(lists.length).toBeGreaterThanOrEqual(Math.ceil(NODES.length / 2));
  });

  it("matches option 97 against the inventory's uuid field too", async () => {
    const m = mac(0x44);
    owners.registry.noteUuid(m, "11111111-2222-4333-8444-555555555555");
    expect((await plan.render(m)).machine).toBe("pinned");
  });

  it.each([
    [0xe1, /no-volume .*has no boot volume \(no volume target with boot_index 0\)/],
    [0xe2, /boot volume target .* is of type fibre_channel, not iscsi/],
    [0xe3, /has 2 volume targets with boot_index 0; exactly one is needed/],
    [0xe4, /has no volume connector of type iqn/],
    [0xe5, /boot_mode bios: only UEFI machines are served/],
    [0xe6, /not selected: properties.capabilities has iscsi_boot:\(unset\)/],
    [0xe7, /target_lun -1 is not a LUN/],
    [0xe8, /instance_info.kernel "http:\/\/example.com\/vmlinuz" is not a Glance image UUID/],
  ])("refuses node %s with a clear reason, logged, and serves nothing", async (n, reason) => {
    await expect(plan.render(mac(n))).rejects.toThrow(reason);
    expect(plan.isKnown(mac(n))).toBe(false);
    expect(
      await plan.tftpProvider()(`grub/${mac(n)}.conf`, { address: "10.0.0.31", port: 1 }),
    ).toBeUndefined();
    expect(log.text()).toMatch(/ironic node not served/);
  });

  it("refuses an unknown MAC, and a hostile answer from Ironic, without crashing", async () => {
    await expect(plan.render(mac(0x77))).rejects.toThrow(/not in the inventory nor in Ironic/);
    os.addFault({ path: /^\/baremetal\/v1\/ports$/, hugeBodyBytes: 12 * 1024 * 1024 });
    await expect(plan.render(mac(0x78))).rejects.toThrow(/over the .*-byte limit/);
  });
});

describe("Ironic answers over time: background refresh, Ironic down, restart", () => {
  const log = captureLogger();
  let os: OpenStackFake;
  let dir: string;
  let owners: Awaited<ReturnType<typeof leasedRegistry>>;
  const ironicCalls = () => os.calls.filter((c) => c.path.startsWith("/baremetal/"));
  const newPlan = (ironic = {}, cinder = {}) =>
    new BootPlan(
      planOptionsFromYaml(yaml(os, dir, { cache_ttl_s: 2, ...ironic }, cinder), {
        cacheDir: join(dir, "cache"),
        stateDir: join(dir, "state"),
        logger: log.logger,
      }),
      owners.registry,
    );

  beforeAll(async () => {
    owners = await leasedRegistry(log.logger);
    os = await startOpenStackFake({
      password: KEYSTONE_PASSWORD,
      ironic: { nodes: NODES, maskTargetProperties: true },
      images: [
        { id: KERNEL_ID, data: Buffer.from("instance_info kernel\n") },
        { id: RAMDISK_ID, data: Buffer.from("instance_info ramdisk\n") },
      ],
      volumes: [
        {
          id: VOL_M,
          connection: { target_portal: "10.0.0.6:3260", target_iqn: T_M, target_lun: 2 },
          kernelData: Buffer.from("volume kernel\n"),
          initrdData: Buffer.from("volume initrd\n"),
        },
      ],
    });
    dir = tempDir("nbir2-");
  });
  afterAll(async () => {
    await os?.close();
    await owners?.store.close();
  });

  it("refreshes in the background after half the TTL, and uses the last answer while Ironic is down", async () => {
    const plan = newPlan();
    await plan.render(mac(2));
    await new Promise((r) => setTimeout(r, 1200)); // past half of the 2 s TTL
    const before = ironicCalls().length;
    const r = await plan.render(mac(2));
    expect(r.fallback).toBe(false);
    await new Promise((r) => setTimeout(r, 300));
    expect(ironicCalls().length).toBeGreaterThan(before); // refreshed behind the answer
    os.addFault({ path: /^\/baremetal\//, status: 503 });
    await new Promise((r) => setTimeout(r, 2100)); // the cached answer expires
    const down = await plan.render(mac(2));
    expect(down).toMatchObject({ machine: "bm-masked", fallback: true });
    expect(log.text()).toContain("ironic unavailable: using the node's last known answer");
    os.clearFaults();
    plan.flush();
  });

  it("keeps Cinder attachments and Ironic answers across a restart (state_dir, mode 0600)", async () => {
    const file = join(dir, "state", "resolver-memory.json");
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const attachments = os.attachments().map((a) => a.id);
    expect(attachments).toHaveLength(1);
    // A new process: Ironic is down, Cinder is up. The node is still served and its attachment reused.
    os.addFault({ path: /^\/baremetal\//, status: 503 });
    const before = os.calls.length;
    const restarted = newPlan();
    const r = await restarted.render(mac(2));
    expect(r).toMatchObject({ machine: "bm-masked", fallback: true });
    const calls = os.calls.slice(before);
    expect(calls.some((c) => c.method === "POST" && c.path.endsWith("/attachments"))).toBe(false);
    expect(calls.some((c) => c.method === "PUT" && c.path.endsWith(`/attachments/${attachments[0]}`))).toBe(
      true,
    );
    expect(os.attachments()).toHaveLength(1);
    os.clearFaults();
    restarted.flush();
  });

  it("with detach_departed, removes the attachment of a node that leaves Ironic, logging it", async () => {
    const plan = newPlan({ cache_ttl_s: 1 }, { detach_departed: true });
    expect(os.attachments()).toHaveLength(1);
    const gone = NODES.find((n) => n.name === "bm-masked") as FakeIronicNode;
    os.ironic?.removeNode(gone.uuid);
    await new Promise((r) => setTimeout(r, 1100));
    await expect(plan.render(mac(2))).rejects.toThrow();
    for (let i = 0; i < 50 && os.attachments().length > 0; i++) await new Promise((r) => setTimeout(r, 50));
    expect(os.attachments()).toHaveLength(0);
    expect(os.calls.some((c) => c.method === "DELETE" && c.path.includes("/attachments/"))).toBe(true);
    expect(log.text()).toContain("cinder attachment removed: the machine left the inventory");
    os.ironic?.setNode(gone);
  });

  it("netboot render --mac shows that Ironic answered, and masks the CHAP secret", async () => {
    const root = join(dir, "tftp");
    mkdirSync(join(root, "x64"), { recursive: true });
    writeFileSync(join(root, "x64/shimx64.efi"), peImage(0x8664));
    writeFileSync(join(root, "x64/grubx64.efi"), peImage(0x8664));
    os.ironic?.setMasked(false);
    const config = {
      ...(JSON.parse(JSON.stringify((await import("yaml")).parse(yaml(os, dir)))) as object),
      tftp: { root },
      state_dir: join(dir, "render-state"),
      cache_dir: join(dir, "render-cache"),
      dhcp: { mode: "off" },
    };
    const file = join(dir, "config.yaml");
    writeFileSync(file, stringify(config));
    const out = await execFileP("node", [CLI, "render", "--mac", mac(1), "--config", file]);
    expect(out.stderr).toMatch(new RegExp(`resolver: {2}ironic: ironic node bm-a \\(${uuid(1)}\\), target`));
    expect(out.stdout).toContain(T_A);
    expect(`${out.stdout}${out.stderr}`).not.toContain(CHAP);
  });
});
