/** Two network namespaces joined by a veth pair, for benchmarks. Root only; names carry the caller's prefix. */
import { execFileSync } from "node:child_process";

export interface NsPair {
  serverNs: string;
  clientNs: string;
  serverAddress: string;
  clientAddress: string;
  destroy(): void;
}

function run(args: string[]): void {
  execFileSync(args[0] as string, args.slice(1), { stdio: ["ignore", "ignore", "pipe"] });
}

export function createNsPair(prefix: string, subnet24: string): NsPair {
  const serverNs = `${prefix}-bs`;
  const clientNs = `${prefix}-bc`;
  const serverIf = `${prefix}-bs0`;
  const clientIf = `${prefix}-bc0`;
  const serverAddress = `${subnet24}.1`;
  const clientAddress = `${subnet24}.2`;
  const destroy = () => {
    for (const ns of [serverNs, clientNs])
      try {
        run(["ip", "netns", "del", ns]);
      } catch {
        // not there
      }
  };
  destroy();
  try {
    run(["ip", "netns", "add", serverNs]);
    run(["ip", "netns", "add", clientNs]);
    run([
      "ip",
      "-n",
      serverNs,
      "link",
      "add",
      serverIf,
      "type",
      "veth",
      "peer",
      "name",
      clientIf,
      "netns",
      clientNs,
    ]);
    run(["ip", "-n", serverNs, "addr", "add", `${serverAddress}/24`, "dev", serverIf]);
    run(["ip", "-n", clientNs, "addr", "add", `${clientAddress}/24`, "dev", clientIf]);
    for (const [ns, dev] of [
      [serverNs, serverIf],
      [clientNs, clientIf],
      [serverNs, "lo"],
      [clientNs, "lo"],
    ] as const)
      run(["ip", "-n", ns, "link", "set", dev, "up"]);
  } catch (err) {
    destroy();
    throw err;
  }
  return { serverNs, clientNs, serverAddress, clientAddress, destroy };
}
