/** A veth pair: host side (server) and a client namespace, with optional nftables random loss. Root only. */
import { execFileSync } from "node:child_process";

function sh(args: string[]): void {
  execFileSync(args[0] as string, args.slice(1), { stdio: ["ignore", "ignore", "pipe"] });
}

export interface LossyLink {
  ns: string;
  serverAddress: string;
  clientAddress: string;
  /** Drop one packet in `mod` (random) in each direction, at the client's end; 0 removes the rules. */
  setLoss(mod: number): void;
  destroy(): void;
}

export function createLossyLink(tag: string): LossyLink {
  const id = `${process.pid % 100000}`;
  const ns = `nbtf-${tag}${id}`;
  const hostIf = `nbtf-h${id}`;
  const nsIf = `nbtf-c${id}`;
  const octet = (process.pid % 200) + 20;
  const serverAddress = `10.204.${octet}.1`;
  const clientAddress = `10.204.${octet}.2`;
  const destroy = () => {
    for (const cmd of [
      ["ip", "link", "del", hostIf],
      ["ip", "netns", "del", ns],
    ])
      try {
        sh(cmd);
      } catch {
        // already gone
      }
  };
  destroy();
  try {
    sh(["ip", "netns", "add", ns]);
    sh(["ip", "link", "add", hostIf, "type", "veth", "peer", "name", nsIf]);
    sh(["ip", "link", "set", nsIf, "netns", ns]);
    sh(["ip", "addr", "add", `${serverAddress}/30`, "dev", hostIf]);
    sh(["ip", "link", "set", hostIf, "up"]);
    sh(["ip", "-n", ns, "addr", "add", `${clientAddress}/30`, "dev", nsIf]);
    sh(["ip", "-n", ns, "link", "set", nsIf, "up"]);
    sh(["ip", "-n", ns, "link", "set", "lo", "up"]);
  } catch (err) {
    destroy();
    throw err;
  }
  return {
    ns,
    serverAddress,
    clientAddress,
    setLoss(mod: number) {
      try {
        sh(["ip", "netns", "exec", ns, "nft", "delete", "table", "netdev", "nbtf_loss"]);
      } catch {
        // no table yet
      }
      if (mod <= 0) return;
      // netdev ingress/egress on the client's veth: a drop there looks like loss on the wire. (An inet
      // output-hook drop would fail the client's sendto() with EPERM instead, which is not loss.)
      const rules = `table netdev nbtf_loss {
  chain in { type filter hook ingress device "${nsIf}" priority 0; policy accept; meta l4proto udp numgen random mod ${mod} == 0 drop; }
  chain out { type filter hook egress device "${nsIf}" priority 0; policy accept; meta l4proto udp numgen random mod ${mod} == 0 drop; }
}`;
      execFileSync("ip", ["netns", "exec", ns, "nft", "-f", "-"], { input: rules });
    },
    destroy,
  };
}
