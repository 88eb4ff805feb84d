/**
 * Fuzzing the config loader and rendering: a bad config is a ConfigError naming the file and the field,
 * never a crash; any inventory or Cinder value either is refused with its field named, or renders a
 * config GRUB parses in which every value stays one kernel argument.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { buildKernelArgs, parseDracutCmdline, parseOpenIscsiCmdline } from "../../src/bootplan/cmdline.js";
import { chapValueProblem, imagesSchema, machinesSchema } from "../../src/bootplan/config.js";
import { parseConnectionInfo } from "../../src/bootplan/openstack/cinder.js";
import { BootPlan } from "../../src/bootplan/plan.js";
import { UnresolvableMachineError } from "../../src/bootplan/resolver.js";
import { ConfigError } from "../../src/config/errors.js";
import { loadConfig } from "../../src/config/load.js";
import { MachineRegistry } from "../../src/machines/registry.js";
import { captureLogger, grubScriptCheck, grubWords, TEMPLATES_DIR, tempDir } from "../bootplan/helpers.js";
import { commandsAvailable } from "../support/require.js";
import { FUZZ_RUNS, fuzz, fuzzTimeout } from "./harness.js";

const dir = tempDir("nbfz-config-");
const tftpRoot = join(dir, "tftp");
mkdirSync(tftpRoot, { recursive: true });
writeFileSync(join(dir, "vmlinuz"), "k");
writeFileSync(join(dir, "initrd.img"), "i");

/** A config that loads, to mutate: the fuzzer's changes then land deep inside it. */
const base = () => ({
  listen: { interfaces: ["eth1"], address: "10.0.0.1" },
  log: { level: "info" },
  state_dir: join(dir, "state"),
  dhcp: {
    mode: "full",
    subnets: [
      { subnet: "10.0.0.0/24", interface: "eth1", range: { start: "10.0.0.100", end: "10.0.0.200" } },
    ],
    reservations: [{ mac: "52:54:00:00:00:01", address: "10.0.0.10" }],
  },
  tftp: { root: tftpRoot, max_blksize: 1468 },
  boot: { loaders: {}, grub: { timeout: 3 } },
  images: {
    img: { kernel: { path: "vmlinuz" }, initrd: { path: "initrd.img" }, flavour: "dracut", root: "UUID=1" },
  },
  machines: [
    {
      name: "m1",
      macs: ["52:54:00:00:00:01"],
      volume: { resolver: "static", portals: ["10.0.0.5"], iqn: "iqn.2024-01.org.example:m1", lun: 1 },
    },
  ],
});

type Json = Record<string, unknown>;
const keyPaths = (value: unknown, prefix: (string | number)[] = []): (string | number)[][] => {
  if (value === null || typeof value !== "object") return [prefix];
  const out: (string | number)[][] = [prefix];
  for (const [k, v] of Object.entries(value))
    out.push(...keyPaths(v, [...prefix, Array.isArray(value) ? Number(k) : k]));
  return out;
};

/** Replace, delete or add at one path of the base config. */
const mutatedConfig = fc
  .record({
    pick: fc.nat(),
    action: fc.constantFrom("replace", "delete", "add"),
    value: fc.oneof(
      fc.anything({ maxDepth: 2 }),
      fc.string(),
      fc.constantFrom("10.0.0.300", "-1", "", "~", "yes", { env: "NBFZ_NOT_SET" }, { file: "/nonexistent" }),
    ),
    key: fc.oneof(fc.string({ maxLength: 12 }), fc.constantFrom("max_blksise", "__proto__", "constructor")),
  })
  .map(({ pick, action, value, key }) => {
    const cfg = base() as Json;
    const paths = keyPaths(cfg).filter((p) => p.length > 0);
    const path = paths[pick % paths.length] as (string | number)[];
    let parent: Json = cfg;
    for (const k of path.slice(0, -1)) parent = parent[k as string] as Json;
    const last = path[path.length - 1] as string;
    if (action === "delete") delete parent[last];
    else if (action === "replace") parent[last] = value;
    else if (Array.isArray(parent)) parent.push(value);
    else if (typeof parent === "object" && parent !== null) parent[key] = value;
    return stringify(cfg);
  });

/** YAML that a person could type by mistake, or a hostile file. */
const rawYaml = fc.oneof(
  fc.string({ maxLength: 300 }),
  fc.constantFrom(
    "\t- a",
    "a: [1, 2",
    "&a [*a]",
    "!!binary ZZZ",
    "? complex\n: key",
    "%YAML 9.9\n---\na: 1",
    "---\n---\n",
  ),
);

