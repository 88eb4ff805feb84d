import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** The folder holding package.json, whether we run from src/ (tests) or dist/src/ (installed). */
export function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, "package.json"))) {
    const parent = dirname(dir);
    if (parent === dir) throw new Error("cannot find the netboot-appliance package root");
    dir = parent;
  }
  return dir;
}

export const templatesDir = (): string => join(packageRoot(), "templates");
