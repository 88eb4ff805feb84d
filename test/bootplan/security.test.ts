import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BootPlan } from "../../src/bootplan/plan.js";
import { LeaseStore } from "../../src/dhcp/leases.js";
import { scrubLine } from "../../src/log.js";
import { MachineRegistry } from "../../src/machines/registry.js";
import { type OpenStackFake, startOpenStackFake } from "../support/openstack-fake.js";
import { captureLogger, fakeImageFiles, leasedRegistry, planOptionsFromYaml, tempDir } from "./helpers.js";

/**
 * Secrets go only to their owner: a config with a CHAP secret is served only to the address that holds
 * the machine's lease (or its pinned inventory address), never by default; and no secret reaches a log.
 */
const STATIC_CHAP = "StaticChap-Secret1";
const STATIC_IN = "StaticChap-Reverse2";
const CINDER_CHAP = "CinderChap-Secret3";
const KEYSTONE = "Keystone-Secret4";
const BAD_CINDER_CHAP = "bad@chap:secret5";
const VOL = "4f1c2b9e-2d7a-4c55-9a0e-2c1f3e4d5a6b";
const VOL_BAD = "7a3d0c11-5e2b-4f9a-8c1d-0b2e3f4a5c6d";
const S1 = "52:54:00:bb:00:01";
const C1 = "52:54:00:bb:00:02";
const C2 = "52:54:00:bb:00:03";
const PINNED = "52:54:00:bb:00:04";
const PLAIN = "52:54:00:bb:00:05";
const RANDOM = "52:54:00:ee:ee:ee";

const client = (address: string) => ({ address, port: 2000 });
const conf = (mac: string) => `grub/${mac}.conf`;

