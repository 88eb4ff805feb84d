/**
 * The boot storm's network: one server namespace with a bridge, and one namespace per machine joined to
 * the bridge by a veth pair (the machine's end is its eth0, with the machine's MAC). Root only.
 *
 *   <p>-s [<p>-br 10.90.0.1/22] ── <p>-v1 … <p>-vN ── eth0 in <p>-c1 … <p>-cN
 *
 * Loss is nftables on the bridge ports (every frame a port takes in or puts out); counters on the server's
 * own output count what it sent, before any drop.
 */
import { execFileSync } from "node:child_process";

export const STORM_SERVER_ADDRESS = "10.90.0.1";
export const STORM_PREFIX_LENGTH = 22;
/** The flood host: a relay agent's address on the bridge. */
export const FLOOD_ADDRESS = "10.90.0.2";
export const STORM_POOL = { start: "10.90.1.0", end: "10.90.3.250" } as const;

export interface StormNet {
  readonly serverNs: string;
  readonly bridge: string;
  readonly machines: readonly { ns: string; mac: string }[];
  /** argv that runs a command in a namespace. */
  exec(ns: string, cmd: string, ...args: string[]): [string, string[]];
  /** Drops this percentage of frames each way on every machine's port (0 removes the rule). */
  setLoss(percent: number): void;
  /** Another host on the bridge (for a DHCP flood), with its own MAC and address; returns its namespace. */
  addHost(name: string, mac: string, address: string): string;
  /** UDP datagrams the server has sent since the last reset: DHCP (source port 67) and the rest (TFTP). */
  serverSent(): { dhcp: number; other: number };
  /** UDP datagrams the server's namespace dropped because a socket's receive buffer was full (ever). */
  serverReceiveBufferDrops(): number;
  resetCounters(): void;
  /** Forgets every address the machines were given (between storms). */
  flushMachineAddresses(): void;
  destroy(): void;
}

function sh(cmd: string, args: string[], input?: string): string {
  return execFileSync(cmd, args, {
    input,
    encoding: "utf8",
    stdio: [input === undefined ? "ignore" : "pipe", "pipe", "pipe"],
  });
}

export function machineMac(index: number): string {
  const hi = (index >> 8) & 0xff;
  const lo = index & 0xff;
  return `52:54:00:90:${hi.toString(16).padStart(2, "0")}:${lo.toString(16).padStart(2, "0")}`;
}

