import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import {
  bootConfigSchema,
  cinderSchema,
  deriveInitiatorIqn,
  imagesSchema,
  iscsiNameProblem,
  loadInventoryFile,
  machineSchema,
  machinesSchema,
  parsePortal,
} from "../../src/bootplan/config.js";
import { tempDir } from "./helpers.js";

const base = {
  name: "node-01",
  macs: ["52:54:00:12:34:56"],
  volume: { resolver: "static", portals: ["10.0.0.5:3260"], iqn: "iqn.2024-01.org.example:disk1", lun: 1 },
};

function issues(value: unknown): string[] {
  const r = machineSchema.safeParse(value);
  return r.success ? [] : r.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`);
}

describe("machine schema", () => {
  it("normalises MACs and derives a stable initiator IQN", () => {
    const m = machineSchema.parse({ ...base, name: "Node_01", macs: ["52-54-00-AB-CD-EF"] });
    expect(m.macs).toEqual(["52:54:00:ab:cd:ef"]);
    expect(m.initiator_iqn).toBe("iqn.2024-01.org.netboot-appliance:node-01");
    expect(deriveInitiatorIqn("Node_01")).toBe(m.initiator_iqn);
    if (m.volume.resolver !== "static") throw new Error("static expected");
    expect(m.volume.portals).toEqual([{ host: "10.0.0.5", port: 3260 }]);
  });

  it("reads IPv6 portals in brackets and defaults the port to 3260", () => {
    expect(parsePortal("[fd00::5]:3261")).toEqual({ host: "fd00::5", port: 3261 });
    expect(parsePortal("[fd00::5]")).toEqual({ host: "fd00::5", port: 3260 });
    expect(parsePortal("10.0.0.5")).toEqual({ host: "10.0.0.5", port: 3260 });
    expect(parsePortal("fd00::5:3260")).toMatch(/brackets/);
    expect(parsePortal("10.0.0.300:3260")).toMatch(/not an IPv4/);
    expect(parsePortal("10.0.0.5:70000")).toMatch(/port/);
  });

  it.each([
    ["iqn", { iqn: "IQN.2024-01.org.example:x" }, /iqn\., eui\. or naa\./],
    ["iqn", { iqn: "iqn.2024-13.org.example:x" }, /RFC 3720/],
    ["iqn", { iqn: "iqn.2024-01.org.example:Disk" }, /normalised/],
    ["iqn", { iqn: "iqn.2024-01.org.example:a b" }, /RFC 3720/],
    ["iqn", { iqn: "iqn.2024-01.org.example:x:iqn.2024-01.org.evil" }, /dracut would split/],
    ["iqn", { iqn: "eui.12345" }, /eui\./],
    ["lun", { lun: -1 }, /./],
    ["lun", { lun: 1.5 }, /./],
    ["portals.0", { portals: ["fd00::1:3260"] }, /brackets/],
    ["portals", { portals: [] }, /./],
  ])("refuses a bad %s", (field, volume, message) => {
    const found = issues({ ...base, volume: { ...base.volume, ...volume } });
    expect(found.some((i) => i.startsWith(`volume.${field}`) && message.test(i))).toBe(true);
  });

  it.each([
    "pass word",
    "pa'ss",
    'pa"ss',
    "pa\\ss",
    "pa$ss",
    "pa*ss",
    "pa?ss",
    "pa[ss",
    "p@ss",
    "pa:ss",
    "päss",
  ])("refuses the CHAP password %j without echoing it", (password) => {
    const found = issues({ ...base, volume: { ...base.volume, chap: { username: "u", password } } });
    expect(found.length).toBeGreaterThan(0);
    expect(found.join("\n")).toMatch(/volume\.chap\.password: CHAP password contains a character/);
    expect(found.join("\n")).not.toContain(password);
  });

  it("takes CHAP secrets from a file or the environment", () => {
    const file = join(tempDir(), "chap.secret");
    writeFileSync(file, "fromFile-123\n");
    process.env.NBBP_TEST_CHAP = "fromEnv-456";
    const m = machineSchema.parse({
      ...base,
      volume: {
        ...base.volume,
        chap: { username: "u", password: { file }, in_username: "t", in_password: { env: "NBBP_TEST_CHAP" } },
      },
    });
    if (m.volume.resolver !== "static") throw new Error("static expected");
    expect(m.volume.chap).toEqual({
      username: "u",
      password: "fromFile-123",
      in_username: "t",
      in_password: "fromEnv-456",
    });
    // A secret from a file is validated like an inline one.
    writeFileSync(file, "bad secret\n");
    expect(
      issues({ ...base, volume: { ...base.volume, chap: { username: "u", password: { file } } } }).join(),
    ).toMatch(/CHAP password/);
  });

  it("refuses a target IQN ending in ':' (found by fuzzing: open-iscsi's initramfs cuts it off)", () => {
    expect(iscsiNameProblem("iqn.2000-01.a.a::")).toMatch(/ends with ':'/);
    expect(iscsiNameProblem("iqn.2000-01.a.a:b:c")).toBeUndefined();
  });

  it("refuses mutual CHAP with only one half", () => {
    expect(
      issues({
        ...base,
        volume: { ...base.volume, chap: { username: "u", password: "p", in_username: "t" } },
      }).join(),
    ).toMatch(/go together/);
  });

  it("refuses unknown keys and bad MACs", () => {
    expect(issues({ ...base, macs: ["52:54:00:12:34"] }).join()).toMatch(/macs.0: .* is not a MAC/);
    expect(issues({ ...base, imgae: "x" }).join()).toMatch(/imgae/);
  });

  it("refuses the same MAC, name or derived initiator on two machines", () => {
    const r = machinesSchema.safeParse([base, { ...base, name: "node_01", macs: ["52:54:00:12:34:56"] }]);
    expect(r.success).toBe(false);
    const text = r.success ? "" : r.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("\n");
    expect(text).toMatch(/1\.macs\.0: MAC 52:54:00:12:34:56 is also used by machine #1/);
    expect(text).toMatch(/1\.initiator_iqn/);
  });

  it("loads an inventory file with the same schema, naming the file and field", () => {
    const dir = tempDir();
    const good = join(dir, "inventory.yaml");
    writeFileSync(
      good,
      "- name: a\n  macs: [52:54:00:00:00:01]\n  volume: { resolver: cinder, volume_id: 4f1c2b9e-2d7a-4c55-9a0e-2c1f3e4d5a6b }\n",
    );
    expect(loadInventoryFile(good)[0]?.name).toBe("a");
    const bad = join(dir, "bad.yaml");
    writeFileSync(
      bad,
      "machines:\n  - name: a\n    macs: [nope]\n    volume: { resolver: cinder, volume_id: x }\n",
    );
    expect(() => loadInventoryFile(bad)).toThrow(/bad\.yaml: machines\.0\.macs\.0: "nope" is not a MAC/);
  });
});

describe("images, boot and cinder sections", () => {
  it("defaults ip to dhcp and refuses unsafe kernel arguments", () => {
    const ok = imagesSchema.parse({
      deb: { kernel: { path: "/k" }, initrd: { path: "/i" }, flavour: "dracut" },
    });
    expect(ok.deb?.ip).toBe("dhcp");
    expect(ok.deb?.extra_args).toEqual([]);
    const bad = imagesSchema.safeParse({
      deb: {
        kernel: { path: "/k" },
        initrd: { path: "/i" },
        flavour: "dracut",
        extra_args: ["quiet splash"],
      },
    });
    expect(bad.success).toBe(false);
  });

  it("normalises loader paths and refuses escapes from the TFTP root", () => {
    const b = bootConfigSchema.parse({
      loaders: { x64: { shim: "/x64/shimx64.efi", grub: "x64/grubx64.efi" } },
    });
    expect(b.loaders.x64?.shim).toBe("x64/shimx64.efi");
    expect(b.grub.timeout).toBe(5);
    expect(
      bootConfigSchema.safeParse({ loaders: { x64: { shim: "../etc/shadow", grub: "g" } } }).success,
    ).toBe(false);
  });

  it("accepts both Keystone auth types with defaults", () => {
    const c = cinderSchema.parse({
      auth_url: "http://keystone:5000/v3",
      auth: { type: "application_credential", id: "abc", secret: "s" },
    });
    expect(c).toMatchObject({ interface: "public", timeout_ms: 5000, retries: 2, microversion: "3.44" });
    const p = cinderSchema.parse({
      auth_url: "http://keystone:5000/v3",
      auth: { type: "password", username: "u", password: "p", project_name: "x" },
    });
    expect(p.auth).toMatchObject({ user_domain_name: "Default", project_domain_name: "Default" });
  });
});
