import { execFile } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { ConfigError } from "../../src/config/errors.js";
import { loadConfig } from "../../src/config/load.js";
import { peImage } from "../support/pe.js";

const run = promisify(execFile);
const CLI = join(import.meta.dirname, "../../dist/src/bin.js");

function tempConfig(text: string, files: Record<string, string | Buffer> = {}): string {
  const dir = mkdtempSync(join(tmpdir(), "nb-config-"));
  for (const [name, content] of Object.entries(files)) writeFileSync(join(dir, name), content);
  const file = join(dir, "config.yaml");
  writeFileSync(file, text);
  return file;
}

async function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run("node", [CLI, ...args]);
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

const BROKEN = `tftp:
  root: .
  port: 69
  max_blksise: 1468
dhcp:
  mode: full
  interfaces: [prov0]
  subnets:
    - subnet: 10.0.0.0/24
      range:
        start: 10.0.0.300
        end: 10.0.0.20
boot:
  loaders:
    x64: { shim: x64/shimx64.efi, grub: grubx64.efi }
`;

describe("config errors name the file, the line and the field", () => {
  it("reports a typo'd key, an invalid address and a missing loader, each with its line", () => {
    const file = tempConfig(BROKEN, { "grubx64.efi": peImage(0x8664) });
    let error: ConfigError | undefined;
    try {
      loadConfig(file);
    } catch (err) {
      error = err as ConfigError;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const text = error?.message ?? "";
    expect(text).toContain(`${file}:4 tftp.max_blksise: unknown key`);
    expect(text).toContain(`${file}:11 dhcp.subnets[0].range.start: 10.0.0.300 is not an IPv4 address`);
    // The schema errors come first: the loader check needs a valid config.
    const fixed = tempConfig(
      BROKEN.replace("max_blksise", "max_blksize").replace("10.0.0.300", "10.0.0.10"),
      {
        "grubx64.efi": peImage(0x8664),
      },
    );
    expect(() => loadConfig(fixed)).toThrow(
      /config\.yaml:15 boot\.loaders\.x64\.shim: .*x64\/shimx64\.efi does not exist/,
    );
  });

  it("refuses a loader built for the other architecture", () => {
    const file = tempConfig(
      "tftp: { root: . }\nboot:\n  loaders:\n    aa64: { shim: shim.efi, grub: grub.efi }\n",
      {
        "shim.efi": peImage(0x8664),
        "grub.efi": peImage(0xaa64),
      },
    );
    expect(() => loadConfig(file)).toThrow(/:4 boot\.loaders\.aa64\.shim: .*machine type 0x8664, not aa64/);
  });

  it("reports YAML syntax errors with their line", () => {
    const file = tempConfig("tftp:\n  root: .\n  port: [69\n");
    expect(() => loadConfig(file)).toThrow(/config\.yaml:\d+: /);
  });

  it("refuses YAML that parses but cannot become data (found by fuzzing: an alias without its anchor, an alias bomb)", () => {
    const bomb = `a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n`;
    for (const text of ["tftp: *nothing\n", bomb]) {
      const file = tempConfig(text);
      let err: unknown;
      try {
        loadConfig(file);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(ConfigError);
      expect(String((err as Error).message)).toMatch(new RegExp(`^${file}:1: invalid YAML: `));
    }
  });

  it("netboot check-config exits 2 and prints every problem", async () => {
    const file = tempConfig(BROKEN);
    const result = await cli("check-config", "--config", file);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/config\.yaml:4 tftp\.max_blksise: unknown key/);
    expect(result.stderr).toMatch(
      /config\.yaml:11 dhcp\.subnets\[0\]\.range\.start: 10\.0\.0\.300 is not an IPv4 address/,
    );
  });

  it("netboot check-config accepts a valid config and summarises it", async () => {
    const file = tempConfig("tftp: { root: ., port: 6969 }\n");
    const result = await cli("check-config", "--config", file);
    expect(result.stderr).toBe("");
    expect(result.code).toBe(0);
    expect(result.stdout).toContain("valid");
    expect(result.stdout).toContain("dhcp:      off");
  });

  it("netboot check-config refuses an inconsistent HA pair and summarises a consistent one", async () => {
    const pair = (role: string, backend = "postgres", address = "10.0.0.3") => `tftp: { root: . }
state:
  backend: ${backend}
  url: postgres://netboot:pw@db.example/netboot
ha:
  mode: load-balancing
  this: a
  peers:
    - { name: a, role: primary }
    - { name: b, role: ${role}, address: ${address} }
dhcp:
  mode: full
  interfaces: [lo]
  subnets: [{ subnet: 10.0.0.0/24, range: { start: 10.0.0.10, end: 10.0.0.99 } }]
`;
    const bad = await cli("check-config", "--config", tempConfig(pair("standby", "journal")));
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(
      /config\.yaml:9 ha\.peers: load-balancing needs one primary and one secondary, not primary and standby/,
    );
    expect(bad.stderr).toMatch(
      /config\.yaml:\d+ ha: an HA pair shares its leases: it needs state\.backend postgres/,
    );
    expect(bad.stderr).not.toContain("pw@");
    const badAddress = await cli(
      "check-config",
      "--config",
      tempConfig(pair("secondary", "postgres", "10.0.0.300")),
    );
    expect(badAddress.code).toBe(2);
    expect(badAddress.stderr).toMatch(/config\.yaml:10 ha\.peers\[1\]\.address: is not an IPv4 address/);
    const good = await cli("check-config", "--config", tempConfig(pair("secondary")));
    expect(good.stderr).toBe("");
    expect(good.code).toBe(0);
    expect(good.stdout).toContain(
      "ha:        load-balancing; this a (primary), peer b (secondary); failover after 5000 ms",
    );
    expect(good.stdout).toContain("GRUB asks 10.0.0.3 for a machine's config when this appliance gives none");
    expect(good.stdout).not.toContain("pw@");
  });

  it("secrets come from a file or the environment, and a missing one fails at load", () => {
    const base = `tftp: { root: . }
images:
  img: { kernel: { path: k }, initrd: { path: i }, flavour: dracut }
machines:
  - name: n1
    macs: ["52:54:00:aa:bb:01"]
    volume:
      resolver: static
      portals: ["10.0.0.1:3260"]
      iqn: iqn.2024-01.org.example:n1
      lun: 1
      chap: { username: n1, password: PASSWORD }
`;
    const fromFile = tempConfig(base.replace("PASSWORD", "{ file: chap.secret }"), {
      "chap.secret": "FileSecret1\n",
      k: "k",
      i: "i",
    });
    const machine = loadConfig(fromFile).config.machines?.[0];
    expect(machine?.volume.resolver === "static" && machine.volume.chap?.password).toBe("FileSecret1");

    process.env.NB_TEST_CHAP = "EnvSecret22";
    const fromEnv = tempConfig(base.replace("PASSWORD", "{ env: NB_TEST_CHAP }"), { k: "k", i: "i" });
    const m2 = loadConfig(fromEnv).config.machines?.[0];
    expect(m2?.volume.resolver === "static" && m2.volume.chap?.password).toBe("EnvSecret22");

    const missing = tempConfig(base.replace("PASSWORD", "{ env: NB_TEST_UNSET_VAR }"), { k: "k", i: "i" });
    expect(() => loadConfig(missing)).toThrow(
      /:12 machines\[0\]\.volume\.chap\.password: environment variable NB_TEST_UNSET_VAR is not set/,
    );
  });
});
