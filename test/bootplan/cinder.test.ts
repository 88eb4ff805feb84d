import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { parseDracutCmdline } from "../../src/bootplan/cmdline.js";
import { BootPlan } from "../../src/bootplan/plan.js";
import { UnresolvableMachineError } from "../../src/bootplan/resolver.js";
import { type FakeVolume, type OpenStackFake, startOpenStackFake } from "../support/openstack-fake.js";
import { captureLogger, leasedRegistry, planOptionsFromYaml, tempDir } from "./helpers.js";

const KEYSTONE_PASSWORD = "Keystone-Pa55word";
const APP_SECRET = "AppCred-S3cret-value";
const CHAP_PASSWORD = "CinderChapPw-9xQ";
const VOL = "4f1c2b9e-2d7a-4c55-9a0e-2c1f3e4d5a6b";
const VOL2 = "7a3d0c11-5e2b-4f9a-8c1d-0b2e3f4a5c6d";
const VOL_OLD = "0c9e8d7f-6a5b-4c3d-2e1f-0a9b8c7d6e5f";
const TARGET = `iqn.2010-10.org.openstack:volume-${VOL}`;

function volume(id: string, over: Partial<FakeVolume["connection"]> = {}): FakeVolume {
  return {
    id,
    connection: {
      target_portal: "10.0.0.5:3260",
      target_iqn: `iqn.2010-10.org.openstack:volume-${id}`,
      target_lun: 1,
      auth_method: "CHAP",
      auth_username: "cinderUser01",
      auth_password: CHAP_PASSWORD,
      ...over,
    },
    kernelData: Buffer.from(`vmlinuz for ${id}\n`.repeat(1000)),
    initrdData: Buffer.from(`initrd for ${id}\n`.repeat(5000)),
  };
}

function config(os: OpenStackFake, auth: string, extra = "") {
  return `
boot:
  loaders: { x64: { shim: x64/shimx64.efi, grub: x64/grubx64.efi } }
images:
  dracut-img: { flavour: dracut, root: UUID=0e5b4a8c-3c1a-4f6e-9d2b-7a1c5e9f0b11, extra_args: ["console=ttyS0,115200"] }
machines:
  - name: cnode1
    macs: [52:54:00:aa:00:01]
    image: dracut-img
    volume: { resolver: cinder, volume_id: ${VOL} }
  - name: cnode2
    macs: [52:54:00:aa:00:02]
    image: dracut-img
    volume: { resolver: cinder, volume_id: ${VOL2} }
  - name: cold
    macs: [52:54:00:aa:00:03]
    image: dracut-img
    volume: { resolver: cinder, volume_id: ${VOL_OLD} }
  - name: gone
    macs: [52:54:00:aa:00:04]
    image: dracut-img
    volume: { resolver: cinder, volume_id: 00000000-0000-0000-0000-000000000000 }
resolvers:
  cinder:
    auth_url: ${os.authUrl}
    auth: ${auth}
    timeout_ms: 1500
    retries: 1
${extra}
`;
}

const PASSWORD_AUTH = `{ type: password, username: netboot, password: ${KEYSTONE_PASSWORD}, project_name: baremetal }`;

