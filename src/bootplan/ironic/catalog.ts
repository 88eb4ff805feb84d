import type { Logger } from "pino";
import type { IronicConfig } from "../config.js";
import { isTransientOpenStackError } from "../openstack/http.js";
import type { IronicClient } from "../openstack/ironic.js";
import type { ResolverMemory } from "../resolver-memory.js";
import { interpretNode, type NodeVerdict } from "./node.js";

/** A node's answer, and whether it is a stale one used because Ironic could not be reached. */
export interface CatalogAnswer {
  verdict: NodeVerdict;
  stale: boolean;
}

/** Most MACs remembered (answers for unknown MACs are dropped first): a DHCP flood must not grow memory. */
const MAX_MACS = 20_000;

/**
 * Ironic's nodes as the boot plan sees them: by MAC (a port), by SMBIOS UUID (properties.system_uuid)
 * or by node UUID/name. Answers are cached for `cache_ttl_s`; one used after half of that is refreshed
 * in the background, so a boot never waits on Ironic while its answer is fresh. When Ironic is
 * unreachable the last answer is used (logged). Lookups are bounded to `max_concurrent` in flight;
 * anticipations (from DHCP) beyond that are skipped, not queued.
 */
export class IronicCatalog {
  private readonly inflight = new Map<string, Promise<unknown>>();
  private active = 0;
  private readonly waiters: (() => void)[] = [];
  private systemIndex: { map: Map<string, string>; fetchedAt: number } | undefined;

  constructor(
    private readonly client: IronicClient,
    private readonly config: IronicConfig,
    private readonly memory: ResolverMemory,
    private readonly logger: Logger,
    /** Told the name of a node that Ironic no longer serves (deleted, unselected, lost its boot volume). */
    private readonly onDeparted: (name: string) => void = () => {},
    private readonly now: () => number = Date.now,
  ) {}

  private get ttlMs(): number {
    return this.config.cache_ttl_s * 1000;
  }

  /** The cached answer for a MAC (or SMBIOS UUID), whatever its age; no request is made. */
  cached(mac: string, uuid?: string): NodeVerdict | undefined {
    const node = this.memory.ironicMacs.get(mac)?.node ?? (uuid ? this.cachedBySystemUuid(uuid) : undefined);
    return node ? this.memory.ironicNodes.get(node)?.verdict : undefined;
  }

  private cachedBySystemUuid(uuid: string): string | undefined {
    const id = uuid.toLowerCase();
    const indexed = this.systemIndex?.map.get(id);
    if (indexed) return indexed;
    for (const [key, { verdict }] of this.memory.ironicNodes)
      if (verdict.kind === "node" && verdict.node.systemUuid === id) return key;
    return undefined;
  }

  /** The node behind a MAC (its port), else behind the SMBIOS UUID; undefined when Ironic has neither. */
  async lookup(mac: string, uuid?: string): Promise<CatalogAnswer | undefined> {
    const node = (await this.nodeOfMac(mac)) ?? (uuid ? await this.nodeOfSystemUuid(uuid) : undefined);
    return node === undefined ? undefined : this.node(node);
  }

  /** Warms the cache for a machine DHCP just saw, so that its config request finds the answer ready. */
  anticipate(mac: string, uuid?: string): void {
    const known = this.memory.ironicMacs.get(mac);
    if (known && this.now() - known.fetchedAt < this.ttlMs / 2 && (known.node !== null || !uuid)) return;
    if (this.active >= this.config.max_concurrent) return;
    this.lookup(mac, uuid).catch((err: unknown) =>
      this.logger.debug({ mac, err: (err as Error).message }, "ironic lookup ahead of boot failed"),
    );
  }

  /** A node's answer by UUID or name. */
  async node(ident: string): Promise<CatalogAnswer> {
    const entry = this.entryOf(ident);
    const age = entry ? this.now() - entry.fetchedAt : Number.POSITIVE_INFINITY;
    if (entry && age < this.ttlMs) {
      if (age > this.ttlMs / 2) this.refreshInBackground(entry.key);
      return { verdict: entry.verdict, stale: false };
    }
    try {
      return { verdict: await this.fetchNode(ident), stale: false };
    } catch (err) {
      if (entry && isTransientOpenStackError(err)) {
        this.logger.warn(
          { node: entry.key, err: (err as Error).message },
          "ironic unavailable: using the node's last known answer",
        );
        return { verdict: entry.verdict, stale: true };
      }
      throw err;
    }
  }

