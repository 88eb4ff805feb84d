/**
 * The schema, as numbered steps. A step is never edited once released: a change is a new step. Each
 * database records the steps it has in `netboot_schema`; `migrate` applies the missing ones in order.
 */
export interface Migration {
  version: number;
  name: string;
  sql: string;
}

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: "leases",
    // One row per address: the primary key is what stops two servers giving one address to two MACs.
    sql: `
      CREATE TABLE netboot_leases (
        address    inet PRIMARY KEY,
        mac        text NOT NULL,
        expires_ms bigint NOT NULL,
        state      char(1) NOT NULL CHECK (state IN ('b', 'f', 'd')),
        hostname   text NOT NULL DEFAULT ''
      );`,
  },
  {
    version: 2,
    name: "ha-peers",
    // Which appliance wrote a lease last, a MAC index for lookups, and each appliance's heartbeat.
    sql: `
      ALTER TABLE netboot_leases ADD COLUMN served_by text NOT NULL DEFAULT '';
      ALTER TABLE netboot_leases ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();
      CREATE INDEX netboot_leases_mac ON netboot_leases (mac);
      CREATE TABLE netboot_peers (
        name       text PRIMARY KEY,
        role       text NOT NULL,
        started_at timestamptz NOT NULL,
        beat_at    timestamptz NOT NULL
      );`,
  },
  {
    version: 3,
    name: "boot-events",
    // What each appliance served (DHCP exchanges, files), so either shows a machine's whole boot.
    sql: `
      CREATE TABLE netboot_boot_events (
        id        bigserial PRIMARY KEY,
        served_by text NOT NULL,
        at_ms     bigint NOT NULL,
        event     jsonb NOT NULL
      );
      CREATE INDEX netboot_boot_events_at ON netboot_boot_events (at_ms);`,
  },
];

export const SCHEMA_VERSION = MIGRATIONS[MIGRATIONS.length - 1]?.version ?? 0;
