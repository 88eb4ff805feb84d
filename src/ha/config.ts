/**
 * Schema of the YAML `ha:` section, after Kea's HA hook: two appliances share one lease database, and
 * either both answer, each for its RFC 3074 share of clients (load-balancing), or one answers and the
 * other takes over when it stops beating (hot-standby).
 *
 *   ha:
 *     mode: load-balancing
 *     this: appliance-a
 *     peers:
 *       - { name: appliance-a, role: primary, address: 10.0.0.2 }
 *       - { name: appliance-b, role: secondary, address: 10.0.0.3 }
 *
 * `address` is where that peer serves TFTP on the provisioning network. Each appliance's master
 * grub.cfg names the other's, so a machine whose appliance dies after GRUB has loaded asks the
 * survivor for its config (and its kernel and initrd) instead of stopping at a timeout.
 */
import { z } from "zod";

const peerSchema = z.strictObject({
  name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/, "is not a peer name (letters, digits, . _ -)"),
  role: z.enum(["primary", "secondary", "standby"]),
  address: z.ipv4({ message: "is not an IPv4 address" }).optional(),
});

export const haConfigSchema = z
  .strictObject({
    mode: z.enum(["load-balancing", "hot-standby"]),
    this: z.string().min(1),
    peers: z.array(peerSchema).length(2, "an HA pair has exactly two peers"),
    /** A peer whose heartbeat is older than this is down, and the survivor serves its clients. */
    failover_ms: z.number().int().min(500).max(600_000).default(5000),
    /** How often each appliance writes its heartbeat. Default: a quarter of failover_ms. */
    heartbeat_ms: z.number().int().min(100).max(60_000).optional(),
  })
  .superRefine((ha, ctx) => {
    const names = ha.peers.map((p) => p.name);
    if (new Set(names).size !== names.length)
      ctx.addIssue({ code: "custom", path: ["peers"], message: `peer names repeat: ${names.join(", ")}` });
    if (!names.includes(ha.this))
      ctx.addIssue({
        code: "custom",
        path: ["this"],
        message: `${ha.this} is not one of the peers (${names.join(", ")})`,
      });
    const roles = ha.peers.map((p) => p.role).sort();
    const want = ha.mode === "load-balancing" ? ["primary", "secondary"] : ["primary", "standby"];
    if (ha.peers.length === 2 && roles.join() !== want.join())
      ctx.addIssue({
        code: "custom",
        path: ["peers"],
        message: `${ha.mode} needs one ${want[0]} and one ${want[1]}, not ${roles.join(" and ")}`,
      });
    const beat = ha.heartbeat_ms ?? Math.floor(ha.failover_ms / 4);
    if (beat * 2 > ha.failover_ms)
      ctx.addIssue({
        code: "custom",
        path: ["heartbeat_ms"],
        message: `${beat} ms is more than half of failover_ms (${ha.failover_ms}): one late beat would fail over`,
      });
  });

export type HaConfig = z.output<typeof haConfigSchema>;

/** The other peers' TFTP addresses, in config order: where GRUB falls back to when this appliance is gone. */
export function fallbackServers(ha: HaConfig | undefined): string[] {
  if (!ha) return [];
  return ha.peers.flatMap((p) => (p.name !== ha.this && p.address ? [p.address] : []));
}

export function heartbeatMs(ha: HaConfig): number {
  return ha.heartbeat_ms ?? Math.max(100, Math.floor(ha.failover_ms / 4));
}
