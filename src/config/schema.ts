import { z } from "zod";
import { adminConfigSchema } from "../admin/config.js";
import {
  bootConfigSchema,
  cinderSchema,
  imagesSchema,
  ironicSchema,
  machinesSchema,
} from "../bootplan/config.js";
import { dhcpConfigSchema } from "../dhcp/config.js";
import { httpConfigSchema } from "../http/config.js";
import { sessionsConfigSchema } from "../machines/config.js";
import { tftpConfigSchema } from "../tftp/config.js";

export const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;

/**
 * The whole appliance config. Each part owns its section's schema; this file only composes them,
 * so a section's rules live beside the code that uses them.
 */
export const configSchema = z.strictObject({
  /** Defaults for the services: interfaces DHCP serves, the address TFTP binds and DHCP names as next-server. */
  listen: z
    .strictObject({
      interfaces: z.array(z.string().min(1)).default([]),
      address: z.ipv4({ message: "is not an IPv4 address" }).optional(),
    })
    .prefault({}),
  log: z.strictObject({ level: z.enum(LOG_LEVELS).default("info") }).prefault({}),
  state_dir: z.string().min(1).default("/var/lib/netboot-appliance"),
  cache_dir: z.string().min(1).default("/var/cache/netboot-appliance"),
  dhcp: dhcpConfigSchema.prefault({}),
  tftp: tftpConfigSchema,
  http: httpConfigSchema,
  admin: adminConfigSchema,
  sessions: sessionsConfigSchema,
  boot: bootConfigSchema.prefault({ loaders: {} }),
  images: imagesSchema.default({}),
  machines: machinesSchema.optional(),
  /** A separate YAML file holding the `machines:` list (relative to this config file). */
  inventory: z.string().min(1).optional(),
  resolvers: z
    .strictObject({ cinder: cinderSchema.optional(), ironic: ironicSchema.optional() })
    .prefault({}),
});

export type Config = z.output<typeof configSchema>;
export type RawConfig = z.input<typeof configSchema>;
