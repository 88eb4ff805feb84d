/**
 * A real PostgreSQL server for a test: initdb and pg_ctl from Debian's postgresql package, in a
 * temporary directory, listening on a Unix socket there (and on loopback at a port when asked).
 * PostgreSQL refuses to run as root, so as root the cluster belongs to the `postgres` user.
 */
import { execFileSync } from "node:child_process";
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { resourceAvailable } from "./require.js";

/** The newest installed PostgreSQL's bin directory, if any. */
export function postgresBinDir(): string | undefined {
  const base = "/usr/lib/postgresql";
  if (!existsSync(base)) return undefined;
  const versions = readdirSync(base)
    .filter((v) => existsSync(join(base, v, "bin", "initdb")))
    .sort((a, b) => Number(b) - Number(a));
  return versions[0] === undefined ? undefined : join(base, versions[0], "bin");
}

export function postgresAvailable(): boolean {
  return resourceAvailable("PostgreSQL server (postgresql package)", postgresBinDir() !== undefined);
}

function ownerIds(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const uid = Number(execFileSync("id", ["-u", "postgres"], { encoding: "utf8" }).trim());
  const gid = Number(execFileSync("id", ["-g", "postgres"], { encoding: "utf8" }).trim());
  return { uid, gid };
}

export class TestPostgres {
  readonly dir: string;
  private readonly bin: string;
  private readonly owner: { uid: number; gid: number } | undefined;

  constructor(readonly port = 5432 + Math.floor(Math.random() * 2000) + 20000) {
    const bin = postgresBinDir();
    if (!bin) throw new Error("PostgreSQL is not installed");
    this.bin = bin;
    this.dir = mkdtempSync(join(tmpdir(), "nbpg-"));
    this.owner = ownerIds();
    if (this.owner) chownSync(this.dir, this.owner.uid, this.owner.gid);
  }

  private run(cmd: string, args: string[]): string {
    return execFileSync(join(this.bin, cmd), args, {
      encoding: "utf8",
      timeout: 120_000,
      stdio: ["ignore", "pipe", "pipe"],
      ...(this.owner ? { uid: this.owner.uid, gid: this.owner.gid } : {}),
      env: { ...process.env, LC_ALL: "C" },
    });
  }

  get dataDir(): string {
    return join(this.dir, "data");
  }

  /** postgres:// URL over the Unix socket in the test directory (user postgres, trust auth). */
  get url(): string {
    return `postgres://postgres@localhost:${this.port}/netboot?host=${encodeURIComponent(this.dir)}`;
  }

  /** The same database over TCP on 127.0.0.1 (for kea, which takes host and port). */
  get tcpUrl(): string {
    return `postgres://postgres@127.0.0.1:${this.port}/netboot`;
  }

  init(): void {
    this.run("initdb", ["-D", this.dataDir, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"]);
    this.start();
    this.run("createdb", ["-h", this.dir, "-p", String(this.port), "-U", "postgres", "netboot"]);
  }

  start(): void {
    this.run("pg_ctl", [
      "-D",
      this.dataDir,
      "-w",
      "-l",
      join(this.dir, "server.log"),
      "-o",
      `-k ${this.dir} -p ${this.port} -c listen_addresses=127.0.0.1 -c max_connections=200`,
      "start",
    ]);
  }

  /** mode fast: sessions are cut at once (a crash looks like immediate). */
  stop(mode: "fast" | "immediate" = "fast"): void {
    this.run("pg_ctl", ["-D", this.dataDir, "-w", "-m", mode, "stop"]);
  }

  psql(query: string): string {
    return this.run("psql", [
      "-h",
      this.dir,
      "-p",
      String(this.port),
      "-U",
      "postgres",
      "-d",
      "netboot",
      "-At",
      "-v",
      "ON_ERROR_STOP=1",
      "-c",
      query,
    ]).trim();
  }

  destroy(): void {
    try {
      this.stop("immediate");
    } catch {
      // already stopped
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}
