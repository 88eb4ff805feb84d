// Builds the nbdh_netdev addon with the node-gyp that ships inside npm (no npm dependency).
// Debian's nodejs package installs its headers under /usr/include/node: use them instead of downloading.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const candidates = [
  process.env.npm_config_node_gyp,
  join(dirname(process.execPath), "../lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js"),
  "/usr/share/nodejs/npm/node_modules/node-gyp/bin/node-gyp.js",
  "/usr/lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js",
].filter((p) => p !== undefined && p !== "");
const gyp = candidates.find((p) => existsSync(p));
if (gyp === undefined) {
  console.error(`native/build.mjs: node-gyp not found (looked in ${candidates.join(", ")})`);
  process.exit(1);
}
const args = [gyp, "rebuild", "--directory", here];
const systemHeaders = join(dirname(process.execPath), "../include/node/node_api.h");
if (!process.env.npm_config_nodedir && existsSync(systemHeaders))
  args.push(`--nodedir=${join(dirname(process.execPath), "..")}`);
const result = spawnSync(process.execPath, args, { stdio: "inherit" });
process.exit(result.status ?? 1);
