import type { Logger } from "pino";
import type { Chap } from "../cmdline.js";
import { iscsiNameProblem, type Portal, parsePortal } from "../config.js";
import { errorMessage, OpenStackHttpError } from "./http.js";
import { BLOCK_STORAGE_TYPES, type KeystoneSession } from "./keystone.js";

/** The os-brick style connector Cinder needs to export a volume to one initiator. */
export interface Connector {
  initiator: string;
  ip: string;
  host: string;
  multipath: boolean;
  platform: string;
  os_type: string;
}

export interface IscsiConnection {
  portals: Portal[];
  iqn: string;
  /** One LUN per portal/IQN pair in Cinder's multipath data; the first is the one used. */
  lun: number;
  /** When several portals carry different IQNs (multipath on some backends). */
  iqns: string[];
  chap?: Chap | undefined;
  driverVolumeType: string;
}

export interface VolumeInfo {
  id: string;
  status: string;
  kernelId?: string;
  ramdiskId?: string;
}

/**
 * Reads iSCSI connection info in both shapes Cinder returns: `{driver_volume_type, data: {...}}`
 * (os-initialize_connection) and flat (attachments API, 3.27+), for `iscsi` and `iser`.
 */
export function parseConnectionInfo(info: unknown): IscsiConnection {
  if (info === null || typeof info !== "object") throw new Error("connection_info is missing");
  const outer = info as Record<string, unknown>;
  const data = (outer.data && typeof outer.data === "object" ? outer.data : outer) as Record<string, unknown>;
  const driverVolumeType = String(outer.driver_volume_type ?? data.driver_volume_type ?? "");
  if (driverVolumeType !== "iscsi" && driverVolumeType !== "iser")
    throw new Error(`driver_volume_type ${JSON.stringify(driverVolumeType)} is not iscsi or iser`);

  const portalTexts = Array.isArray(data.target_portals)
    ? data.target_portals.map(String)
    : [String(data.target_portal ?? "")];
  const iqns = Array.isArray(data.target_iqns)
    ? data.target_iqns.map(String)
    : [String(data.target_iqn ?? "")];
  const luns = Array.isArray(data.target_luns) ? data.target_luns : [data.target_lun];
  const portals: Portal[] = [];
  for (const text of portalTexts) {
    const p = parsePortal(text);
    if (typeof p === "string") throw new Error(`target portal ${p}`);
    portals.push(p);
  }
  if (portals.length === 0) throw new Error("no target_portal in connection_info");
  for (const iqn of iqns) {
    const problem = iscsiNameProblem(iqn);
    if (problem) throw new Error(`target_iqn ${JSON.stringify(iqn)} ${problem}`);
  }
  const lun = Number(luns[0]);
  if (!Number.isInteger(lun) || lun < 0 || lun > 16383)
    throw new Error(`target_lun ${JSON.stringify(luns[0])} is not a LUN`);
  const iqn = iqns[0] ?? "";

  let chap: Chap | undefined;
  const authMethod = String(data.auth_method ?? "").toUpperCase();
  if (authMethod === "CHAP") {
    // Discovery CHAP (discovery_auth_*) is for SendTargets; the boot logs in directly without it.
    chap = { username: String(data.auth_username ?? ""), password: String(data.auth_password ?? "") };
  } else if (authMethod !== "" && authMethod !== "NONE") {
    throw new Error(`auth_method ${authMethod} is not supported (CHAP or none)`);
  }
  return { portals, iqn, lun, iqns, chap, driverVolumeType };
}

function volumeHeaders(microversion: string): Record<string, string> {
  return { "openstack-api-version": `volume ${microversion}` };
}

/** Cinder v3 calls used by the resolver. `override` is the configured endpoint_override. */
export class CinderClient {
  constructor(
    private readonly session: KeystoneSession,
    private readonly logger: Logger,
    private readonly microversion: string,
    private readonly override?: string,
  ) {}

  private call(method: "GET" | "POST" | "PUT" | "DELETE", path: string, json?: unknown, retries?: number) {
    return this.session.call(BLOCK_STORAGE_TYPES, method, path, {
      json,
      headers: volumeHeaders(this.microversion),
      override: this.override,
      ...(retries === undefined ? {} : { retries }),
    });
  }

