import { readFileSync } from "node:fs";
import { isAbsolute, resolve } from "node:path";
import { z } from "zod";

/**
 * A secret given inline, from a file (first line, trailing newline stripped) or from an environment variable.
 * Exactly one of the three. Resolved once when the config is loaded, so a missing file fails at start.
 *
 *   password: s3cret
 *   password: { file: /etc/netboot-appliance/chap.secret }
 *   password: { env: CHAP_SECRET }
 */
export const secretSchema = z.union([
  z.string().min(1),
  z.strictObject({ file: z.string().min(1) }),
  z.strictObject({ env: z.string().min(1) }),
]);
export type SecretSpec = z.infer<typeof secretSchema>;

/** Relative secret files are relative to the config file being loaded (set by the loader while it parses). */
let secretBaseDir: string | undefined;

export function withSecretBaseDir<T>(dir: string, parse: () => T): T {
  const previous = secretBaseDir;
  secretBaseDir = dir;
  try {
    return parse();
  } finally {
    secretBaseDir = previous;
  }
}

/** Resolves a secret spec to its value; throws an Error with a reason (the caller adds file and field). */
export function resolveSecret(spec: SecretSpec, env: NodeJS.ProcessEnv = process.env): string {
  if (typeof spec === "string") return spec;
  if ("file" in spec) {
    const path =
      isAbsolute(spec.file) || secretBaseDir === undefined ? spec.file : resolve(secretBaseDir, spec.file);
    let text: string;
    try {
      text = readFileSync(path, "utf8");
    } catch (err) {
      throw new Error(`cannot read secret file ${spec.file}: ${(err as NodeJS.ErrnoException).code ?? err}`);
    }
    const value = text.split(/\r?\n/, 1)[0] ?? "";
    if (value === "") throw new Error(`secret file ${spec.file} is empty`);
    return value;
  }
  const value = env[spec.env];
  if (value === undefined || value === "") throw new Error(`environment variable ${spec.env} is not set`);
  return value;
}

/** A zod schema that accepts a secret spec and yields the resolved string, reporting failures as issues. */
export const resolvedSecret = secretSchema.transform((spec, ctx) => {
  try {
    return resolveSecret(spec);
  } catch (err) {
    ctx.addIssue({ code: "custom", message: (err as Error).message });
    return z.NEVER;
  }
});
