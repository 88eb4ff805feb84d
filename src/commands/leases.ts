import { existsSync } from "node:fs";
import { DEFAULT_CONFIG_FILE, loadConfig } from "../config/load.js";
import { readLeasesFromStateDir } from "../dhcp/server.js";
import { formatTable } from "./table.js";

export async function commandLeases(values: Record<string, string | boolean | undefined>): Promise<number> {
  let stateDir = typeof values["state-dir"] === "string" ? values["state-dir"] : undefined;
  if (stateDir === undefined) {
    const file = typeof values.config === "string" ? values.config : undefined;
    if (file === undefined && !existsSync(DEFAULT_CONFIG_FILE)) {
      process.stderr.write("netboot leases: give --config FILE or --state-dir DIR\n");
      return 2;
    }
    stateDir = loadConfig(file).config.state_dir;
  }
  const leases = readLeasesFromStateDir(stateDir);
  if (values.json) {
    process.stdout.write(`${JSON.stringify(leases, null, 2)}\n`);
    return 0;
  }
  const rows = leases.map((l) => [
    l.address,
    l.mac,
    l.state,
    l.hostname ?? "",
    new Date(l.expires).toISOString(),
  ]);
  process.stdout.write(formatTable(["ADDRESS", "MAC", "STATE", "HOSTNAME", "EXPIRES"], rows));
  process.stdout.write(`${leases.length} lease(s) in ${stateDir}\n`);
  return 0;
}
