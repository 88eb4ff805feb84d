/**
 * The connection to PostgreSQL and the schema migrations. Migrations run in one transaction under a
 * transaction-scoped advisory lock, so two appliances starting at once apply each step exactly once.
 */
import type { Logger } from "pino";
import postgres from "postgres";
import { MIGRATIONS, type Migration } from "./migrations.js";

export type Sql = postgres.Sql;

/** Arbitrary, fixed: the advisory lock key that serialises migrations ("netboot" in ASCII, as an int). */
const MIGRATION_LOCK = 0x6e6574626f6f74n;

export interface ConnectOptions {
  url: string;
  maxConnections: number;
  /** Name shown in pg_stat_activity. */
  applicationName: string;
  logger: Logger;
}

/**
 * libpq's form for a Unix socket, `?host=/run/postgresql`, which postgres.js reads as a server
 * parameter: it becomes the socket path, and the rest of the URL stays as written.
 */
export function socketPathOf(url: string): { url: string; path?: string } {
  const q = url.indexOf("?");
  if (q === -1) return { url };
  const params = new URLSearchParams(url.slice(q + 1));
  const host = params.get("host");
  if (host === null || !host.startsWith("/")) return { url };
  params.delete("host");
  const port = params.get("port") ?? /:(\d+)\//.exec(url)?.[1] ?? "5432";
  params.delete("port");
  const rest = params.toString();
  return { url: url.slice(0, q) + (rest ? `?${rest}` : ""), path: `${host}/.s.PGSQL.${port}` };
}

export function connect(opts: ConnectOptions): Sql {
  const { url, path } = socketPathOf(opts.url);
  return postgres(url, {
    ...(path ? { path } : {}),
    max: opts.maxConnections,
    connect_timeout: 5,
    idle_timeout: 0,
    // expires_ms (int8) as a number: Unix milliseconds fit a double exactly for 285,000 years.
    types: {
      int8ms: { to: 20, from: [20], serialize: (n: number) => String(n), parse: (s: string) => Number(s) },
    },
    connection: { application_name: opts.applicationName },
    onnotice: (n) => opts.logger.debug({ notice: n.message }, "postgres notice"),
  });
}

/** Applies the missing migrations (up to `upTo`, for tests of an older schema); returns the version. */
export async function migrate(
  sql: Sql,
  logger: Logger,
  migrations: readonly Migration[] = MIGRATIONS,
  upTo = Number.POSITIVE_INFINITY,
): Promise<number> {
  return sql.begin(async (tx) => {
    await tx`SELECT pg_advisory_xact_lock(${MIGRATION_LOCK.toString()}::bigint)`;
    await tx`CREATE TABLE IF NOT EXISTS netboot_schema (
      version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`;
    const rows = await tx<{ version: number }[]>`SELECT version FROM netboot_schema`;
    const have = new Set(rows.map((r) => r.version));
    let version = Math.max(0, ...have);
    for (const m of migrations) {
      if (have.has(m.version) || m.version > upTo) continue;
      if (m.version < version)
        throw new Error(`database schema has version ${version} but lacks step ${m.version} (${m.name})`);
      await tx.unsafe(m.sql);
      await tx`INSERT INTO netboot_schema (version, name) VALUES (${m.version}, ${m.name})`;
      logger.info({ version: m.version, name: m.name }, "database schema step applied");
      version = m.version;
    }
    const newest = migrations[migrations.length - 1]?.version ?? 0;
    if (version > newest)
      throw new Error(
        `database schema version ${version} is newer than this appliance knows (${newest}): upgrade the appliance`,
      );
    return version;
  });
}
