import { existsSync, statSync } from "node:fs";
import { join } from "node:path";
import { loadConfig } from "../config/load.js";

function fileState(path: string): string {
  if (!existsSync(path)) return "MISSING";
  return `found, ${statSync(path).size} bytes`;
}

/** Validates (exit 2 with file:line field: reason on any problem, from loadConfig) and prints a summary. */
export async function commandCheckConfig(
  values: Record<string, string | boolean | undefined>,
): Promise<number> {
  const { config, file } = loadConfig(typeof values.config === "string" ? values.config : undefined);
  const out: string[] = [`${file}: valid`];
  const d = config.dhcp;
  out.push(
    d.mode === "off"
      ? "dhcp:      off (TFTP only)"
      : `dhcp:      ${d.mode} on ${d.interfaces.join(", ")}; ${d.subnets.length} subnet(s), ${d.reservations.length} reservation(s), unknown machines: ${d.unknown_machines}`,
  );
  for (const s of d.subnets)
    out.push(`             ${s.subnet} range ${s.range.start}-${s.range.end} lease ${s.lease_time}s`);
  out.push(
    config.state.backend === "postgres"
      ? "leases:    postgres, shared (the url is a secret and is not shown)"
      : `leases:    journal in ${config.state_dir}`,
  );
  if (config.ha) {
    const me = config.ha.peers.find((p) => p.name === config.ha?.this);
    const peer = config.ha.peers.find((p) => p.name !== config.ha?.this);
    out.push(
      `ha:        ${config.ha.mode}; this ${me?.name} (${me?.role}), peer ${peer?.name} (${peer?.role}); failover after ${config.ha.failover_ms} ms`,
      peer?.address
        ? `           GRUB asks ${peer.address} for a machine's config when this appliance gives none`
        : `           ${peer?.name} has no address: a machine whose appliance dies after GRUB has loaded cannot fall back`,
    );
  }
  out.push(`tftp:      ${config.tftp.address}:${config.tftp.port} root ${config.tftp.root}`);
  for (const [arch, loader] of Object.entries(config.boot.loaders)) {
    if (!loader) continue;
    out.push(`loader:    ${arch} shim ${loader.shim} (${fileState(join(config.tftp.root, loader.shim))})`);
    out.push(`           ${arch} grub ${loader.grub} (${fileState(join(config.tftp.root, loader.grub))})`);
  }
  for (const [name, image] of Object.entries(config.images)) {
    const part = (p: (typeof image)["kernel"]) => {
      if (p === undefined) return "(from the volume's Glance metadata)";
      return "path" in p ? `${p.path} (${fileState(p.path)})` : `glance ${p.glance_id}`;
    };
    out.push(
      `image:     ${name} (${image.flavour}) kernel ${part(image.kernel)}, initrd ${part(image.initrd)}`,
    );
  }
  const machines = config.machines ?? [];
  out.push(`machines:  ${machines.length}`);
  for (const m of machines) {
    const v = m.volume;
    const volume =
      v.resolver === "cinder"
        ? `cinder volume ${v.volume_id}`
        : v.resolver === "ironic"
          ? `ironic node ${v.node}`
          : `static ${v.iqn} lun ${v.lun}`;
    out.push(
      `           ${m.name} ${m.macs.join(",")} arch ${m.arch ?? "(from DHCP)"} image ${m.image ?? "(default)"}: ${volume}`,
    );
  }
  const resolvers = [
    "static",
    ...(config.resolvers.cinder
      ? [`cinder (${config.resolvers.cinder.auth_url}, ${config.resolvers.cinder.auth.type})`]
      : []),
    ...(config.resolvers.ironic
      ? [
          `ironic (microversion ${config.resolvers.ironic.microversion}, image ${config.resolvers.ironic.image}, capabilities ${Object.entries(
            config.resolvers.ironic.select.capabilities,
          )
            .map(([k, val]) => `${k}:${val}`)
            .join(",")})`,
        ]
      : []),
  ];
  out.push(`resolvers: ${resolvers.join(", ")}`);
  out.push(`state:     ${config.state_dir}; cache: ${config.cache_dir}`);
  process.stdout.write(`${out.join("\n")}\n`);
  return 0;
}
