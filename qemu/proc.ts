import { type ChildProcess, execFile, spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { setTimeout as delay } from "node:timers/promises";

/** Runs a command to completion; rejects with its stderr when it fails. */
export function run(cmd: string, args: string[], opts: { timeoutMs?: number } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      cmd,
      args,
      { timeout: opts.timeoutMs ?? 30_000, maxBuffer: 16 * 1024 * 1024 },
      (err, stdout, stderr) => {
        if (err) reject(new Error(`${cmd} ${args.join(" ")}: ${stderr.trim() || err.message}`));
        else resolve(stdout);
      },
    );
  });
}

/** Like run, but a failure is ignored (teardown steps must all be tried). */
export async function runQuiet(cmd: string, args: string[]): Promise<boolean> {
  try {
    await run(cmd, args, { timeoutMs: 10_000 });
    return true;
  } catch {
    return false;
  }
}

/** Called once per line of stdout or stderr, with the time it arrived (Date.now()). */
export type LineSink = (line: string, at: number, stream: "stdout" | "stderr") => void;

/** A long-running process whose output is read line by line as it arrives. */
export interface Daemon {
  readonly pid: number;
  readonly child: ChildProcess;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  alive(): boolean;
  /** SIGTERM, then SIGKILL after graceMs; resolves when the process is gone. */
  stop(graceMs?: number): Promise<void>;
}

export function startDaemon(cmd: string, args: string[], onLine: LineSink): Daemon {
  const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
  if (child.pid === undefined) throw new Error(`cannot start ${cmd}`);
  const pid = child.pid;
  let done = false;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once("exit", (code, signal) => {
      done = true;
      resolve({ code, signal });
    });
    child.once("error", () => {
      done = true;
      resolve({ code: null, signal: null });
    });
  });
  for (const stream of ["stdout", "stderr"] as const) {
    const src = child[stream];
    if (!src) continue;
    createInterface({ input: src, crlfDelay: Number.POSITIVE_INFINITY }).on("line", (line) =>
      onLine(line, Date.now(), stream),
    );
  }
  return {
    pid,
    child,
    exited,
    alive: () => !done,
    async stop(graceMs = 2_000) {
      if (done) return;
      killPid(pid, "SIGTERM");
      const timer = setTimeout(() => killPid(pid, "SIGKILL"), graceMs);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** Signals one process by PID; a process that is already gone is not an error. */
export function killPid(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // already gone
  }
}

export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export async function sleep(ms: number): Promise<void> {
  await delay(ms);
}