  async showVolume(id: string): Promise<VolumeInfo> {
    const res = await this.call("GET", `/volumes/${encodeURIComponent(id)}`);
    if (res.status !== 200)
      throw new OpenStackHttpError(
        `volume ${id}: HTTP ${res.status} ${errorMessage(res.body)}`.trim(),
        res.status,
      );
    const volume = (res.body as { volume?: Record<string, unknown> }).volume ?? {};
    const meta = (volume.volume_image_metadata ?? {}) as Record<string, unknown>;
    const info: VolumeInfo = { id: String(volume.id ?? id), status: String(volume.status ?? "") };
    if (typeof meta.kernel_id === "string" && meta.kernel_id !== "") info.kernelId = meta.kernel_id;
    if (typeof meta.ramdisk_id === "string" && meta.ramdisk_id !== "") info.ramdiskId = meta.ramdisk_id;
    return info;
  }

  /**
   * Attachments API (3.27 create, 3.44 complete): create with the connector, or update an attachment
   * created earlier. Returns undefined when the cloud has no attachments API, so the caller falls back.
   */
  async attach(
    volumeId: string,
    connector: Connector,
    attachmentId: string | undefined,
  ): Promise<{ attachmentId: string; connection: IscsiConnection } | undefined> {
    let res = attachmentId
      ? await this.call("PUT", `/attachments/${encodeURIComponent(attachmentId)}`, {
          attachment: { connector },
        })
      : undefined;
    if (res && res.status !== 200) {
      this.logger.warn(
        { volume_id: volumeId, attachment_id: attachmentId, status: res.status },
        "cinder attachment update failed: creating a new one",
      );
      res = undefined;
    }
    if (!res) {
      // Creating is not idempotent: no retries, a duplicate attachment would be left behind.
      res = await this.call("POST", "/attachments", { attachment: { volume_uuid: volumeId, connector } }, 0);
      if (res.status === 404 || res.status === 406 || res.status === 400 || res.status === 409) {
        this.logger.warn(
          { volume_id: volumeId, status: res.status, reason: errorMessage(res.body) },
          "cinder attachments API unavailable for this volume: falling back to os-initialize_connection",
        );
        return undefined;
      }
      if (res.status !== 200 && res.status !== 202)
        throw new OpenStackHttpError(
          `attachment create for ${volumeId}: HTTP ${res.status} ${errorMessage(res.body)}`.trim(),
          res.status,
        );
    }
    const attachment =
      (res.body as { attachment?: { id?: string; connection_info?: unknown } }).attachment ?? {};
    const id = String(attachment.id ?? attachmentId ?? "");
    const connection = parseConnectionInfo(attachment.connection_info);
    const done = await this.call("POST", `/attachments/${encodeURIComponent(id)}/action`, {
      "os-complete": null,
    });
    if (done.status !== 204 && done.status !== 200)
      this.logger.warn(
        { volume_id: volumeId, attachment_id: id, status: done.status },
        "cinder os-complete failed (connection info still used)",
      );
    return { attachmentId: id, connection };
  }

  /** Removes an attachment (3.27): the volume is no longer exported to that machine. 404 counts as done. */
  async deleteAttachment(attachmentId: string): Promise<void> {
    const res = await this.call("DELETE", `/attachments/${encodeURIComponent(attachmentId)}`);
    if (res.status !== 200 && res.status !== 204 && res.status !== 404)
      throw new OpenStackHttpError(
        `attachment delete ${attachmentId}: HTTP ${res.status} ${errorMessage(res.body)}`.trim(),
        res.status,
      );
  }

  /** The pre-3.27 action API: exports the volume to the connector's initiator. */
  async initializeConnection(volumeId: string, connector: Connector): Promise<IscsiConnection> {
    const res = await this.call("POST", `/volumes/${encodeURIComponent(volumeId)}/action`, {
      "os-initialize_connection": { connector },
    });
    if (res.status !== 200)
      throw new OpenStackHttpError(
        `os-initialize_connection for ${volumeId}: HTTP ${res.status} ${errorMessage(res.body)}`.trim(),
        res.status,
      );
    return parseConnectionInfo((res.body as { connection_info?: unknown }).connection_info);
  }
}
