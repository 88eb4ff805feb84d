import { execFileSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { Writable } from "node:stream";
import { type Logger, pino } from "pino";
import { parse as parseYaml } from "yaml";
import { z } from "zod";
import {
  bootConfigSchema,
  cinderSchema,
  imagesSchema,
  ironicSchema,
  machinesSchema,
} from "../../src/bootplan/config.js";
import type { BootPlanOptions } from "../../src/bootplan/plan.js";
import { LeaseStore } from "../../src/dhcp/leases.js";
import { type DhcpRole, MachineRegistry } from "../../src/machines/registry.js";

export const TEMPLATES_DIR = resolve(import.meta.dirname, "../../templates");

/** A pino logger whose every line is kept, to prove what was (and was not) logged. */
export function captureLogger(): {
  logger: Logger;
  text: () => string;
  lines: () => Record<string, unknown>[];
} {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      chunks.push(chunk.toString());
      done();
    },
  });
  const logger = pino({ level: "trace" }, stream);
  return {
    logger,
    text: () => chunks.join(""),
    lines: () =>
      chunks
        .join("")
        .split("\n")
        .filter((l) => l !== "")
        .map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}

export function tempDir(prefix = "nbbp-"): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/** Kernel and initrd files with recognisable contents. */
export function fakeImageFiles(dir: string, tag = "img"): { kernel: string; initrd: string } {
  const kernel = join(dir, `${tag}-vmlinuz`);
  const initrd = join(dir, `${tag}-initrd.img`);
  writeFileSync(kernel, `kernel ${tag}\n`);
  writeFileSync(initrd, `initrd ${tag}\n`);
  return { kernel, initrd };
}

const sectionsSchema = z.strictObject({
  boot: bootConfigSchema,
  images: imagesSchema,
  machines: machinesSchema,
  resolvers: z.strictObject({ cinder: cinderSchema.optional(), ironic: ironicSchema.optional() }).optional(),
});

/** Parses the boot plan sections of a YAML config as the appliance config will. */
export function planOptionsFromYaml(
  yaml: string,
  extra: { cacheDir: string; logger: Logger; tftpRoot?: string; stateDir?: string },
): BootPlanOptions {
  const parsed = sectionsSchema.parse(parseYaml(yaml));
  return {
    boot: parsed.boot,
    images: parsed.images,
    machines: parsed.machines,
    cinder: parsed.resolvers?.cinder,
    ironic: parsed.resolvers?.ironic,
    cacheDir: extra.cacheDir,
    stateDir: extra.stateDir,
    templatesDir: TEMPLATES_DIR,
    tftpRoot: extra.tftpRoot,
    logger: extra.logger,
  };
}

/** Runs GRUB's own parser on a config; returns its complaint, or undefined when it is accepted. */
export function grubScriptCheck(text: string): string | undefined {
  const file = join(tempDir("nbbp-grub-"), "test.cfg");
  writeFileSync(file, text);
  try {
    execFileSync("grub-script-check", [file], { stdio: ["ignore", "pipe", "pipe"] });
    return undefined;
  } catch (err) {
    const e = err as { stdout?: Buffer; stderr?: Buffer; status?: number };
    return `exit ${e.status}: ${e.stderr?.toString() ?? ""}${e.stdout?.toString() ?? ""}`;
  }
}

/**
 * Machine ownership as the appliance has it: a registry reading a real lease journal. `lease` commits a
 * bound lease the way the DHCP engine does on ACK; `end` frees it (RELEASE) or gives the address away.
 */
export async function leasedRegistry(logger: Logger, role: DhcpRole = "full") {
  const store = await LeaseStore.open(tempDir("nbbp-leases-"), logger);
  const registry = new MachineRegistry({ role, leases: store });
  return {
    store,
    registry,
    lease: (mac: string, address: string, ms = 3_600_000) =>
      store.commit([
        ...store
          .all()
          .filter((l) => l.mac === mac && l.address !== address && l.state === "bound")
          .map((l) => ({ ...l, state: "free" as const, expires: Date.now() })),
        { address, mac, expires: Date.now() + ms, state: "bound" },
      ]),
    release: (mac: string) => {
      const l = store.byMac(mac);
      return l ? store.commit([{ ...l, state: "free", expires: Date.now() }]) : Promise.resolve();
    },
  };
}

/** Splits a grub.cfg command into words the way GRUB's lexer does for our output (single quotes). */
export function grubWords(line: string): string[] {
  const words: string[] = [];
  let i = 0;
  while (i < line.length) {
    while (line[i] === " ") i++;
    if (i >= line.length) break;
    let word = "";
    while (i < line.length && line[i] !== " ") {
      if (line[i] === "'") {
        const end = line.indexOf("'", i + 1);
        word += line.slice(i + 1, end);
        i = end + 1;
      } else if (line[i] === "\\") {
        word += line[i + 1];
        i += 2;
      } else {
        word += line[i];
        i++;
      }
    }
    words.push(word);
  }
  return words;
}
