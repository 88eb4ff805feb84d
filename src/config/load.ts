import { closeSync, existsSync, openSync, readSync } from "node:fs";
import { dirname, isAbsolute, join, resolve } from "node:path";
import { z } from "zod";
import { machinesSchema } from "../bootplan/config.js";
import { PE_MACHINE, peMachineType } from "../bootplan/pe.js";
import { ConfigError, type ConfigIssue } from "./errors.js";
import { type Config, configSchema } from "./schema.js";
import { withSecretBaseDir } from "./secret.js";
import { parseWith, YamlSource } from "./yaml-file.js";

export const DEFAULT_CONFIG_FILE = "/etc/netboot-appliance/config.yaml";

/** Command-line flags that override the file (dnsmasq/pixiecore style: enough to serve a folder). */
export interface ConfigOverrides {
  listen?: string;
  tftpRoot?: string;
  tftpPort?: number;
  dhcpPort?: number;
  /** Enables the HTTP server on this port. */
  httpPort?: number;
  /** Starts the management listener at ADDR:PORT. */
  adminListen?: string;
  noDhcp?: boolean;
  logLevel?: string;
}

export interface LoadedConfig {
  config: Config;
  /** The file read, or "(command line)" when running from flags alone. */
  file: string;
}

type Json = Record<string, unknown>;

function section(data: Json, key: string): Json {
  const value = data[key];
  if (value && typeof value === "object" && !Array.isArray(value)) return value as Json;
  const fresh: Json = {};
  data[key] = fresh;
  return fresh;
}

function applyOverrides(data: Json, o: ConfigOverrides): void {
  if (o.listen !== undefined) section(data, "listen").address = o.listen;
  if (o.tftpRoot !== undefined) section(data, "tftp").root = o.tftpRoot;
  if (o.tftpPort !== undefined) section(data, "tftp").port = o.tftpPort;
  if (o.dhcpPort !== undefined) section(data, "dhcp").port = o.dhcpPort;
  if (o.httpPort !== undefined) Object.assign(section(data, "http"), { enable: true, port: o.httpPort });
  if (o.adminListen !== undefined) section(data, "admin").listen = o.adminListen;
  if (o.noDhcp) section(data, "dhcp").mode = "off";
  if (o.logLevel !== undefined) section(data, "log").level = o.logLevel;
}

function hasAnyOverride(o: ConfigOverrides): boolean {
  return Object.values(o).some((v) => v !== undefined && v !== false);
}

/**
 * Reads, validates and normalises the config. Every problem is reported at once as a ConfigError
 * (file:line field: reason); nothing is bound or started before this returns.
 */
export function loadConfig(file: string | undefined, overrides: ConfigOverrides = {}): LoadedConfig {
  let source: YamlSource;
  let shownName: string;
  if (file === undefined && !existsSync(DEFAULT_CONFIG_FILE) && hasAnyOverride(overrides)) {
    source = YamlSource.parse("(command line)", "{}");
    shownName = "(command line)";
  } else {
    shownName = file ?? DEFAULT_CONFIG_FILE;
    source = YamlSource.read(shownName);
  }
  const data = source.data;
  if (data === null || typeof data !== "object" || Array.isArray(data)) {
    throw new ConfigError([
      { file: shownName, line: 1, field: "", message: "expected a YAML mapping at the top" },
    ]);
  }
  applyOverrides(data as Json, overrides);
  applyListenDefaults(data as Json);
  const base = shownName === "(command line)" ? process.cwd() : dirname(resolve(shownName));
  const config = withSecretBaseDir(base, () => parseWith(source, configSchema, data));

  if (config.inventory !== undefined) {
    if (config.machines !== undefined) {
      throw new ConfigError([source.issue(["inventory"], "give either machines: or inventory:, not both")]);
    }
    const inventoryFile = resolvePath(base, config.inventory);
    const inventory = YamlSource.read(inventoryFile);
    const machines = withSecretBaseDir(dirname(inventoryFile), () =>
      parseWith(inventory, z.strictObject({ machines: machinesSchema })),
    );
    config.machines = machines.machines;
  }
  normalisePaths(config, base);
  const issues = semanticIssues(config, source);
  if (issues.length > 0) throw new ConfigError(issues);
  return { config, file: shownName };
}

function resolvePath(base: string, p: string): string {
  return isAbsolute(p) ? p : resolve(base, p);
}

