import { randomUUID } from "node:crypto";
import type { IncomingHttpHeaders } from "node:http";

/**
 * Ironic's v1 API as the appliance reads it, mounted by the OpenStack fake at /baremetal (so Keystone
 * tokens and the catalog are shared). Shaped from the Ironic API reference: collections as
 * `{"ports": [...], "next": url}`, `fields` and `detail`, microversion headers and 406 for an
 * unsupported version, volume resources only from 1.32, errors as `{"error_message": "<JSON text>"}`,
 * and target properties redacted as policy `baremetal:volume:view_target_properties` does.
 */

export interface FakeIronicTarget {
  uuid?: string;
  volume_type: string;
  boot_index: number;
  volume_id?: string;
  properties?: Record<string, unknown>;
}

export interface FakeIronicNode {
  uuid: string;
  name?: string | null;
  properties?: Record<string, unknown>;
  instance_info?: Record<string, unknown>;
  resource_class?: string | null;
  conductor_group?: string;
  traits?: string[];
  /** MACs of the node's ports. */
  ports: string[];
  connectors: { type: string; connector_id: string }[];
  targets: FakeIronicTarget[];
}

export interface FakeIronicOptions {
  nodes?: FakeIronicNode[];
  /** The caller lacks baremetal:volume:view_target_properties: every target's properties are redacted. */
  maskTargetProperties?: boolean;
  maxMicroversion?: string;
  /** Ironic's api.max_limit: collections longer than this are paged with `next`. */
  maxLimit?: number;
}

export interface FakeIronic {
  handle(
    method: string,
    url: string,
    headers: IncomingHttpHeaders,
    base: string,
  ): { status: number; body?: unknown; headers: Record<string, string> } | undefined;
  setNode(node: FakeIronicNode): void;
  removeNode(uuid: string): void;
  setMasked(masked: boolean): void;
}

const MIN = "1.1";
const REDACTED =
  "** Value redacted: Requires permission baremetal:volume:view_target_properties access. Permission denied. **";

function vnum(v: string): number {
  const [a, b] = v.split(".").map(Number);
  return (a ?? 0) * 1000 + (b ?? 0);
}

function ironicError(status: number, faultstring: string) {
  return {
    status,
    body: {
      error_message: JSON.stringify({
        faultstring,
        faultcode: status < 500 ? "Client" : "Server",
        debuginfo: null,
      }),
    },
  };
}

