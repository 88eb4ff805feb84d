import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BootPlan } from "../../src/bootplan/plan.js";
import { type OpenStackFake, startOpenStackFake } from "../support/openstack-fake.js";
import { captureLogger, fakeImageFiles, planOptionsFromYaml, tempDir } from "./helpers.js";

/** Every path of the boot plan that logs, fed with secrets; none may appear in the log. */
const STATIC_CHAP = "StaticChap-Secret1";
const STATIC_IN = "StaticChap-Reverse2";
const CINDER_CHAP = "CinderChap-Secret3";
const KEYSTONE = "Keystone-Secret4";
const BAD_CINDER_CHAP = "bad@chap:secret5";
const VOL = "4f1c2b9e-2d7a-4c55-9a0e-2c1f3e4d5a6b";
const VOL_BAD = "7a3d0c11-5e2b-4f9a-8c1d-0b2e3f4a5c6d";

describe("security: secrets stay out of logs, configs go only to their machine", () => {
  const log = captureLogger();
  let os: OpenStackFake;
  let plan: BootPlan;
  const client = (address: string) => ({ address, port: 2000 });

  beforeAll(async () => {
    const files = fakeImageFiles(tempDir());
    const conn = (id: string, password: string) => ({
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
        { id: VOL, connection: conn(VOL, CINDER_CHAP) },
        { id: VOL_BAD, connection: conn(VOL_BAD, BAD_CINDER_CHAP) },
      ],
    });
    const yaml = `
boot:
  loaders: { x64: { shim: x64/shimx64.efi, grub: x64/grubx64.efi } }
images:
  img: { kernel: { path: ${files.kernel} }, initrd: { path: ${files.initrd} }, flavour: initramfs-tools, root: UUID=1234 }
machines:
  - name: s1
    macs: [52:54:00:bb:00:01]
    volume: { resolver: static, portals: [10.0.0.5], iqn: iqn.2024-01.org.example:s1, lun: 1,
              chap: { username: su, password: ${STATIC_CHAP}, in_username: tu, in_password: ${STATIC_IN} } }
  - name: c1
    macs: [52:54:00:bb:00:02]
    volume: { resolver: cinder, volume_id: ${VOL} }
  - name: c2
    macs: [52:54:00:bb:00:03]
    volume: { resolver: cinder, volume_id: ${VOL_BAD} }
resolvers:
  cinder:
    auth_url: ${os.authUrl}
    auth: { type: password, username: netboot, password: ${KEYSTONE}, project_name: baremetal }
    timeout_ms: 1500
    retries: 0
`;
    plan = new BootPlan(planOptionsFromYaml(yaml, { cacheDir: tempDir(), logger: log.logger }));
  });
  afterAll(async () => os?.close());

  it("refuses a machine's config to any address but the one DHCP gave it", async () => {
    plan.noteBinding("52:54:00:bb:00:01", "10.0.0.31");
    const provide = plan.tftpProvider();
    await expect(provide("grub/52:54:00:bb:00:01.conf", client("10.0.0.32"))).rejects.toThrow(
      /only to the machine's own address/,
    );
    await expect(provide("grub/52:54:00:bb:00:01.conf", client("127.0.0.1"))).rejects.toThrow();
    const ok = await provide("grub/52:54:00:bb:00:01.conf", client("10.0.0.31"));
    expect(ok?.kind === "data" && ok.data.toString()).toContain(`iscsi_password=${STATIC_CHAP}`);
    // The binding follows the machine when DHCP gives it a new address.
    plan.noteBinding("52:54:00:bb:00:01", "10.0.0.40");
    await expect(provide("grub/52:54:00:bb:00:01.conf", client("10.0.0.31"))).rejects.toThrow();
  });

  it("drives every logging path with secrets in play", async () => {
    const provide = plan.tftpProvider();
    await provide("grub/52:54:00:bb:00:02.conf", client("10.0.0.33")); // cinder ok, token issued
    os.addFault({ path: /\/volumes\//, status: 503 });
    await provide("grub/52:54:00:bb:00:02.conf", client("10.0.0.33")); // last known good fallback
    os.clearFaults();
    os.expireTokens();
    await provide("grub/52:54:00:bb:00:02.conf", client("10.0.0.33")); // 401, re-authentication
    expect(await provide("grub/52:54:00:bb:00:03.conf", client("10.0.0.34"))).toBeUndefined(); // unusable CHAP from Cinder
    const lines = log.lines();
    expect(lines.some((l) => l.msg === "cinder unavailable: using the last known good connection info")).toBe(
      true,
    );
    expect(lines.some((l) => l.msg === "openstack answered 401: re-authenticating once")).toBe(true);
    const refusal = lines.find(
      (l) => l.msg === "no boot config for machine" && l.mac === "52:54:00:bb:00:03",
    );
    expect(String(refusal?.reason)).toMatch(/machine c2: cinder auth_password contains a character/);
  });

  it("no secret appears anywhere in the log", () => {
    const text = log.text();
    expect(text.length).toBeGreaterThan(500);
    for (const secret of [STATIC_CHAP, STATIC_IN, CINDER_CHAP, KEYSTONE, BAD_CINDER_CHAP])
      expect(text).not.toContain(secret);
    expect(text).not.toMatch(/gAAAAA[0-9a-f]{8}/);
  });
});
