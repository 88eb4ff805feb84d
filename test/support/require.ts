import { execFileSync } from "node:child_process";

/**
 * Gate for tests that need root, namespaces, QEMU or a peer program. Outside CI a missing resource
 * skips with a printed reason; in CI (CI=true) it is a failure, because CI installs everything.
 */
export function resourceAvailable(what: string, ok: boolean): boolean {
  if (ok) return true;
  if (process.env.CI === "true") throw new Error(`required test resource missing in CI: ${what}`);
  console.warn(`SKIP: ${what} is not available here`);
  return false;
}

export function isRoot(): boolean {
  return process.getuid?.() === 0;
}

export function hasCommand(cmd: string): boolean {
  try {
    execFileSync("sh", ["-c", `command -v ${cmd}`], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

/** True when every command is on PATH; names the missing ones. */
export function commandsAvailable(...cmds: string[]): boolean {
  const missing = cmds.filter((c) => !hasCommand(c));
  return resourceAvailable(`command(s) ${missing.join(", ")}`, missing.length === 0);
}
