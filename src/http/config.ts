/** The `http:` section: the boot HTTP server (UEFI HTTP boot, and loaders fetching kernels over HTTP). */
import { z } from "zod";

export const httpConfigSchema = z
  .strictObject({
    enable: z.boolean().default(false),
    /** Bind address; defaults to listen.address, else all addresses. */
    address: z.union([z.ipv4(), z.ipv6()]).default("0.0.0.0"),
    port: z.number().int().min(1).max(65535).default(80),
    max_connections: z.number().int().min(1).max(100_000).default(1000),
    /** A connection with no traffic for this long is closed. */
    idle_timeout_ms: z.number().int().min(100).max(3_600_000).default(30_000),
    /** The request line and headers must arrive within this (slowloris). */
    header_timeout_ms: z.number().int().min(100).max(120_000).default(10_000),
  })
  .prefault({});
export type HttpConfig = z.output<typeof httpConfigSchema>;