describe("fuzz: config loader", () => {
  it(
    "any file is loaded or refused as file:line field: reason, never with another error",
    async () => {
      const file = join(dir, "config.yaml");
      let refused = 0;
      await fuzz(
        "config-loader",
        fc.property(
          fc.oneof({ weight: 4, arbitrary: mutatedConfig }, { weight: 1, arbitrary: rawYaml }),
          (text) => {
            writeFileSync(file, text);
            try {
              loadConfig(file);
            } catch (err) {
              if (!(err instanceof ConfigError)) throw new Error(`not a ConfigError: ${String(err)}`);
              refused++;
              expect(err.issues.length).toBeGreaterThan(0);
              for (const issue of err.issues) {
                expect(issue.file).toBe(file);
                expect(issue.message.length).toBeGreaterThan(0);
                expect(issue.field.length + (issue.line ?? 0)).toBeGreaterThan(0);
              }
            }
          },
        ),
      );
      expect(refused).toBeGreaterThan(FUZZ_RUNS / 10);
    },
    fuzzTimeout(2),
  );
});

/** Values an inventory or a cloud may hold: mostly plausible (so rendering is reached), some hostile. */
const hostile = fc.oneof(
  fc.string({ maxLength: 40 }),
  fc.constantFrom(
    "a b",
    "x'y",
    'q"',
    "$HOME",
    "a;b",
    "a\\b",
    "}",
    "{",
    "a@b:c",
    "-----",
    "\u00e9t\u00e9",
    "x\ny",
  ),
);
const plausible = fc.stringMatching(/^[A-Za-z0-9._-]{1,20}$/);
const text = fc.oneof({ weight: 3, arbitrary: plausible }, { weight: 1, arbitrary: hostile });
const mostly = <T, U>(good: fc.Arbitrary<T>, bad: fc.Arbitrary<U>) =>
  fc.oneof({ weight: 6, arbitrary: good }, { weight: 1, arbitrary: bad });
const iqn = mostly(
  fc.stringMatching(/^iqn\.20[0-9]{2}-(0[1-9]|1[0-2])\.[a-z]{1,8}\.[a-z]{1,8}(:[a-z0-9.:-]{1,12})?$/),
  text,
);
const portal = mostly(
  fc.constantFrom("10.0.0.5", "10.0.0.5:3261", "[fd00::5]:3260", "storage.example", "192.168.1.1:3260"),
  fc.oneof(text, fc.constant("10.0.0.5:0")),
);
const lun = mostly(fc.integer({ min: 0, max: 16383 }), fc.integer({ min: -2, max: 20000 }));

const machine = fc.record({
  name: mostly(fc.stringMatching(/^[a-z][a-z0-9-]{0,20}$/), text),
  iqn,
  portals: fc.array(portal, { minLength: 1, maxLength: 3 }),
  lun,
  chap: fc.option(fc.record({ username: text, password: text }), { nil: undefined }),
  initiator: fc.option(iqn, { nil: undefined }),
});
const image = fc.record({
  flavour: fc.constantFrom("dracut", "initramfs-tools"),
  root: fc.option(mostly(fc.constant("UUID=0e5b4a8c-3c1a-4f6e-9d2b-7a1c5e9f0b11"), text), { nil: undefined }),
  extra_args: fc.array(
    mostly(fc.constantFrom("console=ttyS0,115200", "rw", "quiet", "systemd.unit=x"), text),
    {
      maxLength: 4,
    },
  ),
});

const MAC = "52:54:00:00:00:42";

