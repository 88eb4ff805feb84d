import { existsSync } from "node:fs";
import { pino } from "pino";
import { DEFAULT_CONFIG_FILE, loadConfig } from "../config/load.js";
import type { Lease } from "../dhcp/lease-types.js";
import { readLeasesFromStateDir } from "../dhcp/server.js";
import { readLeasesFromDatabase } from "../state/pg-leases.js";
import { connect } from "../state/postgres.js";
import { formatTable } from "./table.js";

export async function commandLeases(values: Record<string, string | boolean | undefined>): Promise<number> {
  let stateDir = typeof values["state-dir"] === "string" ? values["state-dir"] : undefined;
  let databaseUrl: string | undefined;
  if (stateDir === undefined) {
    const file = typeof values.config === "string" ? values.config : undefined;
    if (file === undefined && !existsSync(DEFAULT_CONFIG_FILE)) {
      process.stderr.write("netboot leases: give --config FILE or --state-dir DIR\n");
      return 2;
    }
    const { config } = loadConfig(file);
    stateDir = config.state_dir;
    if (config.state.backend === "postgres") databaseUrl = config.state.url;
  }
  let leases: Lease[];
  let source = stateDir;
  if (databaseUrl) {
    const sql = connect({
      url: databaseUrl,
      maxConnections: 1,
      applicationName: "netboot leases",
      logger: pino({ level: "silent" }),
    });
    try {
      leases = await readLeasesFromDatabase(sql);
    } finally {
      await sql.end({ timeout: 1 });
    }
    source = "the shared PostgreSQL database";
  } else leases = readLeasesFromStateDir(stateDir);
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
  process.stdout.write(`${leases.length} lease(s) in ${source}\n`);
  return 0;
}
