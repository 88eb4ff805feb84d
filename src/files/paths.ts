/** Request path normalisation and the root jail. */
import { realpath } from "node:fs/promises";
import { sep } from "node:path";

export type NormalisedPath = { ok: true; path: string } | { ok: false; reason: string };

/**
 * Turns a client's filename into a root-relative path: `\` separators (some firmware) become `/`, the
 * leading `/` and empty or `.` segments go, `..` removes the previous segment. A `..` that would climb
 * above the root, NUL or control characters are refused.
 */
export function normaliseRequestPath(filename: string): NormalisedPath {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: refusing control characters is the point
  if (/[\u0000-\u001f\u007f]/.test(filename)) return { ok: false, reason: "control character in path" };
  const segments: string[] = [];
  for (const segment of filename.replace(/\\/g, "/").split("/")) {
    if (segment === "" || segment === ".") continue;
    if (segment === "..") {
      if (segments.length === 0) return { ok: false, reason: "path climbs above the root" };
      segments.pop();
      continue;
    }
    segments.push(segment);
  }
  if (segments.length === 0) return { ok: false, reason: "empty path" };
  return { ok: true, path: segments.join("/") };
}

export type JailResult =
  | { ok: true; realPath: string }
  | { ok: false; outcome: "not-found" | "denied"; reason: string };

/**
 * Resolves a normalised path under the (already real) root, following symlinks, and refuses a result
 * outside the root.
 */
export async function resolveInRoot(realRoot: string, relative: string): Promise<JailResult> {
  let real: string;
  try {
    real = await realpath(`${realRoot}${sep}${relative}`);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR")
      return { ok: false, outcome: "not-found", reason: "no such file" };
    if (code === "EACCES") return { ok: false, outcome: "denied", reason: "permission denied" };
    if (code === "ELOOP") return { ok: false, outcome: "denied", reason: "symlink loop" };
    return { ok: false, outcome: "not-found", reason: String(code ?? err) };
  }
  const prefix = realRoot.endsWith(sep) ? realRoot : `${realRoot}${sep}`;
  if (!real.startsWith(prefix)) return { ok: false, outcome: "denied", reason: "resolves outside the root" };
  return { ok: true, realPath: real };
}
