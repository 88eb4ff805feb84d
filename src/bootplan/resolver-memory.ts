import { mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Logger } from "pino";
import { registerSecret } from "../log.js";
import type { NodeVerdict } from "./ironic/node.js";
import type { ResolvedBoot } from "./resolver.js";

/**
 * What the OpenStack resolvers remember between boots, and across restarts when a state directory is
 * given: Cinder attachment ids (so a reboot updates its attachment instead of making another), the last
 * good answer per machine/volume (used while OpenStack is unreachable), and Ironic node answers.
 * Written as one JSON file, mode 0600: the answers carry CHAP secrets.
 */
export interface ResolverMemory {
  /** machine/volume → Cinder attachment id. */
  attachments: Map<string, string>;
  /** machine/volume → last good Cinder answer. */
  lastGood: Map<string, ResolvedBoot>;
  /** Ironic node UUID → its last answer and when it was read. */
  ironicNodes: Map<string, { verdict: NodeVerdict; fetchedAt: number }>;
  /** MAC → the Ironic node whose port it is (null: no such port), and when that was read. */
  ironicMacs: Map<string, { node: string | null; fetchedAt: number }>;
  /** Call after a change: the file is rewritten shortly after. */
  changed(): void;
  /** Writes now if anything changed (at stop). */
  flush(): void;
}

const FILE = "resolver-memory.json";
const WRITE_DELAY_MS = 500;
const VERSION = 1;

interface Stored {
  version: number;
  attachments: [string, string][];
  lastGood: [string, ResolvedBoot][];
  ironicNodes: [string, { verdict: NodeVerdict; fetchedAt: number }][];
  ironicMacs: [string, { node: string | null; fetchedAt: number }][];
}

function maskChap(chap: { password?: string | undefined; in_password?: string | undefined } | undefined) {
  registerSecret(chap?.password);
  registerSecret(chap?.in_password);
}

/** An in-memory memory (netboot render, tests): nothing is written. */
export function ephemeralMemory(): ResolverMemory {
  return {
    attachments: new Map(),
    lastGood: new Map(),
    ironicNodes: new Map(),
    ironicMacs: new Map(),
    changed: () => {},
    flush: () => {},
  };
}

/** The memory kept in `stateDir`; a missing or unreadable file starts empty (logged), never fails the start. */
export function persistentMemory(stateDir: string, logger: Logger): ResolverMemory {
  const path = join(stateDir, FILE);
  const memory = ephemeralMemory();
  try {
    const stored = JSON.parse(readFileSync(path, "utf8")) as Stored;
    if (stored.version !== VERSION) throw new Error(`version ${String(stored.version)} is not ${VERSION}`);
    for (const [k, v] of stored.attachments) memory.attachments.set(k, v);
    for (const [k, v] of stored.lastGood) {
      maskChap(v.chap);
      memory.lastGood.set(k, v);
    }
    for (const [k, v] of stored.ironicNodes) {
      if (v.verdict.kind === "node" && v.verdict.node.target.kind === "properties")
        maskChap(v.verdict.node.target.connection.chap);
      memory.ironicNodes.set(k, v);
    }
    for (const [k, v] of stored.ironicMacs) memory.ironicMacs.set(k, v);
    logger.info(
      { attachments: memory.attachments.size, ironic_nodes: memory.ironicNodes.size },
      "resolver memory loaded",
    );
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT")
      logger.warn({ path, err: (err as Error).message }, "resolver memory unreadable: starting empty");
  }
  let timer: NodeJS.Timeout | undefined;
  let dirty = false;
  const write = () => {
    timer = undefined;
    if (!dirty) return;
    dirty = false;
    const stored: Stored = {
      version: VERSION,
      attachments: [...memory.attachments],
      lastGood: [...memory.lastGood],
      ironicNodes: [...memory.ironicNodes],
      // "No such port" is kept only in memory: it is short-lived and there may be many.
      ironicMacs: [...memory.ironicMacs].filter(([, v]) => v.node !== null),
    };
    try {
      mkdirSync(stateDir, { recursive: true });
      writeFileSync(`${path}.tmp`, JSON.stringify(stored), { mode: 0o600 });
      renameSync(`${path}.tmp`, path);
    } catch (err) {
      logger.error({ path, err: (err as Error).message }, "resolver memory not written");
    }
  };
  memory.changed = () => {
    dirty = true;
    timer ??= setTimeout(write, WRITE_DELAY_MS);
    timer.unref();
  };
  memory.flush = () => {
    if (timer) clearTimeout(timer);
    write();
  };
  return memory;
}
