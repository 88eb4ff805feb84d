/** Schema of the YAML `dhcp:` section (zod v4). Keys are snake_case; unknown keys are errors. */
import { isIPv4 } from "node:net";
import { z } from "zod";
import { intToIp, ipToInt } from "./options.js";

export const ipv4 = z
  .string()
  .refine((s) => isIPv4(s), { error: (iss) => `${String(iss.input)} is not an IPv4 address` });

export const macAddress = z
  .string()
  .transform((s) => s.toLowerCase().replace(/-/g, ":"))
  .refine((s) => /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/.test(s), {
    error: (iss) => `${String(iss.input)} is not a MAC address (aa:bb:cc:dd:ee:ff)`,
  });

export const cidr = z.string().superRefine((s, ctx) => {
  const [addr, bits, extra] = s.split("/");
  if (
    extra !== undefined ||
    addr === undefined ||
    bits === undefined ||
    !/^\d{1,2}$/.test(bits) ||
    Number(bits) > 32
  ) {
    ctx.addIssue({ code: "custom", message: `${s} is not an IPv4 CIDR (a.b.c.d/len)` });
    return;
  }
  if (!isIPv4(addr)) ctx.addIssue({ code: "custom", message: `${addr} is not an IPv4 address` });
});

export function parseCidr(s: string): { network: number; prefix: number; mask: number } {
  const [addr, bits] = s.split("/") as [string, string];
  const prefix = Number(bits);
  const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  return { network: (ipToInt(addr) & mask) >>> 0, prefix, mask };
}

export function inSubnet(ip: string, subnet: string): boolean {
  const { network, mask } = parseCidr(subnet);
  return (ipToInt(ip) & mask) >>> 0 === network;
}

export function maskOf(subnet: string): string {
  return intToIp(parseCidr(subnet).mask);
}

const subnetSchema = z
  .strictObject({
    subnet: cidr,
    /** Interface this subnet is served on; a subnet without one is only reached through relays (giaddr). */
    interface: z.string().min(1).optional(),
    range: z.strictObject({ start: ipv4, end: ipv4 }),
    router: ipv4.optional(),
    dns: z.array(ipv4).default([]),
    domain: z.string().min(1).optional(),
    lease_time: z.number().int().min(60).default(3600),
    renew_time: z.number().int().min(1).optional(),
    rebind_time: z.number().int().min(1).optional(),
  })
  .superRefine((s, ctx) => {
    if (!isIPv4(s.range.start) || !isIPv4(s.range.end) || s.subnet.split("/").length !== 2) return;
    const [addr] = s.subnet.split("/");
    if (!addr || !isIPv4(addr)) return;
    for (const key of ["start", "end"] as const) {
      if (!inSubnet(s.range[key], s.subnet))
        ctx.addIssue({
          code: "custom",
          path: ["range", key],
          message: `${s.range[key]} is not in subnet ${s.subnet}`,
        });
    }
    if (ipToInt(s.range.start) > ipToInt(s.range.end))
      ctx.addIssue({
        code: "custom",
        path: ["range"],
        message: `range start ${s.range.start} is after end ${s.range.end}`,
      });
    if (s.router !== undefined && isIPv4(s.router) && !inSubnet(s.router, s.subnet))
      ctx.addIssue({ code: "custom", path: ["router"], message: `${s.router} is not in subnet ${s.subnet}` });
    const t1 = s.renew_time ?? Math.floor(s.lease_time / 2);
    const t2 = s.rebind_time ?? Math.floor((s.lease_time * 7) / 8);
    if (!(t1 < t2 && t2 < s.lease_time))
      ctx.addIssue({ code: "custom", message: "need renew_time < rebind_time < lease_time" });
  });

export const dhcpConfigSchema = z
  .strictObject({
    mode: z.enum(["full", "proxy", "off"]).default("off"),
    /** Interfaces to serve; nothing is sent or received on any other. */
    interfaces: z.array(z.string().min(1)).default([]),
    port: z.number().int().min(1).max(65535).default(67),
    proxy_port: z.number().int().min(1).max(65535).default(4011),
    /** Address used as server identifier and next-server; default: the first IPv4 of the interface. */
    server_address: ipv4.optional(),
    subnets: z.array(subnetSchema).default([]),
    reservations: z
      .array(z.strictObject({ mac: macAddress, address: ipv4, hostname: z.string().min(1).optional() }))
      .default([]),
    unknown_machines: z.enum(["ignore", "boot"]).default("boot"),
    /** Per-MAC admission (native/nbdh_intake.c, src/dhcp/intake.ts): a looping or hostile client keeps to its share. */
    rate_limit: z
      .strictObject({
        per_mac_per_second: z.number().min(0).default(4),
        burst: z.number().int().min(1).default(16),
      })
      .default({ per_mac_per_second: 4, burst: 16 }),
  })
  .superRefine((c, ctx) => {
    if (c.mode !== "off" && c.interfaces.length === 0)
      ctx.addIssue({
        code: "custom",
        path: ["interfaces"],
        message: `mode ${c.mode} needs at least one interface`,
      });
    if (c.mode === "full" && c.subnets.length === 0)
      ctx.addIssue({ code: "custom", path: ["subnets"], message: "mode full needs at least one subnet" });
    const macs = new Set<string>();
    const addrs = new Set<string>();
    c.reservations.forEach((r, i) => {
      if (macs.has(r.mac))
        ctx.addIssue({
          code: "custom",
          path: ["reservations", i, "mac"],
          message: `${r.mac} is reserved twice`,
        });
      if (addrs.has(r.address))
        ctx.addIssue({
          code: "custom",
          path: ["reservations", i, "address"],
          message: `${r.address} is reserved twice`,
        });
      macs.add(r.mac);
      addrs.add(r.address);
      if (c.mode === "full" && isIPv4(r.address) && !c.subnets.some((s) => safeInSubnet(r.address, s.subnet)))
        ctx.addIssue({
          code: "custom",
          path: ["reservations", i, "address"],
          message: `${r.address} is in no configured subnet`,
        });
    });
  });

function safeInSubnet(ip: string, subnet: string): boolean {
  const [addr, bits] = subnet.split("/");
  if (!addr || !isIPv4(addr) || !bits || !/^\d{1,2}$/.test(bits) || Number(bits) > 32) return false;
  return inSubnet(ip, subnet);
}

export type DhcpConfig = z.infer<typeof dhcpConfigSchema>;
export type DhcpConfigInput = z.input<typeof dhcpConfigSchema>;
export type SubnetConfig = DhcpConfig["subnets"][number];
