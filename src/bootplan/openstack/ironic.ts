import { OpenStackAnswerError, OpenStackHttpError } from "./http.js";
import { BAREMETAL_TYPES, type KeystoneSession } from "./keystone.js";

/**
 * Ironic v1 calls the resolver makes: a port by MAC, a node, its ports, volume connectors and volume
 * targets, and the node list (for option 97 lookups by properties.system_uuid). Answers are checked for
 * shape here; what they mean is decided in ../ironic/node.ts.
 */

export type Json = Record<string, unknown>;

/** The raw records one node's answer is made from. */
export interface NodeRecords {
  node: Json;
  ports: Json[];
  connectors: Json[];
  targets: Json[];
}

/** Most pages followed for one collection (Ironic's max_limit is 1000 by default). */
const MAX_PAGES = 50;

/**
 * Ironic's error body: `{"error_message": "<JSON text with faultstring>"}` (the text is itself JSON in
 * most releases, plain in some).
 */
export function ironicErrorMessage(body: unknown): string {
  if (body === null || typeof body !== "object") return typeof body === "string" ? body.slice(0, 200) : "";
  const text = (body as Json).error_message;
  if (typeof text !== "string") return "";
  try {
    const inner = JSON.parse(text) as Json;
    if (typeof inner.faultstring === "string") return inner.faultstring.slice(0, 300);
  } catch {
    // plain text
  }
  return text.slice(0, 300);
}

function listOf(body: unknown, key: string, what: string): Json[] {
  const list = body !== null && typeof body === "object" ? (body as Json)[key] : undefined;
  if (!Array.isArray(list) || !list.every((x) => x !== null && typeof x === "object" && !Array.isArray(x)))
    throw new OpenStackAnswerError(`ironic ${what}: the answer has no "${key}" list`);
  return list as Json[];
}

export class IronicClient {
  constructor(
    private readonly session: KeystoneSession,
    private readonly microversion: string,
    private readonly override?: string,
  ) {}

  private async get(path: string): Promise<{ status: number; body: unknown }> {
    const res = await this.session.call(BAREMETAL_TYPES, "GET", path, {
      headers: { "x-openstack-ironic-api-version": this.microversion },
      override: this.override,
    });
    return res;
  }

  private async getOk(path: string, what: string): Promise<unknown> {
    const res = await this.get(path);
    if (res.status !== 200)
      throw new OpenStackHttpError(
        `ironic ${what}: HTTP ${res.status} ${ironicErrorMessage(res.body)}`.trim(),
        res.status,
      );
    return res.body;
  }

  /** Every page of a collection, following Ironic's `next` links (same endpoint, marker/limit). */
  private async collection(path: string, key: string, what: string): Promise<Json[]> {
    const out: Json[] = [];
    let next: string | undefined = path;
    for (let page = 0; next !== undefined; page++) {
      if (page >= MAX_PAGES)
        throw new OpenStackAnswerError(`ironic ${what}: more than ${MAX_PAGES} pages, refused`);
      const body = await this.getOk(next, what);
      out.push(...listOf(body, key, what));
      const link = (body as Json).next;
      next = typeof link === "string" && link !== "" ? this.pathOf(link, path) : undefined;
    }
    return out;
  }

  /** `next` is an absolute URL on the same API; only its /v1 path and query are followed. */
  private pathOf(link: string, asked: string): string {
    let url: URL;
    try {
      url = new URL(link);
    } catch {
      throw new OpenStackAnswerError(`ironic: next link ${JSON.stringify(link.slice(0, 100))} is not a URL`);
    }
    const at = url.pathname.indexOf("/v1/");
    const path = at < 0 ? "" : url.pathname.slice(at);
    const base = asked.split("?")[0] ?? "";
    if (path !== base) throw new OpenStackAnswerError(`ironic: next link leaves ${base}`);
    return `${path}${url.search}`;
  }

  /** Node UUIDs of the ports with this MAC (none, or one: Ironic's port addresses are unique). */
  async nodesOfMac(mac: string): Promise<string[]> {
    const ports = await this.collection(
      `/v1/ports?address=${encodeURIComponent(mac)}&fields=uuid,address,node_uuid`,
      "ports",
      `ports with address ${mac}`,
    );
    return ports.map((p) => p.node_uuid).filter((u): u is string => typeof u === "string" && u !== "");
  }

  /** A node with its ports, volume connectors and targets; undefined when Ironic has no such node. */
  async nodeRecords(ident: string): Promise<NodeRecords | undefined> {
    const id = encodeURIComponent(ident);
    const res = await this.get(`/v1/nodes/${id}`);
    if (res.status === 404) return undefined;
    if (res.status !== 200)
      throw new OpenStackHttpError(
        `ironic node ${ident}: HTTP ${res.status} ${ironicErrorMessage(res.body)}`.trim(),
        res.status,
      );
    const node = res.body;
    if (node === null || typeof node !== "object" || typeof (node as Json).uuid !== "string")
      throw new OpenStackAnswerError(`ironic node ${ident}: the answer is not a node`);
    const uuid = encodeURIComponent((node as Json).uuid as string);
    const [ports, connectors, targets] = await Promise.all([
      this.collection(`/v1/nodes/${uuid}/ports?fields=uuid,address`, "ports", `ports of node ${ident}`),
      this.collection(
        `/v1/nodes/${uuid}/volume/connectors?detail=True`,
        "connectors",
        `volume connectors of node ${ident}`,
      ),
      this.collection(
        `/v1/nodes/${uuid}/volume/targets?detail=True`,
        "targets",
        `volume targets of node ${ident}`,
      ),
    ]);
    return { node: node as Json, ports, connectors, targets };
  }

  /** properties.system_uuid (recorded by inspection) → node UUID, over every node. */
  async systemUuids(): Promise<Map<string, string>> {
    const nodes = await this.collection("/v1/nodes?fields=uuid,properties&limit=1000", "nodes", "node list");
    const out = new Map<string, string>();
    for (const n of nodes) {
      const props = n.properties as Json | undefined;
      const sys = props?.system_uuid;
      if (typeof sys === "string" && typeof n.uuid === "string") out.set(sys.toLowerCase(), n.uuid);
    }
    return out;
  }
}
