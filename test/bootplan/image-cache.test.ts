import { createHash, randomUUID } from "node:crypto";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cinderSchema } from "../../src/bootplan/config.js";
import { ImageCache } from "../../src/bootplan/image-cache.js";
import { GlanceClient } from "../../src/bootplan/openstack/glance.js";
import { KeystoneSession } from "../../src/bootplan/openstack/keystone.js";
import { BootPlan } from "../../src/bootplan/plan.js";
import { type OpenStackFake, startOpenStackFake } from "../support/openstack-fake.js";
import { captureLogger, planOptionsFromYaml, tempDir } from "./helpers.js";

describe("Glance image cache", () => {
  let os: OpenStackFake;
  const log = captureLogger();
  const kernelId = randomUUID();
  const initrdId = randomUUID();
  // Large enough that concurrent requests overlap with the download.
  const initrd = Buffer.alloc(8 * 1024 * 1024, 7);
  let glance: GlanceClient;

  beforeAll(async () => {
    os = await startOpenStackFake({
      images: [
        { id: kernelId, data: Buffer.from("kernel v1\n") },
        { id: initrdId, data: initrd, os_hash_algo: "sha256" },
      ],
    });
    const cfg = cinderSchema.parse({
      auth_url: os.authUrl,
      auth: { type: "password", username: "netboot", password: "keystone-secret", project_name: "baremetal" },
      timeout_ms: 5000,
      retries: 0,
    });
    glance = new GlanceClient(new KeystoneSession(cfg, log.logger), cfg.timeout_ms);
  });
  afterAll(async () => os?.close());

  /** A static machine whose kernel and initrd come from Glance by id, reached through the fake's Keystone. */
  const glanceMachineYaml = (kernel: string | undefined, initrd: string | undefined, mac: string) => `
boot:
  loaders: { x64: { shim: x64/shimx64.efi, grub: x64/grubx64.efi } }
images:
  g: { kernel: { glance_id: ${kernel} }, initrd: { glance_id: ${initrd} }, flavour: dracut, root: UUID=1 }
machines:
  - { name: s1, macs: [${mac}], volume: { resolver: static, portals: [10.0.0.5], iqn: iqn.2024-01.org.example:s1, lun: 1 } }
resolvers:
  cinder:
    auth_url: ${os.authUrl}
    auth: { type: password, username: netboot, password: keystone-secret, project_name: baremetal }
`;

  it("ten concurrent requests for one image download it once, verified, atomically", async () => {
    const dir = tempDir();
    const cache = new ImageCache(dir, glance, log.logger);
    const before = os.calls.length;
    const results = await Promise.all(Array.from({ length: 10 }, () => cache.get(initrdId)));
    expect(new Set(results.map((r) => r.path)).size).toBe(1);
    const file = results[0]?.path ?? "";
    expect(createHash("sha256").update(readFileSync(file)).digest("hex")).toBe(
      createHash("sha256").update(initrd).digest("hex"),
    );
    expect(os.calls.slice(before).filter((c) => c.path.endsWith("/file"))).toHaveLength(1);
    expect(readdirSync(join(dir, "glance", initrdId))).toEqual([file.split("/").pop()]);
  });

  it("a restarted appliance with Glance down serves what it cached before", async () => {
    const dir = tempDir();
    await new ImageCache(dir, glance, log.logger).get(kernelId);
    os.addFault({ path: /^\/image\//, status: 500 });
    const again = await new ImageCache(dir, glance, log.logger).get(kernelId);
    os.clearFaults();
    expect(again.fallback).toBe(true);
    expect(readFileSync(again.path, "utf8")).toBe("kernel v1\n");
    // With nothing cached, the error stands.
    os.addFault({ path: /^\/image\//, status: 500 });
    await expect(new ImageCache(tempDir(), glance, log.logger).get(kernelId)).rejects.toThrow(/HTTP 500/);
    os.clearFaults();
  });

  it("a truncated download is refused and leaves no file", async () => {
    const dir = tempDir();
    const cache = new ImageCache(dir, glance, log.logger);
    os.addFault({ path: /\/file$/, reset: true, times: 1 });
    await expect(cache.get(initrdId)).rejects.toThrow();
    expect(readdirSync(join(dir, "glance", initrdId))).toEqual([]);
  });

  it("a slow but live download may take longer than timeout_ms; a stalled one may not", async () => {
    const cfg = cinderSchema.parse({
      auth_url: os.authUrl,
      auth: { type: "password", username: "netboot", password: "keystone-secret", project_name: "baremetal" },
      timeout_ms: 1000,
      retries: 0,
    });
    const slowGlance = new GlanceClient(new KeystoneSession(cfg, log.logger), cfg.timeout_ms);
    const id = randomUUID();
    os.setImage({ id, data: Buffer.alloc(64 * 1024, 3), trickle: { chunkBytes: 4096, delayMs: 150 } });
    const started = Date.now();
    const got = await new ImageCache(tempDir(), slowGlance, log.logger).get(id);
    expect(Date.now() - started).toBeGreaterThan(2000);
    expect(readFileSync(got.path).length).toBe(64 * 1024);
    os.setImage({ id, data: Buffer.alloc(16 * 1024, 4), trickle: { chunkBytes: 8192, delayMs: 2500 } });
    await expect(new ImageCache(tempDir(), slowGlance, log.logger).get(id)).rejects.toThrow(/[Tt]imeout/);
  });

  it("static machines can take kernel and initrd from Glance by id", async () => {
    const yaml = glanceMachineYaml(kernelId, initrdId, "52:54:00:cc:00:01");
    const plan = new BootPlan(planOptionsFromYaml(yaml, { cacheDir: tempDir(), logger: log.logger }));
    const r = await plan.render("52:54:00:cc:00:01");
    expect(r.kernelPath).toBe(`glance/${kernelId}`);
    expect(r.grubConfig).toContain(`linux '/glance/${kernelId}'`);
    expect(readFileSync(r.kernelFile, "utf8")).toBe("kernel v1\n");
    expect(await plan.tftpProvider()(`glance/${initrdId}`, { address: "10.0.0.1", port: 1 })).toEqual({
      kind: "file",
      path: r.initrdFile,
    });
  });

  describe("Glance metadata is untrusted input", () => {
    it("an os_hash_value that is a path never names a file outside the cache, and nothing is served", async () => {
      // A readable file where the traversal would land: the old cache took it as "already cached".
      const dir = tempDir();
      const id = randomUUID();
      const bait = join(dir, "bait");
      writeFileSync(bait, "host secret\n");
      for (const value of ["/../../../bait", "../../../bait", "a".repeat(127) + "/", "A".repeat(128)]) {
        os.setImage({ id, data: Buffer.from("kernel\n"), os_hash_algo: "sha512", os_hash_value: value });
        const cache = new ImageCache(join(dir, "cache"), glance, log.logger);
        await expect(cache.get(id)).rejects.toThrow(/os_hash_value is not a sha512 digest/);
      }
      os.setImage({ id, data: Buffer.from("kernel\n"), os_hash_algo: "sha224", os_hash_value: "00" });
      await expect(new ImageCache(join(dir, "cache"), glance, log.logger).get(id)).rejects.toThrow(
        /os_hash_algo .* is not supported/,
      );
      // The TFTP path of that image gets nothing either (no cached version exists).
      const yaml = glanceMachineYaml(id, id, "52:54:00:cc:00:09");
      const plan = new BootPlan(
        planOptionsFromYaml(yaml, { cacheDir: join(dir, "cache"), logger: log.logger }),
      );
      await expect(plan.render("52:54:00:cc:00:09")).rejects.toThrow(/os_hash_algo/);
      expect(await plan.tftpProvider()(`glance/${id}`, { address: "10.0.0.1", port: 1 })).toBeUndefined();
      expect(readFileSync(bait, "utf8")).toBe("host secret\n");
    });

    it("a cached file that no longer matches its digest is removed and fetched again, never served", async () => {
      const dir = tempDir();
      const first = await new ImageCache(dir, glance, log.logger).get(initrdId);
      writeFileSync(first.path, "tampered on disk");
      const again = await new ImageCache(dir, glance, log.logger).get(initrdId);
      expect(again.path).toBe(first.path);
      expect(readFileSync(again.path).equals(initrd)).toBe(true);
      expect(log.text()).toContain("cached image does not match its digest");
      // With Glance down, a tampered file is not the fallback either.
      writeFileSync(first.path, "tampered again");
      os.addFault({ path: /^\/image\//, status: 503 });
      await expect(new ImageCache(dir, glance, log.logger).get(initrdId)).rejects.toThrow(/HTTP 503/);
      os.clearFaults();
    });

    it("an image over the size limit is refused before downloading; one that lies about its size is cut off", async () => {
      const id = randomUUID();
      os.setImage({ id, data: Buffer.alloc(4096, 1), claimedSize: 10 ** 15 });
      const limits = { maxBytes: 1024 * 1024, downloadTimeoutMs: 10_000 };
      const before = os.calls.length;
      await expect(new ImageCache(tempDir(), glance, log.logger, limits).get(id)).rejects.toThrow(
        /over the limit of 1048576/,
      );
      expect(os.calls.slice(before).filter((c) => c.path.endsWith("/file"))).toHaveLength(0);
      // Claims 4 KiB, sends 3 MiB: the download stops at the claim, nothing is kept.
      os.setImage({ id, data: Buffer.alloc(3 * 1024 * 1024, 2), claimedSize: 4096 });
      const dir = tempDir();
      await expect(new ImageCache(dir, glance, log.logger, limits).get(id)).rejects.toThrow(
        /passed 4096 bytes/,
      );
      expect(readdirSync(join(dir, "glance", id))).toEqual([]);
    });

    it("a trickle that never stalls still meets the whole-download deadline", async () => {
      const id = randomUUID();
      os.setImage({ id, data: Buffer.alloc(64 * 1024, 5), trickle: { chunkBytes: 1024, delayMs: 100 } });
      const started = Date.now();
      const dir = tempDir();
      await expect(
        new ImageCache(dir, glance, log.logger, { maxBytes: 1024 ** 3, downloadTimeoutMs: 1500 }).get(id),
      ).rejects.toThrow(/not finished after 1500 ms/);
      expect(Date.now() - started).toBeLessThan(5000);
      expect(readdirSync(join(dir, "glance", id))).toEqual([]);
    });
  });
});