describe("Cinder resolver against the OpenStack fake", () => {
  let os: OpenStackFake;
  const log = captureLogger();
  let cacheDir: string;
  let plan: BootPlan;
  let owners: Awaited<ReturnType<typeof leasedRegistry>>;

  beforeAll(async () => {
    owners = await leasedRegistry(log.logger);
    os = await startOpenStackFake({
      password: KEYSTONE_PASSWORD,
      appCredential: { id: "ac-123", secret: APP_SECRET },
      volumes: [volume(VOL), { ...volume(VOL2), multiattach: true }],
    });
    // VOL2 shares VOL's kernel and initrd images, as machines booting the same image would.
    const ids = os.imageIdsOf(VOL);
    cacheDir = tempDir();
    plan = new BootPlan(
      planOptionsFromYaml(config(os, PASSWORD_AUTH), { cacheDir, logger: log.logger }),
      owners.registry,
    );
    void ids;
  });
  afterEach(() => os.clearFaults());
  afterAll(async () => {
    await os?.close();
    await owners?.store.close();
    // No secret ever reaches the log: CHAP from Cinder, the Keystone password, the app credential, tokens.
    const text = log.text();
    expect(text).not.toContain(CHAP_PASSWORD);
    expect(text).not.toContain(KEYSTONE_PASSWORD);
    expect(text).not.toContain(APP_SECRET);
    expect(text).not.toMatch(/gAAAAA[0-9a-f]{10}/);
  });

  it("prefetches the volumes' kernels and initrds without attaching anything", async () => {
    const before = os.calls.length;
    // "gone" and "cold" are not (yet) known to Cinder
    expect(await plan.prefetchImages()).toEqual({ fetched: 4, failed: 2 });
    const calls = os.calls.slice(before);
    expect(calls.filter((c) => c.path.endsWith("/file"))).toHaveLength(4);
    expect(calls.filter((c) => c.path.includes("/attachments"))).toHaveLength(0);
    expect(os.attachments()).toHaveLength(0);
  });

  it("resolves through Keystone, the attachments API (3.44) and Glance", async () => {
    const r = await plan.render("52:54:00:aa:00:01", "x64");
    expect(r).toMatchObject({ machine: "cnode1", resolver: "cinder", fallback: false });
    const parsed = parseDracutCmdline(r.cmdline);
    expect(parsed.targets).toEqual([
      {
        username: "cinderUser01",
        password: CHAP_PASSWORD,
        targetIp: "10.0.0.5",
        protocol: "",
        port: "3260",
        lun: "1",
        targetName: TARGET,
      },
    ]);
    expect(parsed.initiator).toBe("iqn.2024-01.org.netboot-appliance:cnode1");
    expect(r.secrets).toEqual([CHAP_PASSWORD]);

    const auth = os.calls.filter((c) => c.path === "/identity/v3/auth/tokens");
    expect(auth).toHaveLength(1);
    expect(auth[0]?.body).toMatchObject({
      auth: {
        identity: {
          methods: ["password"],
          password: { user: { name: "netboot", domain: { name: "Default" } } },
        },
        scope: { project: { name: "baremetal", domain: { name: "Default" } } },
      },
    });
    const create = os.calls.find((c) => c.method === "POST" && c.path.endsWith("/attachments"));
    expect(create?.headers["openstack-api-version"]).toBe("volume 3.44");
    expect(create?.body).toEqual({
      attachment: {
        volume_uuid: VOL,
        connector: {
          initiator: "iqn.2024-01.org.netboot-appliance:cnode1",
          ip: "0.0.0.0",
          host: "cnode1",
          multipath: true,
          platform: "x86_64",
          os_type: "linux2",
        },
      },
    });
    expect(
      os.calls.some((c) => c.path.endsWith("/action") && JSON.stringify(c.body) === '{"os-complete":null}'),
    ).toBe(true);
    expect(os.attachments().map((a) => a.status)).toEqual(["attached"]);

    // Kernel and initrd came from volume_image_metadata, through Glance, into the cache.
    const { kernelId, ramdiskId } = os.imageIdsOf(VOL);
    expect(r.kernelPath).toBe(`glance/${kernelId}`);
    expect(r.initrdPath).toBe(`glance/${ramdiskId}`);
    expect(readFileSync(r.kernelFile, "utf8")).toBe(`vmlinuz for ${VOL}\n`.repeat(1000));
    expect(r.kernelFile.startsWith(cacheDir)).toBe(true);
    expect(os.calls.filter((c) => c.path.endsWith("/file"))).toHaveLength(4); // prefetched, not downloaded again
    const served = await plan.tftpProvider()(r.initrdPath, { address: "10.0.0.9", port: 1 });
    expect(served).toEqual({ kind: "file", path: r.initrdFile });
  });

  it("reuses the token and the attachment on the next boot", async () => {
    const before = os.calls.length;
    await owners.lease("52:54:00:aa:00:01", "10.0.0.21");
    await plan.render("52:54:00:aa:00:01");
    const calls = os.calls.slice(before);
    expect(calls.filter((c) => c.path.includes("/auth/tokens"))).toHaveLength(0);
    const put = calls.find((c) => c.method === "PUT");
    expect(put?.path).toMatch(/\/attachments\/[0-9a-f-]+$/);
    expect(put?.body).toMatchObject({ attachment: { connector: { ip: "10.0.0.21" } } });
    expect(os.attachments()).toHaveLength(1);
    // Same image version: no second download.
    expect(calls.filter((c) => c.path.endsWith("/file"))).toHaveLength(0);
  });

  it("re-authenticates once on 401 (expired token) and succeeds", async () => {
    os.expireTokens();
    const before = os.calls.length;
    const r = await plan.render("52:54:00:aa:00:01");
    expect(r.fallback).toBe(false);
    const calls = os.calls.slice(before);
    expect(calls[0]?.status).toBe(401);
    expect(calls.filter((c) => c.path.includes("/auth/tokens"))).toHaveLength(1);
    expect(log.text()).toContain("re-authenticating once");
  });

  it("a service that keeps answering 401 is tried with one fresh token only, then the last good answer is not used", async () => {
    os.addFault({ path: /\/volumes\//, status: 401 });
    const before = os.calls.length;
    await expect(plan.render("52:54:00:aa:00:01")).rejects.toThrow(UnresolvableMachineError);
    const calls = os.calls.slice(before);
    expect(calls.filter((c) => c.path.includes("/auth/tokens"))).toHaveLength(1);
    expect(calls.filter((c) => /\/volumes\//.test(c.path))).toHaveLength(2);
  });

  it("retries a 500 within its bounds", async () => {
    os.addFault({ method: "GET", path: /\/volumes\//, status: 500, times: 1 });
    const r = await plan.render("52:54:00:aa:00:01");
    expect(r.fallback).toBe(false);
  });

  it("a slow Cinder costs a bounded time and falls back to the last known good connection", async () => {
    os.addFault({ path: /\/volumes\//, delayMs: 6000 });
    const started = Date.now();
    const r = await plan.render("52:54:00:aa:00:01");
    const ms = Date.now() - started;
    expect(r.fallback).toBe(true);
    expect(parseDracutCmdline(r.cmdline).targets[0]?.targetName).toBe(TARGET);
    // timeout_ms 1500 x (1 + retries 1) + backoff 200 = 3200, some slack for a loaded machine
    expect(ms).toBeGreaterThanOrEqual(3000);
    expect(ms).toBeLessThan(4500);
    expect(log.text()).toContain("using the last known good connection info");
    console.log(`slow cinder: fell back after ${ms} ms`);
  });

  it("a connection reset also falls back, and Glance being down uses the cached files", async () => {
    os.addFault({ path: /\/volumes\//, reset: true });
    os.addFault({ path: /^\/image\//, status: 503 });
    const r = await plan.render("52:54:00:aa:00:01");
    expect(r.fallback).toBe(true);
  });

  it("Glance down while Cinder answers: the cached kernel and initrd are used, and that is logged", async () => {
    os.addFault({ path: /^\/image\//, status: 503 });
    const r = await plan.render("52:54:00:aa:00:01");
    expect(r.fallback).toBe(true);
    expect(readFileSync(r.kernelFile, "utf8")).toBe(`vmlinuz for ${VOL}\n`.repeat(1000));
    expect(log.lines().some((l) => l.msg === "glance unavailable: using the cached image file")).toBe(true);
  });

  it("a reload (SIGHUP) during an outage keeps the last known good answer and the attachment", async () => {
    plan.reload(planOptionsFromYaml(config(os, PASSWORD_AUTH), { cacheDir, logger: log.logger }));
    os.addFault({ path: /\/volumes\//, status: 503 });
    const r = await plan.render("52:54:00:aa:00:01");
    expect(r.fallback).toBe(true);
    os.clearFaults();
    const before = os.calls.length;
    await plan.render("52:54:00:aa:00:01");
    expect(
      os.calls.slice(before).filter((c) => c.method === "POST" && c.path.endsWith("/attachments")),
    ).toHaveLength(0);
  });

  it("without a last good answer, an unreachable Cinder leaves the machine without config, with a clear log line", async () => {
    os.addFault({ path: new RegExp(VOL2), status: 500 });
    await owners.lease("52:54:00:aa:00:02", "10.0.0.22");
    const provide = plan.tftpProvider();
    expect(await provide("grub/52:54:00:aa:00:02.conf", { address: "10.0.0.22", port: 1 })).toBeUndefined();
    const line = log
      .lines()
      .find((l) => l.msg === "no boot config for machine" && l.mac === "52:54:00:aa:00:02");
    expect(String(line?.reason)).toMatch(new RegExp(`machine cnode2: cinder volume ${VOL2}: .*HTTP 500`));
  });

  it("a volume Cinder does not know is refused, not guessed", async () => {
    await expect(plan.render("52:54:00:aa:00:04")).rejects.toThrow(
      /machine gone: cinder volume 0{8}-.*HTTP 404 Volume .* could not be found/,
    );
  });

  it("falls back to os-initialize_connection when the attachments API is refused (volume in use elsewhere)", async () => {
    os.setVolume(volume(VOL_OLD, { auth_method: undefined }));
    // Someone else holds an attachment: the create is refused with 400, the action API still answers.
    const other = await fetch(`${os.url}/identity/v3/auth/tokens`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        auth: {
          identity: {
            methods: ["application_credential"],
            application_credential: { id: "ac-123", secret: APP_SECRET },
          },
        },
      }),
    });
    const token = other.headers.get("x-subject-token") ?? "";
    const taken = await fetch(`${os.url}/volume/v3/${os.projectId}/attachments`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        "x-auth-token": token,
        "openstack-api-version": "volume 3.44",
      },
      body: JSON.stringify({ attachment: { volume_uuid: VOL_OLD } }),
    });
    expect(taken.status).toBe(200);
    const before = os.calls.length;
    const r = await plan.render("52:54:00:aa:00:03");
    const init = os.calls
      .slice(before)
      .find((c) => String(JSON.stringify(c.body)).includes("os-initialize_connection"));
    expect(init?.body).toMatchObject({
      "os-initialize_connection": { connector: { initiator: "iqn.2024-01.org.netboot-appliance:cold" } },
    });
    expect(parseDracutCmdline(r.cmdline).targets[0]).toMatchObject({
      targetName: `iqn.2010-10.org.openstack:volume-${VOL_OLD}`,
    });
    expect(parseDracutCmdline(r.cmdline).targets[0]?.username).toBeUndefined();
  });

  it("Keystone down or slow while the token lapses: the last known good connection, logged", async () => {
    await plan.render("52:54:00:aa:00:01");
    for (const fault of [{ status: 503 }, { delayMs: 4000 }, { reset: true }]) {
      os.expireTokens();
      os.addFault({ path: /\/auth\/tokens$/, ...fault });
      const before = log.lines().length;
      const r = await plan.render("52:54:00:aa:00:01");
      expect(r.fallback, JSON.stringify(fault)).toBe(true);
      expect(
        log
          .lines()
          .slice(before)
          .some((l) => l.msg === "cinder unavailable: using the last known good connection info"),
      ).toBe(true);
      os.clearFaults();
    }
  });

  it("a 200 answer with invalid data is a refusal with the reason, never the last known good", async () => {
    await plan.render("52:54:00:aa:00:01"); // a last good answer exists
    for (const [over, why] of [
      [{ target_iqn: "not an iqn" }, /target_iqn "not an iqn" must start with iqn\./],
      [{ driver_volume_type: "nfs" as "iscsi" }, /driver_volume_type "nfs" is not iscsi or iser/],
      [{ target_lun: -4 }, /target_lun -4 is not a LUN/],
    ] as const) {
      os.setVolume(volume(VOL, over));
      const err = await plan.render("52:54:00:aa:00:01").catch((e: unknown) => e);
      expect(err).toBeInstanceOf(UnresolvableMachineError);
      expect(String((err as Error).message)).toMatch(why);
    }
    os.setVolume(volume(VOL));
    const lastGoodUses = log
      .lines()
      .filter((l) => l.msg === "cinder unavailable: using the last known good connection info");
    const r = await plan.render("52:54:00:aa:00:01");
    expect(r.fallback).toBe(false);
    expect(
      log.lines().filter((l) => l.msg === "cinder unavailable: using the last known good connection info"),
    ).toHaveLength(lastGoodUses.length);
  });

  it("an endless answer is cut at the size limit, without the memory it would take, and refused", async () => {
    os.addFault({ path: /\/volumes\//, hugeBodyBytes: 300 * 1024 * 1024 });
    const rssBefore = process.memoryUsage().rss;
    const err = await plan.render("52:54:00:aa:00:01").catch((e: unknown) => e);
    const grown = process.memoryUsage().rss - rssBefore;
    expect(err).toBeInstanceOf(UnresolvableMachineError);
    expect(String((err as Error).message)).toMatch(/answer of \d+\+ bytes is over the 8388608-byte limit/);
    expect(grown).toBeLessThan(120 * 1024 * 1024);
    console.log(`300 MiB Cinder answer: refused, RSS grew ${(grown / 1048576).toFixed(1)} MiB`);
  });

  it("downloads a changed image again, once for machines booting at the same time, and drops the old version", async () => {
    const { kernelId } = os.imageIdsOf(VOL);
    os.setVolume({ ...volume(VOL), kernelData: Buffer.from("new kernel\n".repeat(3000)) });
    // VOL2 now points at the same kernel image id as VOL, so both machines share it.
    os.setVolume({ ...volume(VOL2), multiattach: true });
    const before = os.calls.length;
    const [a, b] = await Promise.all([plan.render("52:54:00:aa:00:01"), plan.render("52:54:00:aa:00:01")]);
    expect(a.kernelFile).toBe(b.kernelFile);
    expect(readFileSync(a.kernelFile, "utf8")).toBe("new kernel\n".repeat(3000));
    const downloads = os.calls.slice(before).filter((c) => c.path === `/image/v2/images/${kernelId}/file`);
    expect(downloads).toHaveLength(1);
    const files = readdirSync(join(cacheDir, "glance", kernelId ?? ""));
    expect(files).toHaveLength(1);
  });

  it("refuses a download whose checksum does not match Glance's, leaving nothing behind", async () => {
    const { ramdiskId } = os.imageIdsOf(VOL2);
    os.setImage({ id: ramdiskId ?? "", data: Buffer.from("tampered"), os_hash_value: "00".repeat(64) });
    await expect(plan.render("52:54:00:aa:00:02")).rejects.toThrow(
      /sha512 of the download is [0-9a-f]+, Glance says 0000/,
    );
    const files = readdirSync(join(cacheDir, "glance", ramdiskId ?? ""));
    expect(files.filter((f) => f.startsWith(".tmp-"))).toEqual([]);
  });
});

describe("Keystone details", () => {
  let os: OpenStackFake;
  const log = captureLogger();
  beforeAll(async () => {
    os = await startOpenStackFake({
      appCredential: { id: "ac-9", secret: APP_SECRET },
      volumes: [volume(VOL)],
      tokenTtlSeconds: 30,
      region: "Lab1",
    });
  });
  afterAll(async () => {
    await os?.close();
    expect(log.text()).not.toContain(APP_SECRET);
  });

  it("application credentials: no scope, and a token about to expire is renewed", async () => {
    const plan = new BootPlan(
      planOptionsFromYaml(
        config(
          os,
          `{ type: application_credential, id: ac-9, secret: ${APP_SECRET} }`,
          "    interface: internal\n    region: Lab1",
        ),
        {
          cacheDir: tempDir(),
          logger: log.logger,
        },
      ),
    );
    await plan.render("52:54:00:aa:00:01");
    await plan.render("52:54:00:aa:00:01");
    const auth = os.calls.filter((c) => c.path.includes("/auth/tokens"));
    // A 30 s token is inside the 60 s renewal margin: every use authenticates again.
    expect(auth.length).toBeGreaterThanOrEqual(2);
    expect(auth[0]?.body).toEqual({
      auth: {
        identity: {
          methods: ["application_credential"],
          application_credential: { id: "ac-9", secret: APP_SECRET },
        },
      },
    });
  });

  it("names the missing endpoint when the region has none", async () => {
    const plan = new BootPlan(
      planOptionsFromYaml(
        config(
          os,
          `{ type: application_credential, id: ac-9, secret: ${APP_SECRET} }`,
          "    region: Nowhere",
        ),
        {
          cacheDir: tempDir(),
          logger: log.logger,
        },
      ),
    );
    await expect(plan.render("52:54:00:aa:00:01")).rejects.toThrow(
      /no block-storage\/volumev3\/volumev2\/volume endpoint with interface public in region Nowhere/,
    );
  });

  it("wrong credentials are an error naming Keystone, never echoing the secret", async () => {
    const plan = new BootPlan(
      planOptionsFromYaml(config(os, "{ type: application_credential, id: ac-9, secret: wrong-secret }"), {
        cacheDir: tempDir(),
        logger: log.logger,
      }),
    );
    const err = await plan.render("52:54:00:aa:00:01").catch((e: Error) => e);
    expect(String(err)).toMatch(/Keystone authentication failed: HTTP 401/);
    expect(String(err)).not.toContain("wrong-secret");
  });
});

describe("Cinder shapes", () => {
  let os: OpenStackFake;
  beforeAll(async () => {
    os = await startOpenStackFake({
      attachmentsApi: false,
      volumes: [
        volume(VOL, {
          driver_volume_type: "iser",
          target_portals: ["10.0.0.5:3260", "[fd00:10::5]:3260"],
          target_luns: [1, 1],
        }),
      ],
    });
  });
  afterAll(async () => os?.close());

  it("old cloud: os-initialize_connection with multipath portals (IPv6 bracketed) and iser", async () => {
    const log = captureLogger();
    const plan = new BootPlan(
      planOptionsFromYaml(
        config(
          os,
          `{ type: password, username: netboot, password: keystone-secret, project_name: baremetal }`,
        ),
        { cacheDir: tempDir(), logger: log.logger },
      ),
    );
    const r = await plan.render("52:54:00:aa:00:01");
    const parsed = parseDracutCmdline(r.cmdline);
    expect(parsed.targets.map((t) => t.targetIp)).toEqual(["10.0.0.5", "fd00:10::5"]);
    expect(r.cmdline).toContain("@[fd00:10::5]::3260:1:");
    expect(log.text()).toContain("falling back to os-initialize_connection");
    expect(log.text()).not.toContain(CHAP_PASSWORD);
  });
});
