/**
 * Loads this project's N-API addons from native/build/Release (built by `node native/build.mjs`, which
 * `npm install` runs). Each addon is loaded once.
 */
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const loaded = new Map<string, unknown>();

export function loadAddon<T>(name: "nbdh_netdev" | "nbdh_udp" | "nbdh_intake" | "nbdh_file"): T {
  const cached = loaded.get(name);
  if (cached !== undefined) return cached as T;
  const require = createRequire(import.meta.url);
  let dir = dirname(fileURLToPath(import.meta.url));
  // src/ when run from sources (vitest), dist/src/ when built: walk up to the repo root.
  for (let i = 0; i < 5; i++) {
    const candidate = join(dir, "native", "build", "Release", `${name}.node`);
    if (existsSync(candidate)) {
      const addon = require(candidate) as T;
      loaded.set(name, addon);
      return addon;
    }
    dir = dirname(dir);
  }
  throw new Error(`native addon ${name}.node not built: run \`node native/build.mjs\` (npm install does it)`);
}
