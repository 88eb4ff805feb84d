/**
 * The .deb (packaging/deb.sh): lintian-clean, installed with dpkg into a clean Debian 13 root
 * (packaging/test-root.sh), where trixie's own nodejs runs it: unconfigured it refuses to serve with the
 * file:line reason; configured it serves TFTP (native addon) and HTTP to real clients; an upgrade keeps
 * the edited config and the leases; purge removes config, program and state. The same for the arm64
 * package (addons cross-compiled) in an arm64 Debian 13 root, run under qemu-user (qemu/binfmt-arm64.sh).
 */
import { execFileSync, spawn, spawnSync } from "node:child_process";
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { packageRoot } from "../../src/package-root.js";
import { commandsAvailable, isRoot, resourceAvailable } from "../support/require.js";

const CACHE = process.env.NETBOOT_LAB_CACHE ?? "/var/cache/netboot-lab";

/** The ELF machine of a shared object: 62 is x86-64, 183 is AArch64. */
function elfMachine(file: Buffer): number {
  return file.readUInt16LE(18);
}

const ARCHES = {
  amd64: { root: "debian13-node", machine: 62, objdump: "objdump", grub: "grub-efi-amd64-signed", ports: 0 },
  arm64: {
    root: "debian13-node-arm64",
    machine: 183,
    objdump: "aarch64-linux-gnu-objdump",
    grub: "grub-efi-arm64-signed",
    ports: 100,
  },
} as const;

function ready(arch: keyof typeof ARCHES): boolean {
  const cleanRoot = join(CACHE, "roots", ARCHES[arch].root);
  return (
    resourceAvailable("root (chroot, dpkg into a root)", isRoot()) &&
    commandsAvailable("dpkg-deb", "lintian", "chroot", "tftp", "curl", "mount", ARCHES[arch].objdump) &&
    (arch === "amd64" || commandsAvailable("aarch64-linux-gnu-gcc")) &&
    resourceAvailable(
      `a clean Debian 13 ${arch} root (${cleanRoot}, built by packaging/test-root.sh ${arch})`,
      existsSync(join(cleanRoot, ".complete")),
    )
  );
}