/** Relative paths in the file mean "relative to the file", as a person reading it would expect. */
function normalisePaths(config: Config, base: string): void {
  config.tftp.root = resolvePath(base, config.tftp.root);
  config.state_dir = resolvePath(base, config.state_dir);
  config.cache_dir = resolvePath(base, config.cache_dir);
  for (const image of Object.values(config.images)) {
    for (const part of [image.kernel, image.initrd]) {
      if (part && "path" in part) part.path = resolvePath(base, part.path);
    }
  }
}

/** `listen:` gives the defaults that the DHCP and TFTP sections did not set themselves. */
function applyListenDefaults(data: Json): void {
  const listen = data.listen as Json | undefined;
  if (!listen || typeof listen !== "object") return;
  if (typeof listen.address === "string") {
    const tftp = section(data, "tftp");
    if (tftp.address === undefined) tftp.address = listen.address;
    const dhcp = section(data, "dhcp");
    if (dhcp.server_address === undefined) dhcp.server_address = listen.address;
    const http = section(data, "http");
    if (http.address === undefined) http.address = listen.address;
  }
  if (Array.isArray(listen.interfaces) && listen.interfaces.length > 0) {
    const dhcp = section(data, "dhcp");
    if (dhcp.interfaces === undefined) dhcp.interfaces = listen.interfaces;
  }
}

/** Checks that need the file system or several sections at once. */
function semanticIssues(config: Config, source: YamlSource): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  if (!existsSync(config.tftp.root))
    issues.push(source.issue(["tftp", "root"], `${config.tftp.root} does not exist`));
  for (const [name, image] of Object.entries(config.images)) {
    for (const part of ["kernel", "initrd"] as const) {
      const spec = image[part];
      if (spec && "path" in spec && !existsSync(spec.path)) {
        issues.push(source.issue(["images", name, part, "path"], `${spec.path} does not exist`));
      }
    }
  }
  for (const arch of ["x64", "aa64"] as const) {
    const loaders = config.boot.loaders[arch];
    if (!loaders) continue;
    for (const kind of ["shim", "grub"] as const) {
      const problem = loaderProblem(join(config.tftp.root, loaders[kind]), arch);
      if (problem) issues.push(source.issue(["boot", "loaders", arch, kind], problem));
    }
  }
  const machines = config.machines ?? [];
  machines.forEach((machine, i) => {
    if (machine.image !== undefined && !(machine.image in config.images)) {
      issues.push(
        source.issue(["machines", i, "image"], `image "${machine.image}" is not defined under images:`),
      );
    }
    if (machine.volume.resolver === "cinder" && config.resolvers.cinder === undefined) {
      issues.push(
        source.issue(
          ["machines", i, "volume", "resolver"],
          "uses cinder but resolvers.cinder is not configured",
        ),
      );
    }
    if (machine.volume.resolver === "ironic" && config.resolvers.ironic === undefined) {
      issues.push(
        source.issue(
          ["machines", i, "volume", "resolver"],
          "uses ironic but resolvers.ironic is not configured",
        ),
      );
    }
  });
  const ironic = config.resolvers.ironic;
  if (ironic && config.resolvers.cinder === undefined)
    issues.push(
      source.issue(
        ["resolvers", "ironic"],
        "needs resolvers.cinder: Ironic is reached with its Keystone credentials",
      ),
    );
  if (ironic && !(ironic.image in config.images))
    issues.push(
      source.issue(["resolvers", "ironic", "image"], `image "${ironic.image}" is not defined under images:`),
    );
  return issues;
}

/** Why a loader file cannot be served to an `arch` machine, or undefined when it can. */
function loaderProblem(path: string, arch: "x64" | "aa64"): string | undefined {
  if (!existsSync(path)) return `${path} does not exist (run npm run firmware?)`;
  const head = Buffer.alloc(4096);
  const fd = openSync(path, "r");
  let length: number;
  try {
    length = readSync(fd, head, 0, head.length, 0);
  } finally {
    closeSync(fd);
  }
  const machine = peMachineType(head.subarray(0, length));
  if (typeof machine === "string") return `${path} is not a PE/COFF image (${machine})`;
  if (machine !== PE_MACHINE[arch]) {
    return `${path} is a PE image for machine type 0x${machine.toString(16)}, not ${arch} (0x${PE_MACHINE[arch].toString(16)})`;
  }
  return undefined;
}
