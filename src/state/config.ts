/** Schema of the YAML `state:` section: where leases and shared machine state live. */
import { z } from "zod";
import { resolvedSecret } from "../config/secret.js";

export const stateConfigSchema = z
  .strictObject({
    /** journal: an append-only file in state_dir (one appliance). postgres: shared by an HA pair. */
    backend: z.enum(["journal", "postgres"]).default("journal"),
    /**
     * postgres://user:password@host:port/db or postgres:///db?host=/run/postgresql. It carries a
     * password, so it takes the secret forms (inline, { file }, { env }) and never reaches a log.
     */
    url: resolvedSecret.optional(),
    /** A commit that has not answered in this long fails (no ACK goes out). */
    commit_timeout_ms: z.number().int().min(100).max(60_000).default(3000),
    /** At most this many connections to the database. */
    max_connections: z.number().int().min(2).max(64).default(4),
  })
  .superRefine((s, ctx) => {
    if (s.backend === "postgres" && s.url === undefined)
      ctx.addIssue({ code: "custom", path: ["url"], message: "backend postgres needs a url" });
    if (s.url !== undefined && !/^postgres(ql)?:\/\//.test(s.url))
      // The value is a secret: say what is wrong with it without repeating it.
      ctx.addIssue({
        code: "custom",
        path: ["url"],
        message: "must start with postgres:// or postgresql://",
      });
  });

export type StateConfig = z.output<typeof stateConfigSchema>;