export function createStormNet(prefix: string, count: number): StormNet {
  const serverNs = `${prefix}-s`;
  const bridge = `${prefix}-br`;
  const machines = Array.from({ length: count }, (_, i) => ({
    ns: `${prefix}-c${i + 1}`,
    mac: machineMac(i + 1),
  }));
  const extraNs: string[] = [];
  const namespaces = () => [serverNs, ...machines.map((m) => m.ns), ...extraNs];

  const destroy = () => {
    const existing = new Set(
      sh("ip", ["netns", "list"])
        .split("\n")
        .map((l) => l.split(" ")[0]),
    );
    // Ours by name: this run's, and any a killed run left behind.
    const gone = [...existing].filter((ns): ns is string => ns?.startsWith(`${prefix}-`) === true);
    // Deleting the namespaces deletes their veths, and with them the bridge ports.
    if (gone.length > 0) sh("ip", ["-batch", "-"], gone.map((ns) => `netns del ${ns}\n`).join(""));
  };
  destroy();

  try {
    sh(
      "ip",
      ["-batch", "-"],
      namespaces()
        .map((ns) => `netns add ${ns}\n`)
        .join(""),
    );
    const serverCmds = [
      `link add ${bridge} type bridge`,
      `addr add ${STORM_SERVER_ADDRESS}/${STORM_PREFIX_LENGTH} dev ${bridge}`,
      `link set ${bridge} up`,
      "link set lo up",
      ...machines.flatMap((m, i) => [
        `link add ${prefix}-v${i + 1} type veth peer name eth0 address ${m.mac} netns ${m.ns}`,
        `link set ${prefix}-v${i + 1} master ${bridge} up`,
      ]),
    ];
    sh("ip", ["-n", serverNs, "-batch", "-"], `${serverCmds.join("\n")}\n`);
    for (const m of machines) sh("ip", ["-n", m.ns, "-batch", "-"], "link set lo up\nlink set eth0 up\n");
    sh("ip", ["netns", "exec", serverNs, "nft", "-f", "-"], counterRules());
  } catch (err) {
    destroy();
    throw err;
  }

  const exec = (ns: string, cmd: string, ...args: string[]): [string, string[]] => [
    "ip",
    ["netns", "exec", ns, cmd, ...args],
  ];
  const nft = (rules: string) => sh("ip", ["netns", "exec", serverNs, "nft", "-f", "-"], rules);
  let portIndex = count;

  return {
    serverNs,
    bridge,
    machines,
    exec,
    setLoss(percent) {
      nft(`table bridge ${prefix}loss\ndelete table bridge ${prefix}loss\n`);
      if (percent <= 0) return;
      nft(
        [
          `table bridge ${prefix}loss {`,
          "  chain in { type filter hook input priority 0;",
          `    iifname "${prefix}-v*" numgen random mod 100 < ${percent} drop`,
          "  }",
          "  chain out { type filter hook output priority 0;",
          `    oifname "${prefix}-v*" numgen random mod 100 < ${percent} drop`,
          "  }",
          "}",
          "",
        ].join("\n"),
      );
    },
    addHost(name, mac, address) {
      const ns = `${prefix}-${name}`;
      portIndex += 1;
      extraNs.push(ns);
      sh("ip", ["netns", "add", ns]);
      sh(
        "ip",
        ["-n", serverNs, "-batch", "-"],
        `link add ${prefix}-v${portIndex} type veth peer name eth0 address ${mac} netns ${ns}\nlink set ${prefix}-v${portIndex} master ${bridge} up\n`,
      );
      sh(
        "ip",
        ["-n", ns, "-batch", "-"],
        `link set lo up\nlink set eth0 up\naddr add ${address}/${STORM_PREFIX_LENGTH} dev eth0\n`,
      );
      return ns;
    },
    serverSent() {
      const out = JSON.parse(
        sh("ip", [
          "netns",
          "exec",
          serverNs,
          "nft",
          "-j",
          "list",
          "counters",
          "table",
          "inet",
          `${prefix}cnt`,
        ]),
      ) as { nftables: { counter?: { name: string; packets: number } }[] };
      const get = (name: string) => out.nftables.find((e) => e.counter?.name === name)?.counter?.packets ?? 0;
      return { dhcp: get("dhcp_out"), other: get("udp_out") };
    },
    serverReceiveBufferDrops() {
      // /proc/net/snmp is per namespace: a header line and a value line for Udp.
      const lines = sh("ip", ["netns", "exec", serverNs, "cat", "/proc/net/snmp"])
        .split("\n")
        .filter((l) => l.startsWith("Udp:"));
      const names = lines[0]?.split(/\s+/) ?? [];
      const values = lines[1]?.split(/\s+/) ?? [];
      return Number(values[names.indexOf("RcvbufErrors")] ?? 0);
    },
    resetCounters() {
      sh("ip", ["netns", "exec", serverNs, "nft", "reset", "counters", "table", "inet", `${prefix}cnt`]);
    },
    flushMachineAddresses() {
      for (const m of machines) sh("ip", ["-n", m.ns, "addr", "flush", "dev", "eth0"]);
    },
    destroy,
  };

  function counterRules(): string {
    return [
      `table inet ${prefix}cnt {`,
      "  counter dhcp_out {}",
      "  counter udp_out {}",
      "  chain out { type filter hook output priority 0;",
      '    udp sport 67 counter name "dhcp_out"',
      '    udp sport != 67 counter name "udp_out"',
      "  }",
      "}",
      "",
    ].join("\n");
  }
}