for (const arch of ["amd64", "arm64"] as const) {
  describe.runIf(ready(arch))(`the ${arch} Debian package`, () => {
    const spec = ARCHES[arch];
    const CLEAN_ROOT = join(CACHE, "roots", spec.root);
    const dir = mkdtempSync(join(tmpdir(), `nbdeb-${arch}-`));
    const root = join(dir, "root");
    let deb = "";
    const inRoot = (...args: string[]) =>
      spawnSync("chroot", [root, ...args], { encoding: "utf8", timeout: 120_000 });

    beforeAll(() => {
      deb = execFileSync("bash", [join(packageRoot(), "packaging/deb.sh"), join(dir, "out"), arch], {
        encoding: "utf8",
      })
        .trim()
        .split("\n")
        .at(-1) as string;
      execFileSync("cp", ["-a", CLEAN_ROOT, root]);
      execFileSync("mount", ["-t", "proc", "proc", join(root, "proc")]);
      copyFileSync(deb, join(root, "tmp/netboot.deb"));
    }, 600_000);
    afterAll(() => {
      spawnSync("umount", ["-l", join(root, "proc")]);
      rmSync(dir, { recursive: true, force: true });
    });

    it("is lintian-clean (overrides carry their reason)", () => {
      expect(deb).toMatch(new RegExp(`netboot-appliance_[^_]+_${arch}\\.deb$`));
      const control = execFileSync("dpkg-deb", ["-f", deb, "Architecture", "Recommends", "Depends"], {
        encoding: "utf8",
      });
      expect(control).toContain(`Architecture: ${arch}`);
      expect(control).toContain(spec.grub);
      expect(control).toMatch(/libc6 \(>= 2\.\d+\)/);
      const out = spawnSync("lintian", ["--tag-display-limit", "0", deb], { encoding: "utf8" });
      const tags = `${out.stdout}`.split("\n").filter((l) => /^[EW]: /.test(l));
      expect(tags).toEqual([]);
      // The one override ships with its reason (the config may hold secrets: 0640).
      const listing = execFileSync("dpkg-deb", ["-c", deb], { encoding: "utf8" });
      expect(listing).toContain("./usr/share/lintian/overrides/netboot-appliance");
      expect(listing).toMatch(/-rw-r----- .* \.\/etc\/netboot-appliance\/config\.yaml/);
    });

    it(`carries the four addons built for ${arch}, needing only libc`, () => {
      for (const addon of ["nbdh_udp", "nbdh_netdev", "nbdh_intake", "nbdh_file"]) {
        const path = join(root, "tmp/x/usr/lib/netboot-appliance/native/build/Release", `${addon}.node`);
        execFileSync("dpkg-deb", ["-x", deb, join(root, "tmp/x")]);
        expect(elfMachine(readFileSync(path)), addon).toBe(spec.machine);
        const dynamic = execFileSync(spec.objdump, ["-p", path], { encoding: "utf8" });
        expect(
          [...dynamic.matchAll(/NEEDED\s+(\S+)/g)].map((m) => m[1]),
          addon,
        ).toEqual(["libc.so.6"]);
      }
      rmSync(join(root, "tmp/x"), { recursive: true, force: true });
    });

    it("installs into a clean Debian 13 root, where an unconfigured appliance refuses with file:line", {
      timeout: 300_000,
    }, () => {
      const install = inRoot("dpkg", "-i", "/tmp/netboot.deb");
      expect(install.status, install.stderr).toBe(0);
      expect(inRoot("node", "--version").stdout).toMatch(/^v20\.(19|[2-9]\d)\./);
      expect(inRoot("netboot", "--help").stdout).toMatch(/^ +serve +run the appliance/m);
      const check = inRoot("netboot", "check-config", "--config", "/etc/netboot-appliance/config.yaml");
      expect(check.status).toBe(2);
      expect(check.stderr + check.stdout).toContain("/etc/netboot-appliance/config.yaml tftp: is required");
      // The dynamic user reads the config through the static group netboot (SupplementaryGroups in the unit).
      expect(inRoot("getent", "group", "netboot").status).toBe(0);
      expect(inRoot("stat", "-c", "%U:%G %a", "/etc/netboot-appliance/config.yaml").stdout.trim()).toBe(
        "root:netboot 640",
      );
      expect(readFileSync(join(root, "lib/systemd/system/netboot-appliance.service"), "utf8")).toContain(
        "ExecStart=/usr/bin/netboot serve --config /etc/netboot-appliance/config.yaml",
      );
    });

    it("configured, it serves TFTP and HTTP with trixie's node and the packaged addon", async () => {
      mkdirSync(join(root, "srv/tftp"), { recursive: true });
      const payload = Buffer.alloc(300_000, 7);
      writeFileSync(join(root, "srv/tftp/payload.bin"), payload);
      writeFileSync(
        join(root, "etc/netboot-appliance/config.yaml"),
        `# edited by the operator\nlisten: { address: 127.0.0.1 }\ndhcp: { mode: off }\ntftp: { root: /srv/tftp, port: ${16969 + spec.ports} }\nhttp: { enable: true, address: 127.0.0.1, port: ${18089 + spec.ports} }\nstate_dir: /var/lib/netboot-appliance\ncache_dir: /var/cache/netboot-appliance\n`,
      );
      // Every addon loads into this architecture's node (the DHCP intake is not used with dhcp off).
      const load = inRoot(
        "node",
        "-e",
        'for (const a of ["nbdh_udp", "nbdh_netdev", "nbdh_intake", "nbdh_file"]) require("/usr/lib/netboot-appliance/native/build/Release/" + a + ".node"); console.log("loaded")',
      );
      expect(load.stdout + load.stderr).toContain("loaded");
      expect(inRoot("netboot", "check-config", "--config", "/etc/netboot-appliance/config.yaml").status).toBe(
        0,
      );
      const child = spawn(
        "chroot",
        [root, "netboot", "serve", "--config", "/etc/netboot-appliance/config.yaml"],
        {
          stdio: ["ignore", "pipe", "pipe"],
        },
      );
      let log = "";
      child.stdout.on("data", (d: Buffer) => {
        log += d.toString();
      });
      try {
        // Under qemu-user (arm64) node starts in seconds, not tenths.
        for (let i = 0; i < 600 && !log.includes("netboot-appliance started"); i++)
          await new Promise((r) => setTimeout(r, 100));
        expect(log).toContain("netboot-appliance started");
        expect(log).toMatch(/"transport":"native"[^\n]*"msg":"tftp listening"/);
        const got = join(dir, "got.bin");
        const tftp = spawnSync(
          "tftp",
          ["-m", "octet", "127.0.0.1", String(16969 + spec.ports), "-c", "get", "payload.bin", got],
          {
            timeout: 30_000,
          },
        );
        expect(tftp.status).toBe(0);
        expect(readFileSync(got).equals(payload)).toBe(true);
        const http = spawnSync("curl", ["-sf", `http://127.0.0.1:${18089 + spec.ports}/payload.bin`], {
          timeout: 30_000,
        });
        expect(http.status).toBe(0);
        expect(Buffer.from(http.stdout).equals(payload)).toBe(true);
      } finally {
        child.kill("SIGTERM");
        await new Promise((r) => child.once("exit", r));
      }
    }, 120_000);

    it("an upgrade keeps the edited config and the leases; purge removes config, program and state", {
      timeout: 300_000,
    }, () => {
      const leases = join(root, "var/lib/netboot-appliance/dhcp-leases.csv");
      mkdirSync(join(root, "var/lib/netboot-appliance"), { recursive: true });
      writeFileSync(leases, "10.0.0.50,52:54:00:00:00:01,1900000000000,b,node1\n");
      const again = inRoot("dpkg", "-i", "/tmp/netboot.deb");
      expect(again.status, again.stderr).toBe(0);
      expect(readFileSync(join(root, "etc/netboot-appliance/config.yaml"), "utf8")).toContain(
        "# edited by the operator",
      );
      expect(readFileSync(leases, "utf8")).toContain("10.0.0.50");
      // A config broken after the upgrade: the service refuses with file:line and leaves the leases alone.
      const good = readFileSync(join(root, "etc/netboot-appliance/config.yaml"), "utf8");
      writeFileSync(join(root, "etc/netboot-appliance/config.yaml"), good.replace("mode: off", "mode: of"));
      const broken = inRoot("netboot", "serve", "--config", "/etc/netboot-appliance/config.yaml");
      expect(broken.status).not.toBe(0);
      expect(broken.stderr + broken.stdout).toMatch(
        /\/etc\/netboot-appliance\/config\.yaml:\d+ dhcp\.mode: /,
      );
      expect(readFileSync(leases, "utf8")).toBe("10.0.0.50,52:54:00:00:00:01,1900000000000,b,node1\n");
      writeFileSync(join(root, "etc/netboot-appliance/config.yaml"), good);
      const purge = inRoot("dpkg", "--purge", "netboot-appliance");
      expect(purge.status, purge.stderr).toBe(0);
      for (const p of [
        "etc/netboot-appliance/config.yaml",
        "usr/lib/netboot-appliance",
        "usr/bin/netboot",
        "var/lib/netboot-appliance",
      ])
        expect(existsSync(join(root, p)), p).toBe(false);
    });
  });
}
