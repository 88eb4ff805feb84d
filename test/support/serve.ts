/** `netboot serve` in a network namespace, as deployed: resolves once it logs that it started. */
import type { ChildProcess } from "node:child_process";
import { spawn } from "node:child_process";
import { join } from "node:path";
import type { Lab } from "../dhcp/helpers/netns.js";

export const CLI = join(import.meta.dirname, "../../dist/src/bin.js");

export async function startServe(
  lab: Lab,
  ns: string,
  configFile: string,
  timeoutMs = 30_000,
): Promise<{ child: ChildProcess; output: string[] }> {
  const output: string[] = [];
  const child = spawn("ip", ["netns", "exec", ns, "node", CLI, "serve", "--config", configFile], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  lab.children.push(child);
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`netboot serve did not start:\n${output.join("")}`)),
      timeoutMs,
    );
    const onData = (d: Buffer) => {
      output.push(d.toString());
      if (output.join("").includes("netboot-appliance started")) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout?.on("data", onData);
    child.stderr?.on("data", onData);
    child.once("exit", (code) => reject(new Error(`netboot serve exited ${code}:\n${output.join("")}`)));
  });
  return { child, output };
}
