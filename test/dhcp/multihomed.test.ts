/**
 * Multi-homed host: the server's namespace has a provisioning and a management interface and no
 * default route; only the provisioning one is configured. A capture on the management side must see
 * the management client's DISCOVERs and nothing at all from the server.
 *   nbdh-mh [nbdh-hp 10.70.0.1/24] ── [nbdh-pc0] nbdh-pc   provisioning client
 *           [nbdh-hm 10.71.0.1/24] ── [nbdh-mc0] nbdh-mc   management client + tshark
 */
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { commandsAvailable, isRoot, resourceAvailable } from "../support/require.js";
import { buildFixtures, type JsonLines, Lab, runClient, sh, startServer, tempDir } from "./helpers/netns.js";

const ready =
  resourceAvailable("root (network namespaces)", isRoot()) && commandsAvailable("ip", "tshark", "udhcpc");

describe.runIf(ready)("multi-homed server", () => {
  const lab = new Lab();
  const dir = tempDir("nbdh-mh-");
  let server: JsonLines;

  beforeAll(async () => {
    buildFixtures();
    lab.ns("nbdh-mh");
    lab.ns("nbdh-pc");
    lab.ns("nbdh-mc");
    lab.link("nbdh-mh", "nbdh-hp", "10.70.0.1/24", "nbdh-pc", "nbdh-pc0", undefined);
    lab.link("nbdh-mh", "nbdh-hm", "10.71.0.1/24", "nbdh-mc", "nbdh-mc0", undefined);
    // As on a real host, the default route is on the management side: the routing table would send
    // a broadcast from an unbound socket out there.
    lab.exec("nbdh-mh", "ip", ["route", "add", "default", "via", "10.71.0.254"]);
    const started = startServer(
      lab,
      "nbdh-mh",
      {
        stateDir: join(dir, "state"),
        nextServer: "10.70.0.1",
        dhcp: {
          mode: "full",
          interfaces: ["nbdh-hp"],
          // A subnet exists for the management side too: only the interface list keeps it unserved.
          subnets: [
            {
              subnet: "10.70.0.0/24",
              interface: "nbdh-hp",
              range: { start: "10.70.0.100", end: "10.70.0.199" },
            },
            {
              subnet: "10.71.0.0/24",
              interface: "nbdh-hm",
              range: { start: "10.71.0.100", end: "10.71.0.199" },
            },
          ],
        },
      },
      dir,
    );
    server = started.out;
    await server.waitFor((l) => l.event === "ready", 15_000);
  });

  afterAll(() => lab.cleanup());

  it("serves the provisioning side only; the management side sees nothing from the server", async () => {
    const pcap = join(dir, "mgmt.pcap");
    const tshark = lab.spawn("nbdh-mc", "tshark", [
      "-i",
      "nbdh-mc0",
      "-n",
      "-w",
      pcap,
      "-f",
      "udp or arp or icmp",
    ]);
    let tsharkErr = "";
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`tshark did not start: ${tsharkErr}`)), 15_000);
      tshark.stderr?.on("data", (d) => {
        tsharkErr += d.toString();
        if (/Capturing on/.test(tsharkErr)) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
    const mgmt = lab.spawn("nbdh-mc", "udhcpc", [
      "-i",
      "nbdh-mc0",
      "-n",
      "-q",
      "-f",
      "-t",
      "4",
      "-T",
      "1",
      "-s",
      "/bin/true",
      "-V",
      "PXEClient",
      "-x",
      "0x5d:0007",
    ]);
    const prov = runClient(lab, "nbdh-pc", {
      iface: "nbdh-pc0",
      mac: "02:70:00:00:00:01",
      mode: "dora",
      options: { 60: Buffer.from("PXEClient").toString("hex"), 93: "0007" },
    });
    const mgmtCode = await new Promise<number | null>((r) => mgmt.on("exit", (c) => r(c)));
    await new Promise((r) => setTimeout(r, 500));
    tshark.kill("SIGINT");
    await new Promise((r) => tshark.on("exit", r));

    const ack = prov.find((l) => l.event === "reply" && l.type === 5) as
      | { yiaddr: string; file: string }
      | undefined;
    expect(ack?.yiaddr).toMatch(/^10\.70\.0\.1\d\d$/);
    expect(ack?.file).toBe("x64/shimx64.efi");
    expect(mgmtCode).not.toBe(0); // udhcpc -n: exit 1 when no lease

    const rows = sh("tshark", [
      "-r",
      pcap,
      "-n",
      "-T",
      "fields",
      "-E",
      "separator=,",
      "-e",
      "eth.src",
      "-e",
      "ip.src",
      "-e",
      "udp.srcport",
      "-e",
      "udp.dstport",
    ])
      .trim()
      .split("\n")
      .filter(Boolean);
    const fromClient = rows.filter((r) => r.endsWith(",68,67"));
    const serverMac = lab.exec("nbdh-mh", "cat", ["/sys/class/net/nbdh-hm/address"]).trim();
    const fromServer = rows.filter(
      (r) =>
        r.startsWith(serverMac) ||
        r.includes(",10.71.0.1,") ||
        r.includes(",10.70.0.1,") ||
        /,67,6[78]$/.test(r),
    );
    expect(fromClient.length).toBeGreaterThanOrEqual(2); // the capture works: the client's DISCOVERs are there
    expect(fromServer).toEqual([]);
    await server.waitFor((l) => l.msg === "dhcp exchange" && l.outcome === "ack" && l.iface === "nbdh-hp");
    expect(server.lines.filter((l) => l.msg === "dhcp exchange" && l.iface !== "nbdh-hp")).toEqual([]);
    // The server never even received the management client's datagrams.
    const mgmtMac = lab.exec("nbdh-mc", "cat", ["/sys/class/net/nbdh-mc0/address"]).trim();
    expect(server.lines.filter((l) => l.mac === mgmtMac)).toEqual([]);
  });
});
