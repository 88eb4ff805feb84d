/** Network namespaces and veth pairs for the DHCP tests; every name starts with "nbdh". */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";

export const repoRoot = join(import.meta.dirname, "..", "..", "..");

export function sh(
  cmd: string,
  args: string[],
  opts: { allowFail?: boolean; timeout?: number } = {},
): string {
  try {
    return execFileSync(cmd, args, {
      encoding: "utf8",
      timeout: opts.timeout ?? 30_000,
      stdio: ["ignore", "pipe", "pipe"],
    });
  } catch (err) {
    if (opts.allowFail) return "";
    const e = err as { stderr?: string; stdout?: string; message: string };
    throw new Error(`${cmd} ${args.join(" ")}: ${e.stderr ?? ""}${e.stdout ?? ""}${e.message}`);
  }
}

export class Lab {
  readonly namespaces: string[] = [];
  readonly children: ChildProcess[] = [];

  ns(name: string): string {
    sh("ip", ["netns", "del", name], { allowFail: true });
    sh("ip", ["netns", "add", name]);
    this.namespaces.push(name);
    sh("ip", ["-n", name, "link", "set", "lo", "up"]);
    return name;
  }

  /** A veth pair: `a` in nsA with addrA (CIDR or undefined), `b` in nsB with addrB. */
  link(
    nsA: string,
    a: string,
    addrA: string | undefined,
    nsB: string,
    b: string,
    addrB: string | undefined,
  ): void {
    sh("ip", ["link", "add", a, "netns", nsA, "type", "veth", "peer", "name", b, "netns", nsB]);
    for (const [ns, dev, addr] of [
      [nsA, a, addrA],
      [nsB, b, addrB],
    ] as const) {
      if (addr) sh("ip", ["-n", ns, "addr", "add", addr, "dev", dev]);
      sh("ip", ["-n", ns, "link", "set", dev, "up"]);
    }
  }

  exec(
    ns: string,
    cmd: string,
    args: string[],
    opts: { allowFail?: boolean; timeout?: number } = {},
  ): string {
    return sh("ip", ["netns", "exec", ns, cmd, ...args], opts);
  }

  spawn(ns: string, cmd: string, args: string[]): ChildProcess {
    const child = spawn("ip", ["netns", "exec", ns, cmd, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    this.children.push(child);
    return child;
  }

  cleanup(): void {
    for (const c of this.children) if (c.exitCode === null && c.pid !== undefined) c.kill("SIGKILL");
    for (const ns of this.namespaces) sh("ip", ["netns", "del", ns], { allowFail: true });
  }
}

/** Collects a child's stdout JSON lines; waitFor resolves with the first line matching. */
export class JsonLines {
  readonly lines: Record<string, unknown>[] = [];
  private waiters: {
    pred: (l: Record<string, unknown>) => boolean;
    resolve: (l: Record<string, unknown>) => void;
  }[] = [];
  stderr = "";

  constructor(child: ChildProcess) {
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on("line", (line) => {
      let obj: Record<string, unknown>;
      try {
        obj = JSON.parse(line);
      } catch {
        obj = { text: line };
      }
      this.lines.push(obj);
      this.waiters = this.waiters.filter((w) => {
        if (!w.pred(obj)) return true;
        w.resolve(obj);
        return false;
      });
    });
    child.stderr?.on("data", (d) => {
      this.stderr += d.toString();
    });
  }

  waitFor(pred: (l: Record<string, unknown>) => boolean, ms = 10_000): Promise<Record<string, unknown>> {
    const hit = this.lines.find(pred);
    if (hit) return Promise.resolve(hit);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out; stderr: ${this.stderr.slice(-2000)}`)), ms);
      this.waiters.push({
        pred,
        resolve: (l) => {
          clearTimeout(timer);
          resolve(l);
        },
      });
    });
  }
}

export function tempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export function writeJson(path: string, value: unknown): string {
  writeFileSync(path, JSON.stringify(value));
  return path;
}

/** Compiles src/dhcp and the fixtures to dist/ (the same layout as `npm run build`), when out of date. */
export function buildFixtures(): void {
  const newest = (dir: string): number =>
    Math.max(
      0,
      ...readdirSync(dir)
        .filter((f) => f.endsWith(".ts"))
        .map((f) => statSync(join(dir, f)).mtimeMs),
    );
  const sources = Math.max(
    ...["src/dhcp", "src/state", "src/ha", "test/dhcp/fixtures"].map((d) => newest(join(repoRoot, d))),
  );
  const built = Math.min(
    ...[serveJs, clientJs, join(repoRoot, "dist/src/dhcp/server.js")].map((f) =>
      existsSync(f) ? statSync(f).mtimeMs : 0,
    ),
  );
  if (built > sources) return;
  sh(
    process.execPath,
    [
      join(repoRoot, "node_modules/typescript/bin/tsc"),
      "-p",
      join(repoRoot, "test/dhcp/tsconfig.fixtures.json"),
    ],
    {
      timeout: 120_000,
    },
  );
}

export const serveJs = join(repoRoot, "dist/test/dhcp/fixtures/serve.js");
export const clientJs = join(repoRoot, "dist/test/dhcp/fixtures/client.js");

/** Runs the scripted client in a namespace and returns its JSON lines. */
export function runClient(
  lab: Lab,
  ns: string,
  spec: Record<string, unknown>,
  timeout = 20_000,
): Record<string, unknown>[] {
  const outText = lab.exec(ns, process.execPath, [clientJs, JSON.stringify(spec)], { timeout });
  return outText
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((l) => JSON.parse(l));
}

export function startServer(
  lab: Lab,
  ns: string,
  spec: Record<string, unknown>,
  dir: string,
): { child: ChildProcess; out: JsonLines } {
  const path = writeJson(join(dir, `serve-${Date.now()}.json`), spec);
  const child = lab.spawn(ns, process.execPath, [serveJs, path]);
  return { child, out: new JsonLines(child) };
}