describe("fuzz: rendering with arbitrary inventory and Cinder values", () => {
  const haveGrub = commandsAvailable("grub-script-check");
  const log = captureLogger();

  it(
    "inventory values are refused with the field named, or each stays one kernel argument in a config GRUB parses",
    async () => {
      const rendered: string[] = [];
      let refusedBySchema = 0;
      await fuzz(
        "render-inventory",
        fc.asyncProperty(machine, image, async (m, img) => {
          const machines = machinesSchema.safeParse([
            {
              name: m.name,
              macs: [MAC],
              ...(m.initiator === undefined ? {} : { initiator_iqn: m.initiator }),
              image: "img",
              volume: {
                resolver: "static",
                portals: m.portals,
                iqn: m.iqn,
                lun: m.lun,
                ...(m.chap ? { chap: m.chap } : {}),
              },
            },
          ]);
          const images = imagesSchema.safeParse({
            img: {
              kernel: { path: join(dir, "vmlinuz") },
              initrd: { path: join(dir, "initrd.img") },
              ...img,
            },
          });
          if (!machines.success || !images.success) {
            refusedBySchema++;
            for (const issue of [...(machines.error?.issues ?? []), ...(images.error?.issues ?? [])]) {
              expect(issue.path.length).toBeGreaterThan(0);
              // A refused CHAP password is never echoed in its message.
              if (m.chap && issue.path.includes("password") && m.chap.password.length >= 4)
                expect(issue.message).not.toContain(m.chap.password);
            }
            return;
          }
          const plan = new BootPlan(
            {
              boot: {
                loaders: { x64: { shim: "x64/shimx64.efi", grub: "x64/grubx64.efi" } },
                grub: { timeout: 1, extra_entries: [] },
              },
              images: images.data,
              machines: machines.data,
              cacheDir: join(dir, "cache"),
              templatesDir: TEMPLATES_DIR,
              logger: log.logger,
            },
            new MachineRegistry({ role: "off" }),
          );
          let r: Awaited<ReturnType<BootPlan["render"]>>;
          try {
            r = await plan.render(MAC);
          } catch (err) {
            expect(err).toBeInstanceOf(UnresolvableMachineError);
            expect((err as Error).message).toMatch(/^machine /);
            return;
          }
          rendered.push(r.grubConfig);
          const linux = r.grubConfig.split("\n").find((l) => l.trim().startsWith("linux "));
          const words = grubWords((linux ?? "").trim()).slice(2);
          expect(words.join(" ")).toBe(r.cmdline);
          for (const arg of img.extra_args) expect(words).toContain(arg);
          const parsed =
            img.flavour === "dracut" ? parseDracutCmdline(r.cmdline) : parseOpenIscsiCmdline(r.cmdline);
          const target = parsed.targets[0];
          expect(target?.targetName).toBe(m.iqn);
          if (m.chap) {
            expect(target?.username).toBe(m.chap.username);
            expect(target?.password).toBe(m.chap.password);
          }
        }),
      );
      expect(refusedBySchema).toBeLessThan(FUZZ_RUNS);
      expect(rendered.length).toBeGreaterThan(FUZZ_RUNS / 50);
      if (haveGrub) {
        // GRUB's own parser, over every config in batches (one process per config would take minutes).
        for (let i = 0; i < rendered.length; i += 500) {
          const batch = rendered.slice(i, i + 500);
          if (grubScriptCheck(batch.join("\n")) === undefined) continue;
          for (const one of batch) expect(grubScriptCheck(one), one).toBeUndefined();
        }
      }
      console.log(
        `render-inventory: ${rendered.length} rendered and parsed by GRUB, ${refusedBySchema} refused by the schema`,
      );
    },
    fuzzTimeout(3),
  );

  it(
    "Cinder connection info of any shape is refused with a reason, or gives a target that parses back",
    async () => {
      const value = fc.oneof(
        text,
        fc.integer(),
        fc.constant(null),
        fc.array(text, { maxLength: 3 }),
        fc.anything({ maxDepth: 1 }),
      );
      const info = fc.record(
        {
          driver_volume_type: fc.oneof(fc.constantFrom("iscsi", "iser", "nfs", "rbd"), value),
          target_portal: fc.oneof(portal, value),
          target_portals: fc.array(portal, { maxLength: 3 }),
          target_iqn: fc.oneof(iqn, value),
          target_lun: fc.oneof(lun, value),
          auth_method: fc.oneof(fc.constantFrom("CHAP", "chap", "none", ""), value),
          auth_username: fc.oneof(text, value),
          auth_password: fc.oneof(text, value),
        },
        { requiredKeys: ["target_portal", "target_iqn", "target_lun"] },
      );
      const shaped = fc.oneof(
        info.map((data) => ({ driver_volume_type: data.driver_volume_type, data })),
        info,
        value,
      );
      let usable = 0;
      await fuzz(
        "render-cinder",
        fc.property(
          shaped,
          fc.constantFrom("dracut" as const, "initramfs-tools" as const),
          (connectionInfo, flavour) => {
            let c: ReturnType<typeof parseConnectionInfo>;
            try {
              c = parseConnectionInfo(connectionInfo);
            } catch (err) {
              expect(err).toBeInstanceOf(Error);
              expect((err as Error).message.length).toBeGreaterThan(0);
              return;
            }
            if (c.chap && (chapValueProblem(c.chap.username) || chapValueProblem(c.chap.password))) return; // refused by the resolver
            const args = buildKernelArgs({
              flavour,
              target: { portals: c.portals, iqn: c.iqn, lun: c.lun, chap: c.chap },
              initiatorIqn: "iqn.2024-01.org.example:initiator",
              root: "UUID=1",
              ip: "dhcp",
              extraArgs: [],
            });
            usable++;
            const parsed =
              flavour === "dracut"
                ? parseDracutCmdline(args.join(" "))
                : parseOpenIscsiCmdline(args.join(" "));
            expect(parsed.targets[0]?.targetName).toBe(c.iqn);
            if (c.chap) expect(parsed.targets[0]?.password).toBe(c.chap.password);
          },
        ),
      );
      expect(usable).toBeGreaterThan(0);
    },
    fuzzTimeout(0.2),
  );
});
