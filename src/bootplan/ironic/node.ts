import type { BootArch } from "../../dhcp/boot-types.js";
import { chapValueProblem, type IronicConfig, iscsiNameProblem, normaliseMac } from "../config.js";
import { type IscsiConnection, parseConnectionInfo } from "../openstack/cinder.js";
import type { Json, NodeRecords } from "../openstack/ironic.js";

/**
 * What an Ironic node means for a boot, decided from its records alone (pure): which nodes are served,
 * their initiator, their boot volume, their kernel and ramdisk. Every way it can go wrong is a refusal
 * with a reason, never a guess.
 */

export interface IronicNode {
  uuid: string;
  /** The node's name where it is a usable machine name, else its UUID. */
  name: string;
  macs: string[];
  systemUuid?: string | undefined;
  arch?: BootArch | undefined;
  initiatorIqn: string;
  targetUuid: string;
  /** The target's own properties (Cinder's connection data), or its Cinder volume when they are masked. */
  target: { kind: "properties"; connection: IscsiConnection } | { kind: "cinder"; volumeId: string };
  /** instance_info kernel and ramdisk (Glance UUIDs), or the image whose kernel_id/ramdisk_id to use. */
  kernelId?: string | undefined;
  ramdiskId?: string | undefined;
  imageSource?: string | undefined;
}

export type NodeVerdict =
  | { kind: "node"; node: IronicNode }
  | { kind: "refused"; uuid: string; name: string; reason: string };

export type Selection = IronicConfig["select"];

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
const ARCH: Record<string, BootArch> = { x86_64: "x64", amd64: "x64", aarch64: "aa64", arm64: "aa64" };

/** properties.capabilities in either form Ironic accepts: "k1:v1,k2:v2" or an object. */
export function parseCapabilities(value: unknown): Map<string, string> {
  const out = new Map<string, string>();
  if (typeof value === "string") {
    for (const pair of value.split(",")) {
      const at = pair.indexOf(":");
      if (at > 0) out.set(pair.slice(0, at).trim(), pair.slice(at + 1).trim());
    }
  } else if (value !== null && typeof value === "object") {
    for (const [k, v] of Object.entries(value as Json)) out.set(k, String(v));
  }
  return out;
}

/** Ironic's policy-redacted properties: `{"redacted_contents": "** Value redacted ... **"}`. */
export function isMasked(properties: Json): boolean {
  return "redacted_contents" in properties || Object.keys(properties).length === 0;
}

function str(v: unknown): string | undefined {
  return typeof v === "string" && v !== "" ? v : undefined;
}

function selectionProblem(node: Json, caps: Map<string, string>, select: Selection): string | undefined {
  for (const [key, want] of Object.entries(select.capabilities)) {
    const have = caps.get(key);
    if (have === undefined || have.toLowerCase() !== want.toLowerCase())
      return `not selected: properties.capabilities has ${key}:${have ?? "(unset)"}, the config selects ${key}:${want}`;
  }
  if (select.resource_class !== undefined && node.resource_class !== select.resource_class)
    return `not selected: resource_class ${String(node.resource_class ?? "(unset)")} is not ${select.resource_class}`;
  if (select.conductor_group !== undefined && (node.conductor_group ?? "") !== select.conductor_group)
    return `not selected: conductor_group ${String(node.conductor_group || "(default)")} is not ${select.conductor_group}`;
  const traits = Array.isArray(node.traits) ? node.traits.map(String) : [];
  const missing = select.traits.filter((t) => !traits.includes(t));
  if (missing.length > 0) return `not selected: node lacks trait(s) ${missing.join(", ")}`;
  return undefined;
}

function bootTarget(targets: Json[], label: string): { target: Json } | { reason: string } {
  const boot = targets.filter((t) => t.boot_index === 0);
  if (boot.length === 0)
    return { reason: `${label} has no boot volume (no volume target with boot_index 0)` };
  if (boot.length > 1)
    return { reason: `${label} has ${boot.length} volume targets with boot_index 0; exactly one is needed` };
  const target = boot[0] as Json;
  if (target.volume_type !== "iscsi")
    return {
      reason: `${label}: boot volume target ${String(target.uuid)} is of type ${String(target.volume_type)}, not iscsi`,
    };
  return { target };
}