export function createIronicFake(opts: FakeIronicOptions = {}): FakeIronic {
  const max = opts.maxMicroversion ?? "1.93";
  const maxLimit = opts.maxLimit ?? 1000;
  let masked = opts.maskTargetProperties ?? false;
  const nodes = new Map<string, FakeIronicNode & { portUuids: string[]; connectorUuids: string[] }>();
  const created = new Date().toISOString();
  const setNode = (n: FakeIronicNode) => {
    const old = nodes.get(n.uuid);
    nodes.set(n.uuid, {
      ...n,
      targets: n.targets.map((t) => ({ ...t, uuid: t.uuid ?? randomUUID() })),
      portUuids: n.ports.map((_, i) => old?.portUuids[i] ?? randomUUID()),
      connectorUuids: n.connectors.map((_, i) => old?.connectorUuids[i] ?? randomUUID()),
    });
  };
  for (const n of opts.nodes ?? []) setNode(n);

  const find = (ident: string) =>
    nodes.get(ident) ?? [...nodes.values()].find((n) => n.name !== undefined && n.name === ident);

  return {
    setNode,
    removeNode: (uuid) => {
      nodes.delete(uuid);
    },
    setMasked: (m) => {
      masked = m;
    },
    handle(method, url, headers, base) {
      const parsed = new URL(url, "http://fake");
      if (!parsed.pathname.startsWith("/baremetal/")) return undefined;
      const path = parsed.pathname.slice("/baremetal".length);
      const q = parsed.searchParams;
      const asked = headers["x-openstack-ironic-api-version"];
      const version = typeof asked === "string" ? (asked === "latest" ? max : asked.trim()) : MIN;
      const vh = {
        "x-openstack-ironic-api-minimum-version": MIN,
        "x-openstack-ironic-api-maximum-version": max,
        "x-openstack-ironic-api-version": version,
      };
      const answer = (r: { status: number; body?: unknown }) => ({ ...r, headers: vh });
      if (!/^1\.\d+$/.test(version) || vnum(version) > vnum(max) || vnum(version) < vnum(MIN))
        return answer(
          ironicError(
            406,
            `Version ${version} was requested but the minor version is not supported by this service. The supported version range is: [${MIN}, ${max}].`,
          ),
        );
      const mv = vnum(version);
      if (method !== "GET") return answer(ironicError(405, "The method specified is not allowed."));

      const fields = q.get("fields")?.split(",");
      const detail = q.get("detail");
      if (fields && detail !== null && detail.toLowerCase() === "true")
        return answer(ironicError(400, "Can't fetch a subset of fields with 'detail' set"));
      const pick = (o: Record<string, unknown>, defaults: string[]) => {
        const keep = fields ?? (detail?.toLowerCase() === "true" ? Object.keys(o) : defaults);
        const out: Record<string, unknown> = {};
        for (const k of keep) if (k in o) out[k] = o[k];
        out.links = o.links;
        return out;
      };
      const link = (kind: string, uuid: string) => [
        { href: `${base}/baremetal/v1/${kind}/${uuid}`, rel: "self" },
        { href: `${base}/baremetal/${kind}/${uuid}`, rel: "bookmark" },
      ];
      /** A page of `items` (sorted by uuid), with `next` when there is more. */
      const page = (key: string, items: Record<string, unknown>[], route: string) => {
        const limit = Math.min(Number(q.get("limit") ?? maxLimit) || maxLimit, maxLimit);
        const marker = q.get("marker");
        const sorted = [...items].sort((a, b) => String(a.uuid).localeCompare(String(b.uuid)));
        const start = marker ? sorted.findIndex((i) => i.uuid === marker) + 1 : 0;
        const slice = sorted.slice(start, start + limit);
        const body: Record<string, unknown> = { [key]: slice };
        if (start + limit < sorted.length) {
          const next = new URLSearchParams(q);
          next.set("limit", String(limit));
          next.set("marker", String(slice.at(-1)?.uuid));
          body.next = `${base}/baremetal${route}?${next.toString()}`;
        }
        return answer({ status: 200, body });
      };
      const portView = (n: FakeIronicNode & { portUuids: string[] }, i: number) =>
        pick(
          {
            uuid: n.portUuids[i],
            address: n.ports[i],
            node_uuid: n.uuid,
            extra: {},
            local_link_connection: {},
            pxe_enabled: true,
            created_at: created,
            updated_at: null,
            links: link("ports", n.portUuids[i] ?? ""),
          },
          ["uuid", "address"],
        );
      const nodeView = (n: FakeIronicNode) => {
        const view: Record<string, unknown> = {
          uuid: n.uuid,
          name: n.name ?? null,
          driver: "ipmi",
          provision_state: "active",
          power_state: "power off",
          maintenance: false,
          properties: n.properties ?? {},
          instance_info: n.instance_info ?? {},
          instance_uuid: null,
          boot_interface: "pxe",
          storage_interface: "cinder",
          resource_class: n.resource_class ?? null,
          created_at: created,
          updated_at: null,
          links: link("nodes", n.uuid),
        };
        if (mv >= vnum("1.37")) view.traits = n.traits ?? [];
        if (mv >= vnum("1.46")) view.conductor_group = n.conductor_group ?? "";
        return view;
      };

      if (path === "/v1/ports") {
        const address = q.get("address")?.toLowerCase();
        const items = [...nodes.values()].flatMap((n) =>
          n.ports.flatMap((mac, i) => (address === undefined || mac === address ? [portView(n, i)] : [])),
        );
        return page("ports", items, "/v1/ports");
      }
      if (path === "/v1/nodes") {
        const items = [...nodes.values()].map((n) =>
          pick(nodeView(n), [
            "uuid",
            "name",
            "instance_uuid",
            "power_state",
            "provision_state",
            "maintenance",
          ]),
        );
        return page("nodes", items, "/v1/nodes");
      }
      const m = /^\/v1\/nodes\/([^/]+)(\/ports|\/volume\/connectors|\/volume\/targets)?$/.exec(path);
      if (!m) return answer(ironicError(404, "The resource could not be found."));
      const node = find(decodeURIComponent(m[1] ?? ""));
      if (!node) return answer(ironicError(404, `Node ${m[1]} could not be found.`));
      if (!m[2]) return answer({ status: 200, body: pick(nodeView(node), Object.keys(nodeView(node))) });
      if (m[2] === "/ports")
        return page(
          "ports",
          node.ports.map((_, i) => portView(node, i)),
          `/v1/nodes/${node.uuid}/ports`,
        );
      // The volume resources arrived in 1.32; older versions do not know the path.
      if (mv < vnum("1.32")) return answer(ironicError(404, "The resource could not be found."));
      if (m[2] === "/volume/connectors")
        return page(
          "connectors",
          node.connectors.map((c, i) =>
            pick(
              {
                uuid: node.connectorUuids[i],
                node_uuid: node.uuid,
                type: c.type,
                connector_id: c.connector_id,
                extra: {},
                created_at: created,
                updated_at: null,
                links: link("volume/connectors", node.connectorUuids[i] ?? ""),
              },
              ["uuid", "type", "connector_id"],
            ),
          ),
          `/v1/nodes/${node.uuid}/volume/connectors`,
        );
      return page(
        "targets",
        node.targets.map((t) =>
          pick(
            {
              uuid: t.uuid,
              node_uuid: node.uuid,
              volume_type: t.volume_type,
              properties: masked ? { redacted_contents: REDACTED } : (t.properties ?? {}),
              boot_index: t.boot_index,
              volume_id: t.volume_id ?? null,
              extra: {},
              created_at: created,
              updated_at: null,
              links: link("volume/targets", t.uuid ?? ""),
            },
            ["uuid", "volume_type", "boot_index", "volume_id"],
          ),
        ),
        `/v1/nodes/${node.uuid}/volume/targets`,
      );
    },
  };
}