describe("security: secrets stay out of logs, configs go only to their machine", () => {
  const log = captureLogger();
  let os: OpenStackFake;
  let yaml: string;
  let cacheDir: string;
  let owners: Awaited<ReturnType<typeof leasedRegistry>>;
  let plan: BootPlan;
  let provide: ReturnType<BootPlan["tftpProvider"]>;
  const planWith = (registry: MachineRegistry, text = yaml) =>
    new BootPlan(planOptionsFromYaml(text, { cacheDir, logger: log.logger }), registry);
  const refusals = () => log.lines().filter((l) => String(l.msg).startsWith("machine config refused"));

  beforeAll(async () => {
    const files = fakeImageFiles(tempDir());
    cacheDir = tempDir();
    const connection = (id: string, password: string) => ({
      target_portal: "10.0.0.5:3260",
      target_iqn: `iqn.2010-10.org.openstack:volume-${id}`,
      target_lun: 1,
      auth_method: "CHAP" as const,
      auth_username: "cuser",
      auth_password: password,
    });
    os = await startOpenStackFake({
      password: KEYSTONE,
      volumes: [
        { id: VOL, connection: connection(VOL, CINDER_CHAP) },
        { id: VOL_BAD, connection: connection(VOL_BAD, BAD_CINDER_CHAP) },
      ],
    });
    const chap = `chap: { username: su, password: ${STATIC_CHAP}, in_username: tu, in_password: ${STATIC_IN} }`;
    yaml = `
boot:
  loaders: { x64: { shim: x64/shimx64.efi, grub: x64/grubx64.efi } }
  default_machine: s1
images:
  img: { kernel: { path: ${files.kernel} }, initrd: { path: ${files.initrd} }, flavour: initramfs-tools, root: UUID=1234 }
machines:
  - name: s1
    macs: [${S1}]
    volume: { resolver: static, portals: [10.0.0.5], iqn: iqn.2024-01.org.example:s1, lun: 1, ${chap} }
  - name: c1
    macs: [${C1}]
    volume: { resolver: cinder, volume_id: ${VOL} }
  - name: c2
    macs: [${C2}]
    volume: { resolver: cinder, volume_id: ${VOL_BAD} }
  - name: pinned
    macs: [${PINNED}]
    address: 10.0.0.44
    volume: { resolver: static, portals: [10.0.0.5], iqn: iqn.2024-01.org.example:pinned, lun: 1, ${chap} }
  - name: plain
    macs: [${PLAIN}]
    volume: { resolver: static, portals: [10.0.0.5], iqn: iqn.2024-01.org.example:plain, lun: 1 }
resolvers:
  cinder:
    auth_url: ${os.authUrl}
    auth: { type: password, username: netboot, password: ${KEYSTONE}, project_name: baremetal }
    timeout_ms: 1500
    retries: 0
`;
    owners = await leasedRegistry(log.logger);
    plan = planWith(owners.registry);
    provide = plan.tftpProvider();
  });
  afterAll(async () => {
    await owners?.store.close();
    await os?.close();
  });

  it("refuses a config with a secret while the machine holds no lease, and says why", async () => {
    await expect(provide(conf(S1), client("10.0.0.31"))).rejects.toThrow(/only to the machine's own address/);
    expect(refusals().at(-1)).toMatchObject({ mac: S1, client: "10.0.0.31", machine: "s1" });
    expect(String(refusals().at(-1)?.reason)).toMatch(/holds no current lease/);
  });

  it("serves it to the lease's address only, and follows the lease when it moves", async () => {
    await owners.lease(S1, "10.0.0.31");
    await expect(provide(conf(S1), client("10.0.0.32"))).rejects.toThrow(/only to the machine's own address/);
    await expect(provide(conf(S1), client("127.0.0.1"))).rejects.toThrow();
    const ok = await provide(conf(S1), client("10.0.0.31"));
    expect(ok?.kind === "data" && ok.data.toString()).toContain(`iscsi_password=${STATIC_CHAP}`);
    await owners.lease(S1, "10.0.0.40");
    await expect(provide(conf(S1), client("10.0.0.31"))).rejects.toThrow();
    expect(await provide(conf(S1), client("10.0.0.40"))).toMatchObject({ kind: "data" });
  });

  it("after a restart, ownership comes back from the lease journal", async () => {
    const dir = tempDir("nbbp-restart-");
    const first = await LeaseStore.open(dir, log.logger);
    await first.commit([{ address: "10.0.0.50", mac: S1, expires: Date.now() + 60_000, state: "bound" }]);
    await first.close();
    const reopened = await LeaseStore.open(dir, log.logger);
    const restarted = planWith(new MachineRegistry({ role: "full", leases: reopened })).tftpProvider();
    expect(await restarted(conf(S1), client("10.0.0.50"))).toMatchObject({ kind: "data" });
    await expect(restarted(conf(S1), client("10.0.0.51"))).rejects.toThrow();
    await reopened.close();
  });

  it("RELEASE, expiry and the address going to another MAC each end the binding", async () => {
    await owners.lease(S1, "10.0.0.60");
    await owners.release(S1);
    await expect(provide(conf(S1), client("10.0.0.60"))).rejects.toThrow();

    await owners.lease(S1, "10.0.0.61", 150);
    expect(await provide(conf(S1), client("10.0.0.61"))).toMatchObject({ kind: "data" });
    await new Promise((r) => setTimeout(r, 200));
    await expect(provide(conf(S1), client("10.0.0.61"))).rejects.toThrow();
    expect(String(refusals().at(-1)?.reason)).toMatch(/holds no current lease/);

    // The next machine given the address cannot read the previous machine's config.
    await owners.lease(S1, "10.0.0.62");
    await owners.store.commit([
      { address: "10.0.0.62", mac: "52:54:00:99:99:99", expires: Date.now() + 60_000, state: "bound" },
    ]);
    await expect(provide(conf(S1), client("10.0.0.62"))).rejects.toThrow();
  });

  it("a MAC not in the inventory gets the default machine's config only through its own lease", async () => {
    await expect(provide(conf(RANDOM), client("10.0.0.70"))).rejects.toThrow();
    await owners.lease(RANDOM, "10.0.0.70");
    const ok = await provide(conf(RANDOM), client("10.0.0.70"));
    expect(ok?.kind === "data" && ok.data.toString()).toContain(
      "iscsi_target_name=iqn.2024-01.org.example:s1",
    );
  });

  it("a refused Cinder machine costs no Cinder call (no attachment is made for a stranger)", async () => {
    const before = os.calls.length;
    await expect(provide(conf(C1), client("10.0.0.33"))).rejects.toThrow();
    expect(os.calls.length).toBe(before);
  });

  it("proxy and off mode: a pinned address is the owner; without a pin a secret is never served", async () => {
    for (const role of ["proxy", "off"] as const) {
      // Leases in the store prove nothing in these modes: the site's DHCP server gives the addresses.
      const p = planWith(new MachineRegistry({ role, leases: owners.store })).tftpProvider();
      await owners.lease(S1, "10.0.0.80");
      await expect(p(conf(S1), client("10.0.0.80"))).rejects.toThrow();
      expect(String(refusals().at(-1)?.reason)).toMatch(
        new RegExp(`dhcp mode ${role}: .*machines\\[\\]\\.address`),
      );
      expect(await p(conf(PINNED), client("10.0.0.44"))).toMatchObject({ kind: "data" });
      await expect(p(conf(PINNED), client("10.0.0.45"))).rejects.toThrow();
      // A config without a secret, for a machine nobody is known to hold, is still served.
      expect(await p(conf(PLAIN), client("10.0.0.99"))).toMatchObject({ kind: "data" });
    }
  });

  it("full mode: a pinned address and the lease must agree", async () => {
    await owners.lease(PINNED, "10.0.0.46");
    await expect(provide(conf(PINNED), client("10.0.0.46"))).rejects.toThrow();
    await expect(provide(conf(PINNED), client("10.0.0.44"))).rejects.toThrow();
    expect(String(refusals().at(-1)?.reason)).toMatch(/disagree/);
    await owners.lease(PINNED, "10.0.0.44");
    expect(await provide(conf(PINNED), client("10.0.0.44"))).toMatchObject({ kind: "data" });
  });

  it("a config without a secret goes to its owner only once an owner is known", async () => {
    expect(await provide(conf(PLAIN), client("10.0.0.90"))).toMatchObject({ kind: "data" });
    await owners.lease(PLAIN, "10.0.0.91");
    await expect(provide(conf(PLAIN), client("10.0.0.90"))).rejects.toThrow();
    expect(await provide(conf(PLAIN), client("10.0.0.91"))).toMatchObject({ kind: "data" });
  });

  it("drives every logging path with secrets in play", async () => {
    await owners.lease(C1, "10.0.0.33");
    await owners.lease(C2, "10.0.0.34");
    await provide(conf(C1), client("10.0.0.33")); // cinder ok, token issued
    os.addFault({ path: /\/volumes\//, status: 503 });
    await provide(conf(C1), client("10.0.0.33")); // last known good fallback
    os.clearFaults();
    os.expireTokens();
    await provide(conf(C1), client("10.0.0.33")); // 401, re-authentication
    expect(await provide(conf(C2), client("10.0.0.34"))).toBeUndefined(); // unusable CHAP from Cinder
    const lines = log.lines();
    expect(lines.some((l) => l.msg === "cinder unavailable: using the last known good connection info")).toBe(
      true,
    );
    expect(lines.some((l) => l.msg === "openstack answered 401: re-authenticating once")).toBe(true);
    const refusal = lines.find((l) => l.msg === "no boot config for machine" && l.mac === C2);
    expect(String(refusal?.reason)).toMatch(/machine c2: cinder auth_password contains a character/);
  });

  it("secrets learned at run time (Cinder CHAP, Keystone tokens) are masked in every log line", () => {
    const tokens = os.issuedTokens();
    expect(tokens.length).toBeGreaterThan(0);
    for (const secret of [CINDER_CHAP, ...tokens]) {
      const line = scrubLine(`{"msg":"oops","detail":"value ${secret} here"}`);
      expect(line).not.toContain(secret);
      expect(line).toContain("[REDACTED]");
    }
  });

  it("no secret appears anywhere in the log", () => {
    const text = log.text();
    expect(text.length).toBeGreaterThan(500);
    for (const secret of [STATIC_CHAP, STATIC_IN, CINDER_CHAP, KEYSTONE, BAD_CINDER_CHAP])
      expect(text).not.toContain(secret);
    expect(text).not.toMatch(/gAAAAA[0-9a-f]{8}/);
  });
});