export function interpretNode(records: NodeRecords, select: Selection): NodeVerdict {
  const { node } = records;
  const uuid = String(node.uuid);
  const name = typeof node.name === "string" && NAME_RE.test(node.name) ? node.name : uuid;
  const label = `ironic node ${name === uuid ? uuid : `${name} (${uuid})`}`;
  const refuse = (reason: string): NodeVerdict => ({ kind: "refused", uuid, name, reason });

  const props = (node.properties ?? {}) as Json;
  const caps = parseCapabilities(props.capabilities);
  // Legacy BIOS is out of scope: refused by name rather than as "not selected".
  const bootMode = (str(node.boot_mode) ?? caps.get("boot_mode") ?? "").toLowerCase();
  if (bootMode === "bios")
    return refuse(`${label} has boot_mode bios: only UEFI machines are served (legacy BIOS is out of scope)`);
  const unselected = selectionProblem(node, caps, select);
  if (unselected) return refuse(`${label} is ${unselected}`);

  const cpu = str(props.cpu_arch);
  const arch = cpu === undefined ? undefined : ARCH[cpu];
  if (cpu !== undefined && arch === undefined)
    return refuse(`${label} has cpu_arch ${cpu}: only x86_64 and aarch64 UEFI are served`);

  const iqns = records.connectors.filter((c) => c.type === "iqn").map((c) => String(c.connector_id ?? ""));
  const initiatorIqn = iqns[0];
  if (initiatorIqn === undefined)
    return refuse(`${label} has no volume connector of type iqn (its initiator name)`);
  const iqnProblem = iscsiNameProblem(initiatorIqn);
  if (iqnProblem) return refuse(`${label}: iqn connector ${JSON.stringify(initiatorIqn)} ${iqnProblem}`);

  const chosen = bootTarget(records.targets, label);
  if ("reason" in chosen) return refuse(chosen.reason);
  const t = chosen.target;
  const properties = (t.properties !== null && typeof t.properties === "object" ? t.properties : {}) as Json;
  let target: IronicNode["target"];
  if (isMasked(properties)) {
    const volumeId = str(t.volume_id);
    if (!volumeId || !UUID_RE.test(volumeId))
      return refuse(
        `${label}: boot volume target's properties are masked or empty, and it has no Cinder volume_id`,
      );
    target = { kind: "cinder", volumeId };
  } else {
    let connection: IscsiConnection;
    try {
      connection = parseConnectionInfo({ driver_volume_type: "iscsi", data: properties });
    } catch (err) {
      return refuse(`${label}: boot volume target properties: ${(err as Error).message}`);
    }
    if (connection.chap)
      for (const [field, value] of [
        ["auth_username", connection.chap.username],
        ["auth_password", connection.chap.password],
      ] as const) {
        const problem = chapValueProblem(value);
        if (problem) return refuse(`${label}: boot volume target ${field} ${problem}`);
      }
    target = { kind: "properties", connection };
  }

  const info = (node.instance_info ?? {}) as Json;
  const glanceId = (field: string): string | undefined | { reason: string } => {
    const v = str(info[field]);
    if (v === undefined) return undefined;
    if (!UUID_RE.test(v))
      return {
        reason: `${label}: instance_info.${field} ${JSON.stringify(v.slice(0, 80))} is not a Glance image UUID (URLs are not fetched)`,
      };
    return v;
  };
  const kernel = glanceId("kernel");
  const ramdisk = glanceId("ramdisk");
  for (const f of [kernel, ramdisk]) if (typeof f === "object") return refuse(f.reason);
  if ((kernel === undefined) !== (ramdisk === undefined))
    return refuse(`${label}: instance_info has a kernel or a ramdisk but not both`);
  const source = str(info.image_source);

  const macs = records.ports
    .map((p) => (typeof p.address === "string" ? normaliseMac(p.address) : undefined))
    .filter((m): m is string => m !== undefined);
  const systemUuid = str(props.system_uuid)?.toLowerCase();
  return {
    kind: "node",
    node: {
      uuid,
      name,
      macs,
      systemUuid: systemUuid && UUID_RE.test(systemUuid) ? systemUuid : undefined,
      arch,
      initiatorIqn,
      targetUuid: String(t.uuid ?? ""),
      target,
      kernelId: typeof kernel === "string" ? kernel : undefined,
      ramdiskId: typeof ramdisk === "string" ? ramdisk : undefined,
      imageSource: source && UUID_RE.test(source) ? source : undefined,
    },
  };
}
