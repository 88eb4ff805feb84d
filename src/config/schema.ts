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
import { haConfigSchema } from "../ha/config.js";
import { httpConfigSchema } from "../http/config.js";
import { sessionsConfigSchema } from "../machines/config.js";
import { stateConfigSchema } from "../state/config.js";
import { tftpConfigSchema } from "../tftp/config.js";

export const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;

/**
 * The whole appliance config. Each part owns its section's schema; this file only composes them,
 * so a section's rules live beside the code that uses them.
 */
export const configSchema = z
  .strictObject({
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
    /** Where leases and shared machine state live: the journal in state_dir, or PostgreSQL for a pair. */
    state: stateConfigSchema.prefault({}),
    /** Two appliances on one segment, sharing `state` on PostgreSQL. */
    ha: haConfigSchema.optional(),
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
  })
  .superRefine((c, ctx) => {
    if (c.ha && c.state.backend !== "postgres")
      ctx.addIssue({
        code: "custom",
        path: ["ha"],
        message: "an HA pair shares its leases: it needs state.backend postgres",
      });
    if (c.ha && c.dhcp.mode !== "full")
      ctx.addIssue({
        code: "custom",
        path: ["ha"],
        message: `an HA pair hands out leases: it needs dhcp.mode full, not ${c.dhcp.mode}`,
      });
  });

export type Config = z.output<typeof configSchema>;
export type RawConfig = z.input<typeof configSchema>;
