/** Lossy, duplicating and reordering paths: transfers still finish with the right checksum. */
import { randomBytes } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import type { TftpServer } from "../../src/tftp/server.js";
import { commandsAvailable, isRoot, resourceAvailable } from "../support/require.js";
import { type ClientName, fetchWith, type LogLine, sha256File, startServer, tempDir } from "./helpers.js";
import { createLossyLink, type LossyLink } from "./netns.js";
import { MisbehavingRelay } from "./relay.js";

const haveClients = commandsAvailable("curl", "tftp", "atftp");
const canNetns =
  haveClients && resourceAvailable("root for network namespaces", isRoot()) && commandsAvailable("ip", "nft");

let root: string;
let cleanup: () => Promise<void>;
let sum: string;
const SIZE = 200_000;

/** atftp prints a line per out-of-order block; keep the rest. */
function stderrTail(s: string): string {
  return s
    .split("\n")
    .filter((l) => !l.includes("wrong block"))
    .slice(-10)
    .join("\n");
}

/**
 * atftp aborts ("unexpected OACK") when it sees the OACK twice: after its ACK of the OACK is lost and the
 * server rightly sends the OACK again, or when the relay duplicates it. A firmware would retry the
 * request, so the test does too, for that client error only.
 */
async function fetchRetrying(
  client: ClientName,
  host: string,
  port: number,
  out: string,
  opts: Parameters<typeof fetchWith>[5],
) {
  let r = await fetchWith(client, host, port, "payload.bin", out, opts);
  let attempts = 1;
  for (let i = 0; i < 5 && r.code !== 0 && r.stderr.includes("unexpected OACK"); i++) {
    r = await fetchWith(client, host, port, "payload.bin", out, opts);
    attempts++;
  }
  return { ...r, attempts };
}

beforeAll(async () => {
  ({ dir: root, cleanup } = await tempDir());
  await writeFile(join(root, "payload.bin"), randomBytes(SIZE));
  sum = await sha256File(join(root, "payload.bin"));
});
afterAll(async () => {
  await cleanup?.();
});

const cases: [ClientName, { blksize?: number; windowsize?: number; noOptions?: boolean }][] = [
  ["curl", { noOptions: true }],
  ["tftp-hpa", {}],
  ["atftp", { blksize: 1428, windowsize: 8 }],
];

describe.skipIf(!canNetns)("packet loss through a veth pair with nftables drops", () => {
  let link: LossyLink;
  let server: TftpServer;
  let lines: LogLine[];
  let port: number;

  beforeAll(async () => {
    link = createLossyLink("l");
    ({ server, port, lines } = await startServer({
      root,
      address: link.serverAddress,
      timeoutMs: 100,
      retries: 40,
    }));
  });
  afterAll(async () => {
    await server?.close();
    link?.destroy();
  });

  for (const [mod, label] of [
    [20, "5%"],
    [5, "20%"],
  ] as const) {
    test(`${label} loss each direction: curl, tftp-hpa and atftp get the right bytes`, {
      timeout: 90_000,
    }, async () => {
      link.setLoss(mod);
      try {
        await Promise.all(
          cases.map(async ([client, opts]) => {
            const out = join(root, `out-${client}-${mod}`);
            const r = await fetchRetrying(client, link.serverAddress, port, out, {
              ...opts,
              netns: link.ns,
              timeoutMs: 80_000,
            });
            expect(r.code, `${client}: ${stderrTail(r.stderr)}`).toBe(0);
            expect(await sha256File(out), client).toBe(sum);
          }),
        );
      } finally {
        link.setLoss(0);
      }
      const done = lines.filter((l) => l.msg === "tftp transfer" && l.outcome === "ok");
      expect(done.reduce((n, l) => n + Number(l.retransmits), 0)).toBeGreaterThan(0);
    });
  }
});

describe.skipIf(!haveClients)("duplicating and reordering relay", () => {
  test("every client gets the right bytes through the relay", { timeout: 60_000 }, async () => {
    const { server, port, lines } = await startServer({ root, timeoutMs: 200, retries: 20 });
    const relay = new MisbehavingRelay(port, 0.15, 0.15);
    const relayPort = await relay.start();
    // A client that gave up on a duplicated OACK ("unexpected OACK") and was run again aborted that attempt
    // itself: the server logs it as aborted by the client, then the retry as ok.
    const expected: string[] = [];
    try {
      for (const [client, opts] of cases) {
        const out = join(root, `out-relay-${client}`);
        const r = await fetchRetrying(client, "127.0.0.1", relayPort, out, { ...opts, timeoutMs: 50_000 });
        expect(r.code, `${client}: ${stderrTail(r.stderr)}`).toBe(0);
        expect(await sha256File(out), client).toBe(sum);
        for (let i = 1; i < r.attempts; i++) expected.push("aborted-by-client");
        expected.push("ok");
      }
      expect(relay.stats.duplicated).toBeGreaterThan(10);
      expect(relay.stats.reordered).toBeGreaterThan(10);
      // A client may exit while the relay still holds its last ACK (up to 30 ms): let the server log it.
      const logged = () => lines.filter((l) => l.msg === "tftp transfer");
      for (let i = 0; i < 100 && logged().length < expected.length; i++)
        await new Promise((r) => setTimeout(r, 50));
      // As a multiset: an aborted attempt's ERROR can reach the server after the next client's transfer ended
      // (the relay holds and reorders datagrams), so the log's order is not the clients' order.
      expect(
        logged()
          .map((l) => String(l.outcome))
          .sort(),
      ).toEqual([...expected].sort());
    } finally {
      relay.close();
      await server.close();
    }
  });
});
