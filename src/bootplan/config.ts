import { readFileSync } from "node:fs";
import { parse as parseYaml } from "yaml";
import { z } from "zod";
import { resolvedSecret } from "../config/secret.js";

/**
 * Config sections of the boot plan: `boot:`, `images:`, `machines:` (or an inventory file) and
 * `resolvers.cinder:`. Every value that ends up on a kernel command line is validated here, so a
 * value that GRUB or an initramfs would mangle is refused at load time, naming the field.
 */

export const bootArchSchema = z.enum(["x64", "aa64"]);

// RFC 3720 names, restricted to the normalised (lowercase) form and to characters that pass
// unchanged through GRUB, the kernel command line and the dracut/open-iscsi shell parsers.
const IQN_RE =
  /^iqn\.\d{4}-(0[1-9]|1[0-2])\.[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*(:[a-z0-9.:-]+)?$/;
const EUI_RE = /^eui\.[0-9a-fA-F]{16}$/;
const NAA_RE = /^naa\.([0-9a-fA-F]{16}|[0-9a-fA-F]{32})$/;

/** Why an iSCSI name is unusable, or undefined when it is fine. */
export function iscsiNameProblem(name: string): string | undefined {
  if (name.length > 223) return "is longer than 223 bytes (RFC 3720)";
  if (name.startsWith("iqn.")) {
    if (!IQN_RE.test(name))
      return "is not an RFC 3720 iqn. name in normalised form (iqn.YYYY-MM.reversed.domain[:unique], lowercase letters, digits, '.', '-', ':')";
    // open-iscsi's initramfs splits root=iscsi:...:<iqn> on ':' and drops one trailing empty field.
    if (name.endsWith(":")) return "ends with ':', which open-iscsi's initramfs would cut off";
    // dracut finds the target name by its last ":iqn."/":eui."/":naa.": such a suffix would cut it.
    if (/:(iqn|eui|naa)\./.test(name.slice(4)))
      return "contains ':iqn.', ':eui.' or ':naa.', which dracut would split on";
    return undefined;
  }
  if (name.startsWith("eui."))
    return EUI_RE.test(name) ? undefined : "is not an eui. name (eui. + 16 hex digits)";
  if (name.startsWith("naa."))
    return NAA_RE.test(name) ? undefined : "is not a naa. name (naa. + 16 or 32 hex digits)";
  return "must start with iqn., eui. or naa. (RFC 3720)";
}

export const iscsiNameSchema = z.string().superRefine((name, ctx) => {
  const problem = iscsiNameProblem(name);
  if (problem) ctx.addIssue({ code: "custom", message: `${JSON.stringify(name)} ${problem}` });
});

/** A CHAP user name or secret: refused when GRUB, the kernel or an initramfs parser could mangle it. */
export function chapValueProblem(value: string): string | undefined {
  if (value.length === 0) return "is empty";
  if (value.length > 255) return "is longer than 255 characters";
  if (/[\s'"\\$*?[\]{}@:;|&<>`#~!]/.test(value) || /[^\x21-\x7e]/.test(value))
    return "contains a character that cannot be passed safely on the kernel command line (whitespace, quotes, backslash, $, glob characters, @, : and other shell specials are refused)";
  return undefined;
}

const chapValue = (what: string) =>
  z.string().superRefine((v, ctx) => {
    const problem = chapValueProblem(v);
    // Never echo the value: it may be a secret.
    if (problem) ctx.addIssue({ code: "custom", message: `${what} ${problem}` });
  });

const chapSecret = (what: string) => resolvedSecret.pipe(chapValue(what));

export const chapSchema = z
  .strictObject({
    username: chapValue("CHAP user name"),
    password: chapSecret("CHAP password"),
    in_username: chapValue("CHAP reverse user name").optional(),
    in_password: chapSecret("CHAP reverse password").optional(),
  })
  .refine((c) => (c.in_username === undefined) === (c.in_password === undefined), {
    message: "in_username and in_password go together (mutual CHAP)",
  });
export type ChapConfig = z.infer<typeof chapSchema>;

export interface Portal {
  /** IPv4 address, IPv6 address (no brackets) or host name. */
  host: string;
  port: number;
}

const IPV4_RE = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
const HOSTNAME_RE =
  /^(?=.{1,253}$)[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)*$/;

export function isIPv6(host: string): boolean {
  if (!/^[0-9a-fA-F:.]+$/.test(host) || !host.includes(":")) return false;
  try {
    new URL(`http://[${host}]/`);
    return true;
  } catch {
    return false;
  }
}

/**
 * Parses `ip`, `ip:port`, `[v6]` or `[v6]:port` (the shapes Cinder and operators write).
 * Returns a reason string when it is not a portal.
 */
export function parsePortal(text: string): Portal | string {
  let host: string;
  let portText: string | undefined;
  const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(text);
  if (bracketed) {
    host = bracketed[1] ?? "";
    portText = bracketed[2];
    if (!isIPv6(host)) return `${JSON.stringify(text)}: ${host} is not an IPv6 address`;
  } else {
    const parts = text.split(":");
    if (parts.length > 2)
      return `${JSON.stringify(text)}: an IPv6 portal must be written in brackets, e.g. [fd00::1]:3260`;
    host = parts[0] ?? "";
    portText = parts[1];
    if (!IPV4_RE.test(host) && !(HOSTNAME_RE.test(host) && /[a-zA-Z]/.test(host)))
      return `${JSON.stringify(text)}: ${host} is not an IPv4 address or host name`;
  }
  const port = portText === undefined ? 3260 : Number(portText);
  if (!Number.isInteger(port) || port < 1 || port > 65535)
    return `${JSON.stringify(text)}: port must be 1-65535`;
  return { host, port };
}

export const portalSchema = z.string().transform((text, ctx) => {
  const portal = parsePortal(text);
  if (typeof portal === "string") {
    ctx.addIssue({ code: "custom", message: portal });
    return z.NEVER;
  }
  return portal;
});

/** SAM flat addressing goes up to 16383; tgt's data LUNs start at 1 (LUN 0 is the controller). */
export const lunSchema = z.number().int().min(0).max(16383);

export const staticVolumeSchema = z.strictObject({
  resolver: z.literal("static"),
  portals: z.array(portalSchema).min(1),
  iqn: iscsiNameSchema,
  lun: lunSchema,
  chap: chapSchema.optional(),
});

export const cinderVolumeSchema = z.strictObject({
  resolver: z.literal("cinder"),
  volume_id: z.string().regex(/^[0-9a-fA-F-]{32,36}$/, "must be a Cinder volume UUID"),
});

/** The node's boot volume as Ironic records it (its volume connectors and boot_index 0 target). */
export const ironicVolumeSchema = z.strictObject({
  resolver: z.literal("ironic"),
  /** The Ironic node's UUID or name. */
  node: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._~-]{0,254}$/, "must be an Ironic node UUID or name"),
});

export const volumeSchema = z.discriminatedUnion("resolver", [
  staticVolumeSchema,
  cinderVolumeSchema,
  ironicVolumeSchema,
]);

const MAC_RE = /^[0-9a-f]{2}([:-])[0-9a-f]{2}(\1[0-9a-f]{2}){4}$/i;

/** Normalises a MAC to GRUB's `$net_default_mac` form: lowercase, colon separated. */
export function normaliseMac(mac: string): string | undefined {
  if (!MAC_RE.test(mac)) return undefined;
  return mac.toLowerCase().replaceAll("-", ":");
}

export const macSchema = z.string().transform((mac, ctx) => {
  const normal = normaliseMac(mac);
  if (normal === undefined) {
    ctx.addIssue({
      code: "custom",
      message: `${JSON.stringify(mac)} is not a MAC address (aa:bb:cc:dd:ee:ff)`,
    });
    return z.NEVER;
  }
  return normal;
});

/** Initiator name used when a machine has none: stable across restarts, unique per machine name. */
export function deriveInitiatorIqn(name: string): string {
  const unique = name.toLowerCase().replace(/[^a-z0-9.-]/g, "-");
  return `iqn.2024-01.org.netboot-appliance:${unique}`;
}

export const machineSchema = z
  .strictObject({
    name: z
      .string()
      .regex(
        /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/,
        "must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit",
      ),
    macs: z.array(macSchema).min(1),
    uuid: z
      .string()
      .regex(
        /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/,
        "must be a UUID",
      )
      .transform((u) => u.toLowerCase())
      .optional(),
    arch: bootArchSchema.optional(),
    image: z.string().min(1).optional(),
    initiator_iqn: iscsiNameSchema.optional(),
    /**
     * The address this machine boots from, pinned by the operator (a reservation on the site's DHCP
     * server). Needed in dhcp proxy and off mode to serve a config carrying a secret; in full mode it
     * must agree with the lease.
     */
    address: z.ipv4({ message: "is not an IPv4 address" }).optional(),
    /**
     * The first-stage loader: `shim` (signed shim, then signed GRUB over TFTP: Secure Boot works) or
     * `ipxe` (unsigned iPXE, then kernel and initrd over HTTP: faster, no Secure Boot).
     */
    loader: z.enum(["shim", "ipxe"]).default("shim"),
    volume: volumeSchema,
  })
  .transform((m) => ({ ...m, initiator_iqn: m.initiator_iqn ?? deriveInitiatorIqn(m.name) }));
export type Machine = z.output<typeof machineSchema>;

/** The machine list: names, MACs, UUIDs and initiator names unique. */
export const machinesSchema = z.array(machineSchema).superRefine((machines, ctx) => {
  const seen = new Map<string, number>();
  const claim = (key: string, index: number, path: (string | number)[], what: string) => {
    const first = seen.get(key);
    if (first !== undefined && first !== index)
      ctx.addIssue({
        code: "custom",
        path: [index, ...path],
        message: `${what} is also used by machine #${first + 1}`,
      });
    else seen.set(key, index);
  };
  machines.forEach((m, i) => {
    claim(`name:${m.name.toLowerCase()}`, i, ["name"], `name ${m.name}`);
    m.macs.forEach((mac, j) => {
      claim(`mac:${mac}`, i, ["macs", j], `MAC ${mac}`);
    });
    if (m.uuid) claim(`uuid:${m.uuid}`, i, ["uuid"], `UUID ${m.uuid}`);
    claim(`iqn:${m.initiator_iqn}`, i, ["initiator_iqn"], `initiator IQN ${m.initiator_iqn}`);
    if (m.address) claim(`address:${m.address}`, i, ["address"], `address ${m.address}`);
  });
});
export type Machines = z.output<typeof machinesSchema>;

/** Reads an inventory file (a YAML list of machines, or `{ machines: [...] }`). Throws with field paths. */
export function loadInventoryFile(path: string): Machines {
  const doc = parseYaml(readFileSync(path, "utf8")) as unknown;
  const list =
    doc !== null && typeof doc === "object" && !Array.isArray(doc) && "machines" in doc
      ? (doc as { machines: unknown }).machines
      : doc;
  const parsed = machinesSchema.safeParse(list);
  if (!parsed.success) {
    const lines = parsed.error.issues.map(
      (issue) => `${path}: machines.${issue.path.join(".")}: ${issue.message}`,
    );
    throw new Error(lines.join("\n"));
  }
  return parsed.data;
}

/** A kernel-command-line word: nothing GRUB's `linux` would quote or escape. */
const cmdlineWord = z
  .string()
  .min(1)
  .regex(/^[\x21-\x7e]+$/, "must be printable ASCII without whitespace")
  .refine((v) => !/['"\\$]/.test(v), "must not contain quotes, backslash or $");

const fileSourceSchema = z.union([
  z.strictObject({ path: z.string().min(1) }),
  z.strictObject({ glance_id: z.string().regex(/^[0-9a-fA-F-]{32,36}$/, "must be a Glance image UUID") }),
]);
export type FileSource = z.infer<typeof fileSourceSchema>;

export const imageSchema = z.strictObject({
  /** Optional for Cinder volumes whose volume_image_metadata names the kernel and ramdisk. */
  kernel: fileSourceSchema.optional(),
  initrd: fileSourceSchema.optional(),
  flavour: z.enum(["initramfs-tools", "dracut"]),
  /** Root filesystem, e.g. UUID=...; required for partition images, else the whole LUN is the root. */
  root: cmdlineWord.optional(),
  extra_args: z.array(cmdlineWord).default([]),
  ip: cmdlineWord.default("dhcp"),
});
export type ImageConfig = z.output<typeof imageSchema>;

export const imagesSchema = z.record(
  z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/, "image names are letters, digits, '.', '_' or '-'"),
  imageSchema,
);
export type Images = z.output<typeof imagesSchema>;

/** A TFTP path relative to the TFTP root: no leading slash, no `..`. */
const tftpPathSchema = z
  .string()
  .min(1)
  .transform((p) => p.replace(/^\/+/, ""))
  .refine((p) => !p.split("/").includes(".."), "must stay inside the TFTP root")
  .refine((p) => /^[A-Za-z0-9._/-]+$/.test(p), "letters, digits, '.', '_', '-' and '/' only");

export const loaderSchema = z.strictObject({
  shim: tftpPathSchema,
  grub: tftpPathSchema,
  /** iPXE for machines with `loader: ipxe`; its script comes over HTTP, so `http.enable` is needed. */
  ipxe: tftpPathSchema.optional(),
});

const grubEntrySchema = z.strictObject({
  title: z
    .string()
    .min(1)
    .max(200)
    .refine(
      (t) => ![...t].some((c) => c.charCodeAt(0) < 0x20 || c.charCodeAt(0) === 0x7f),
      "must be one line without control characters",
    ),
  /** GRUB commands, one per line, written verbatim into the entry. */
  commands: z.array(z.string().refine((l) => !/[\r\n]/.test(l), "one command per line")).min(1),
});

export const bootConfigSchema = z.strictObject({
  loaders: z.strictObject({ x64: loaderSchema.optional(), aa64: loaderSchema.optional() }),
  grub: z
    .strictObject({
      timeout: z.number().int().min(0).max(3600).default(5),
      extra_entries: z.array(grubEntrySchema).default([]),
    })
    .default({ timeout: 5, extra_entries: [] }),
  http_base_url: z.url().optional(),
  /** Name of the inventory machine whose boot an unknown MAC gets; absent: unknown machines get nothing. */
  default_machine: z.string().optional(),
});
export type BootConfig = z.output<typeof bootConfigSchema>;

export const cinderSchema = z.strictObject({
  auth_url: z.url(),
  auth: z.discriminatedUnion("type", [
    z.strictObject({
      type: z.literal("password"),
      username: z.string().min(1),
      password: resolvedSecret,
      user_domain_name: z.string().min(1).default("Default"),
      project_name: z.string().min(1),
      project_domain_name: z.string().min(1).default("Default"),
    }),
    z.strictObject({
      type: z.literal("application_credential"),
      id: z.string().min(1),
      secret: resolvedSecret,
    }),
  ]),
  region: z.string().min(1).optional(),
  interface: z.enum(["public", "internal", "admin"]).default("public"),
  endpoint_override: z.url().optional(),
  timeout_ms: z.number().int().min(100).max(120_000).default(5000),
  retries: z.number().int().min(0).max(10).default(2),
  microversion: z
    .string()
    .regex(/^3\.\d+$/)
    .default("3.44"),
  /** Largest Glance kernel or initrd accepted, whatever Glance claims (default 2 GiB). */
  image_max_bytes: z
    .number()
    .int()
    .min(1024 * 1024)
    .max(64 * 1024 ** 3)
    .default(2 * 1024 ** 3),
  /** Deadline for one whole Glance download (the inactivity limit is timeout_ms). Default 15 min. */
  image_download_timeout_ms: z.number().int().min(1000).max(86_400_000).default(900_000),
  /**
   * Delete the Cinder attachment of a machine that has left the inventory (or Ironic), logging each one.
   * Off by default: an attachment is the volume's export to the machine, and removing it is not undoable.
   */
  detach_departed: z.boolean().default(false),
});
export type CinderConfig = z.output<typeof cinderSchema>;

const microversionNumber = (v: string) => Number(v.split(".")[1] ?? 0);

/**
 * `resolvers.ironic`: nodes, their ports, volume connectors and volume targets from the Ironic API. It
 * authenticates with the Keystone credentials of `resolvers.cinder` (the same session).
 */
export const ironicSchema = z
  .strictObject({
    endpoint_override: z.url().optional(),
    /** X-OpenStack-Ironic-API-Version: 1.32 introduced the volume resources. */
    microversion: z
      .string()
      .regex(/^1\.\d+$/, "must be 1.N")
      .refine((v) => microversionNumber(v) >= 32, "must be at least 1.32 (the volume resources)")
      .default("1.32"),
    /** The image (initramfs flavour, root, extra args; kernel and initrd as a fallback) Ironic nodes boot. */
    image: z.string().min(1),
    /** Which nodes are served. */
    select: z
      .strictObject({
        /** properties.capabilities that must all be present, compared as text (Ironic stores "True"). */
        capabilities: z
          .record(z.string().regex(/^[A-Za-z0-9_.-]+$/), z.string().regex(/^[^,:]+$/))
          .default({ iscsi_boot: "True", boot_mode: "uefi" }),
        resource_class: z.string().min(1).optional(),
        conductor_group: z.string().min(1).optional(),
        traits: z.array(z.string().min(1)).default([]),
      })
      .prefault({}),
    /** A node's answer is fresh this long; after half of it a boot triggers a background refresh. */
    cache_ttl_s: z.number().int().min(1).max(86_400).default(300),
    /** How long "no such port" is remembered, so that unknown MACs on the segment do not each query Ironic. */
    unknown_ttl_s: z.number().int().min(1).max(3600).default(30),
    /** Ironic requests in flight at most; lookups beyond it wait for the next DHCP retry. */
    max_concurrent: z.number().int().min(1).max(64).default(4),
  })
  .superRefine((c, ctx) => {
    const mv = microversionNumber(c.microversion);
    if (c.select.conductor_group !== undefined && mv < 46)
      ctx.addIssue({
        code: "custom",
        path: ["microversion"],
        message: "select.conductor_group needs microversion 1.46 or later (node.conductor_group)",
      });
    if (c.select.traits.length > 0 && mv < 37)
      ctx.addIssue({
        code: "custom",
        path: ["microversion"],
        message: "select.traits needs microversion 1.37 or later (node.traits)",
      });
  });
export type IronicConfig = z.output<typeof ironicSchema>;