  private entryOf(ident: string) {
    const direct = this.memory.ironicNodes.get(ident);
    if (direct) return { key: ident, ...direct };
    for (const [key, value] of this.memory.ironicNodes)
      if (value.verdict.kind === "node" ? value.verdict.node.name === ident : value.verdict.name === ident)
        return { key, ...value };
    return undefined;
  }

  private refreshInBackground(uuid: string): void {
    if (this.inflight.has(`node:${uuid}`) || this.active >= this.config.max_concurrent) return;
    this.fetchNode(uuid).catch((err: unknown) =>
      this.logger.warn({ node: uuid, err: (err as Error).message }, "ironic background refresh failed"),
    );
  }

  /** One request at a time per key; at most max_concurrent in flight overall. */
  private once<T>(key: string, work: () => Promise<T>): Promise<T> {
    const running = this.inflight.get(key);
    if (running) return running as Promise<T>;
    const p = this.slot(work).finally(() => this.inflight.delete(key));
    this.inflight.set(key, p);
    return p;
  }

  private async slot<T>(work: () => Promise<T>): Promise<T> {
    while (this.active >= this.config.max_concurrent) await new Promise<void>((r) => this.waiters.push(r));
    this.active++;
    try {
      return await work();
    } finally {
      this.active--;
      this.waiters.shift()?.();
    }
  }

  private fetchNode(ident: string): Promise<NodeVerdict> {
    return this.once(`node:${ident}`, async () => {
      const records = await this.client.nodeRecords(ident);
      const previous = this.entryOf(ident);
      const verdict: NodeVerdict = records
        ? interpretNode(records, this.config.select)
        : { kind: "refused", uuid: ident, name: ident, reason: `ironic has no node ${ident}` };
      const key = records ? String(records.node.uuid) : (previous?.key ?? ident);
      const fetchedAt = this.now();
      this.memory.ironicNodes.set(key, { verdict, fetchedAt });
      if (verdict.kind === "node")
        for (const mac of verdict.node.macs) this.memory.ironicMacs.set(mac, { node: key, fetchedAt });
      this.memory.changed();
      if (verdict.kind === "refused")
        this.logger.info({ node: key, reason: verdict.reason }, "ironic node not served");
      if (previous?.verdict.kind === "node" && verdict.kind === "refused")
        this.onDeparted(previous.verdict.node.name);
      return verdict;
    });
  }

  private async nodeOfMac(mac: string): Promise<string | undefined> {
    const entry = this.memory.ironicMacs.get(mac);
    const age = entry ? this.now() - entry.fetchedAt : Number.POSITIVE_INFINITY;
    const ttl = entry?.node === null ? this.config.unknown_ttl_s * 1000 : this.ttlMs;
    if (entry && age < ttl) return entry.node ?? undefined;
    try {
      const nodes = await this.once(`mac:${mac}`, () => this.client.nodesOfMac(mac));
      const node = nodes[0] ?? null;
      this.remember(mac, node);
      // The port is gone: read its node again, so that a node that left Ironic is noticed (and detached).
      if (entry?.node && entry.node !== node) this.refreshInBackground(entry.node);
      return node ?? undefined;
    } catch (err) {
      if (entry && isTransientOpenStackError(err)) return entry.node ?? undefined;
      throw err;
    }
  }

  private remember(mac: string, node: string | null): void {
    const macs = this.memory.ironicMacs;
    macs.delete(mac);
    macs.set(mac, { node, fetchedAt: this.now() });
    if (macs.size > MAX_MACS) {
      for (const [k, v] of macs) if (v.node === null) macs.delete(k);
      for (const k of macs.keys()) {
        if (macs.size <= MAX_MACS) break;
        macs.delete(k);
      }
    }
    if (node !== null) this.memory.changed();
  }

  private async nodeOfSystemUuid(uuid: string): Promise<string | undefined> {
    const id = uuid.toLowerCase();
    const index = this.systemIndex;
    if (index && this.now() - index.fetchedAt < this.config.unknown_ttl_s * 1000) return index.map.get(id);
    try {
      const map = await this.once("system-uuids", () => this.client.systemUuids());
      this.systemIndex = { map, fetchedAt: this.now() };
      return map.get(id);
    } catch (err) {
      if (isTransientOpenStackError(err)) return this.cachedBySystemUuid(id);
      throw err;
    }
  }
}
