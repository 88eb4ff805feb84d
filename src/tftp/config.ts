/** The `tftp:` section of the appliance's YAML config. */
import { z } from "zod";
import { PUMP_THREADS_MAX } from "./channel.js";
import {
  BLKSIZE_MAX,
  BLKSIZE_MIN,
  DEFAULT_MAX_BLKSIZE,
  DEFAULT_MAX_WINDOWSIZE,
  DEFAULT_RETRIES,
  WINDOWSIZE_MAX,
} from "./options.js";

export const tftpConfigSchema = z.strictObject({
  root: z.string().min(1),
  address: z.union([z.ipv4(), z.ipv6()]).default("0.0.0.0"),
  port: z.number().int().min(1).max(65535).default(69),
  max_blksize: z.number().int().min(BLKSIZE_MIN).max(BLKSIZE_MAX).default(DEFAULT_MAX_BLKSIZE),
  max_windowsize: z.number().int().min(1).max(WINDOWSIZE_MAX).default(DEFAULT_MAX_WINDOWSIZE),
  timeout_ms: z.number().int().min(10).max(255_000).default(1000),
  retries: z.number().int().min(1).max(100).default(DEFAULT_RETRIES),
  max_transfers: z.number().int().min(1).max(100_000).default(500),
  /** Threads running the pump (native transport); "auto": see pumpThreadsFor (channel.ts). */
  pump_threads: z
    .union([z.literal("auto"), z.number().int().min(0).max(PUMP_THREADS_MAX)], {
      error: `must be "auto" or an integer 0..${PUMP_THREADS_MAX}`,
    })
    .default("auto"),
});
export type TftpConfig = z.infer<typeof tftpConfigSchema>;

/** Maps the validated config section to the server's constructor options (without logger and provider). */
export function tftpServerOptionsFromConfig(c: TftpConfig) {
  return {
    root: c.root,
    address: c.address,
    port: c.port,
    maxBlksize: c.max_blksize,
    maxWindowsize: c.max_windowsize,
    timeoutMs: c.timeout_ms,
    retries: c.retries,
    maxTransfers: c.max_transfers,
    pumpThreads: c.pump_threads,
  };
}
