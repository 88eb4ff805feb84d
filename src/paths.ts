/** Path safety shared by everything that turns outside input into a file name. */
import { isAbsolute, relative, resolve, sep } from "node:path";

/** True when `path` (resolved) is `dir` itself or lies below it; `..` and absolute tricks are caught. */
export function isInside(dir: string, path: string): boolean {
  const rel = relative(resolve(dir), resolve(path));
  return rel === "" || (!rel.startsWith(`..${sep}`) && rel !== ".." && !isAbsolute(rel));
}

/** `dir/...parts`, or a thrown error when the result would leave `dir`. */
export function joinInside(dir: string, ...parts: string[]): string {
  const path = resolve(dir, ...parts);
  if (!isInside(dir, path) || path === resolve(dir))
    throw new Error(`refused path ${JSON.stringify(parts.join("/"))}: it leaves ${dir}`);
  return path;
}
