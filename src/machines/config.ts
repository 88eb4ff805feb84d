/** The `sessions:` section: how many boot sessions are kept, and when a silent one counts as stalled. */
import { z } from "zod";
import type { SessionLimits } from "./sessions.js";

export const sessionsConfigSchema = z
  .strictObject({
    /** Keep boot sessions (the API's timelines and diagnoses). Off: metrics only. */
    record: z.boolean().default(true),
    per_machine: z.number().int().min(1).max(1000).default(10),
    total: z.number().int().min(1).max(1_000_000).default(10_000),
    /** A boot with no DHCP or file event for this long, before its kernel and initrd, is stalled. */
    stall_after_seconds: z.number().min(1).max(86_400).default(120),
  })
  .prefault({});
export type SessionsConfig = z.output<typeof sessionsConfigSchema>;

export function sessionLimits(c: SessionsConfig): SessionLimits {
  return { perMachine: c.per_machine, total: c.total, stallAfterMs: c.stall_after_seconds * 1000 };
}
