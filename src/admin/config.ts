/** The `admin:` section: the management listener (API, web page, /metrics), off the provisioning network. */
import { z } from "zod";
import { resolvedSecret } from "../config/secret.js";

/** "ADDR:PORT", IPv4 or [IPv6]. */
export const listenAddressSchema = z
  .string()
  .regex(/^(\d{1,3}(\.\d{1,3}){3}|\[[0-9a-fA-F:]+\]):\d{1,5}$/, "must be ADDR:PORT, e.g. 127.0.0.1:9090")
  .transform((v) => {
    const cut = v.lastIndexOf(":");
    return { address: v.slice(0, cut).replace(/^\[|\]$/g, ""), port: Number(v.slice(cut + 1)) };
  })
  .refine((v) => v.port >= 1 && v.port <= 65535, "port must be 1-65535");

export const adminConfigSchema = z
  .strictObject({
    /** Absent: no management listener. */
    listen: listenAddressSchema.optional(),
    /**
     * Bearer token for the API and the web page (inline, {file:} or {env:}). Without one, /metrics is
     * still served and the API and page refuse every request.
     */
    token: resolvedSecret
      .pipe(
        z
          .string()
          .min(16, "must be at least 16 characters")
          .regex(/^[\x21-\x7e]+$/, "must be printable ASCII without spaces"),
      )
      .optional(),
  })
  .prefault({});
export type AdminConfig = z.output<typeof adminConfigSchema>;
