import { run, runQuiet } from "./proc.js";

/** Every name the lab creates starts with this, so a leftover is easy to find (and to prove absent). */
export const LAB_PREFIX = "nblab";

/**
 * A throw-away network: one namespace, one bridge with the server address, taps for VMs.
 * Inside its own namespace the addresses cannot clash with the host or with another lab.
 */
export interface LabNetwork {
  readonly ns: string;
  readonly bridge: string;
  /** Address of the bridge: the lab's DHCP, TFTP and iSCSI server. */
  readonly serverIp: string;
  readonly prefixLength: number;
  /** First three octets, e.g. "10.77.0". */
  readonly subnet: string;
  readonly taps: readonly string[];
  /** Creates a tap in the namespace, enslaved to the bridge, up. */
  addTap(): Promise<string>;
  /** argv prefix that runs a command inside the namespace. */
  exec(cmd: string, ...args: string[]): [string, string[]];
  destroy(): Promise<void>;
}

let counter = 0;

export function labNamespaceName(): string {
  counter += 1;
  return `${LAB_PREFIX}-${process.pid}-${counter}`;
}

export async function createLabNetwork(opts: { ns?: string; subnet?: string } = {}): Promise<LabNetwork> {
  const ns = opts.ns ?? labNamespaceName();
  if (!ns.startsWith(`${LAB_PREFIX}-`))
    throw new Error(`lab namespace must start with ${LAB_PREFIX}-: ${ns}`);
  const subnet = opts.subnet ?? "10.77.0";
  const bridge = `${LAB_PREFIX}-br0`;
  const serverIp = `${subnet}.1`;
  const taps: string[] = [];
  const ip = (...args: string[]) => run("ip", ["-n", ns, ...args]);

  await run("ip", ["netns", "add", ns]);
  const net: LabNetwork = {
    ns,
    bridge,
    serverIp,
    prefixLength: 24,
    subnet,
    taps,
    async addTap() {
      // Interface names are limited to 15 bytes; names are per namespace, so a counter suffices.
      const tap = `${LAB_PREFIX}-tap${taps.length}`;
      await ip("tuntap", "add", "dev", tap, "mode", "tap");
      taps.push(tap);
      await ip("link", "set", tap, "master", bridge);
      await ip("link", "set", tap, "up");
      return tap;
    },
    exec: (cmd, ...args) => ["ip", ["netns", "exec", ns, cmd, ...args]],
    async destroy() {
      // Delete links first: a process still holding the namespace would otherwise keep them alive.
      for (const tap of taps) await runQuiet("ip", ["-n", ns, "link", "del", tap]);
      await runQuiet("ip", ["-n", ns, "link", "del", bridge]);
      await runQuiet("ip", ["netns", "del", ns]);
    },
  };
  try {
    await ip("link", "set", "lo", "up");
    await ip("link", "add", bridge, "type", "bridge", "forward_delay", "0");
    await ip("addr", "add", `${serverIp}/24`, "dev", bridge);
    await ip("link", "set", bridge, "up");
  } catch (err) {
    await net.destroy();
    throw err;
  }
  return net;
}

/** Namespaces of any lab (this process or an earlier, crashed one). */
export async function listLabNamespaces(): Promise<string[]> {
  const out = await run("ip", ["netns", "list"]);
  return out
    .split("\n")
    .map((l) => l.split(" ")[0] ?? "")
    .filter((n) => n.startsWith(`${LAB_PREFIX}-`));
}

/** Lab-named links in the host namespace (there should never be any: taps live in the lab namespace). */
export async function listHostLabLinks(): Promise<string[]> {
  const out = await run("ip", ["-o", "link", "show"]);
  return out
    .split("\n")
    .map((l) => (l.split(": ")[1] ?? "").split("@")[0] ?? "")
    .filter((n) => n.startsWith(LAB_PREFIX));
}
