/**
 * ProxyDHCP beside dnsmasq (the site's DHCP server, addresses only), all on one bridge:
 *   nbdh-site (dnsmasq 10.72.0.2) ─┐
 *   nbdh-app  (us, proxy 10.72.0.1) ├─ nbdh-br in nbdh-l2
 *   nbdh-pxe  (PXE client)         ─┘
 */
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readLeases } from "../../src/dhcp/leases.js";
import { commandsAvailable, isRoot, resourceAvailable } from "../support/require.js";
import { buildFixtures, type JsonLines, Lab, runClient, startServer, tempDir } from "./helpers/netns.js";

const ready = resourceAvailable("root (network namespaces)", isRoot()) && commandsAvailable("ip", "dnsmasq");
const hex = (s: string): string => Buffer.from(s).toString("hex");

describe.runIf(ready)("ProxyDHCP beside dnsmasq", () => {
  const lab = new Lab();
  const dir = tempDir("nbdh-proxy-");
  const stateDir = join(dir, "state");
  let server: JsonLines;

  beforeAll(async () => {
    buildFixtures();
    const l2 = lab.ns("nbdh-l2");
    lab.exec(l2, "ip", ["link", "add", "nbdh-br", "type", "bridge"]);
    lab.exec(l2, "ip", ["link", "set", "nbdh-br", "up"]);
    for (const [ns, dev, port, addr] of [
      ["nbdh-site", "nbdh-d0", "nbdh-bd", "10.72.0.2/24"],
      ["nbdh-app", "nbdh-a0", "nbdh-ba", "10.72.0.1/24"],
      ["nbdh-pxe", "nbdh-p0", "nbdh-bp", undefined],
    ] as const) {
      lab.ns(ns);
      lab.link(ns, dev, addr, l2, port, undefined);
      lab.exec(l2, "ip", ["link", "set", port, "master", "nbdh-br"]);
    }
    const dnsmasq = lab.spawn("nbdh-site", "dnsmasq", [
      "--no-daemon",
      "--port=0",
      "--conf-file=/dev/null",
      "--interface=nbdh-d0",
      "--bind-interfaces",
      "--dhcp-range=10.72.0.100,10.72.0.150,255.255.255.0,5m",
      `--dhcp-leasefile=${join(dir, "dnsmasq.leases")}`,
      `--pid-file=${join(dir, "dnsmasq.pid")}`,
      "--log-dhcp",
      "--no-ping", // its 3 s ping check before each offer is longer than a PXE ROM waits for offers
    ]);
    let dnsmasqLog = "";
    dnsmasq.stderr?.on("data", (d) => {
      dnsmasqLog += d.toString();
    });
    await new Promise((r) => setTimeout(r, 500));
    if (dnsmasq.exitCode !== null) throw new Error(`dnsmasq exited: ${dnsmasqLog}`);
    const started = startServer(
      lab,
      "nbdh-app",
      {
        stateDir,
        nextServer: "10.72.0.1",
        httpBaseUrl: "http://10.72.0.1:8080/",
        dhcp: { mode: "proxy", interfaces: ["nbdh-a0"] },
      },
      dir,
    );
    server = started.out;
    await server.waitFor((l) => l.event === "ready", 15_000);
  });

  afterAll(() => lab.cleanup());

  it("the PXE client gets its address from dnsmasq and its boot file from us (on 67 and 4011)", async () => {
    const mac = "02:72:00:00:00:01";
    const lines = runClient(lab, "nbdh-pxe", {
      iface: "nbdh-p0",
      mac,
      mode: "pxe-proxy",
      broadcastFlag: true, // dnsmasq would unicast to yiaddr, which a socket (not a raw one) cannot receive
      options: { 60: hex("PXEClient:Arch:00011:UNDI:003016"), 93: "000b", 97: `00${"11".repeat(16)}` },
    });
    const offers = lines.filter((l) => l.event === "reply" && l.type === 2) as {
      yiaddr: string;
      file: string;
      siaddr: string;
      options: Record<string, unknown>;
    }[];
    const site = offers.find((o) => o.yiaddr !== "0.0.0.0");
    const proxy = offers.find((o) => o.yiaddr === "0.0.0.0");
    expect(site?.options[54]).toBe("10.72.0.2");
    expect(site?.yiaddr).toMatch(/^10\.72\.0\.1\d\d$/);
    expect(proxy?.options[54]).toBe("10.72.0.1");
    expect(proxy?.file).toBe("aa64/shimaa64.efi");
    expect(proxy?.siaddr).toBe("10.72.0.1");
    expect(proxy?.options[60]).toBe("PXEClient");
    expect(proxy?.options[97]).toBe(`00${"11".repeat(16)}`);
    expect(proxy?.options[51]).toBeUndefined(); // no lease from a proxy
    const ack = lines.find((l) => l.event === "reply" && l.type === 5) as {
      yiaddr: string;
      options: Record<string, unknown>;
    };
    expect(ack.options[54]).toBe("10.72.0.2");
    const on4011 = lines.find((l) => l.event === "reply4011") as {
      from: string;
      fromPort: number;
      file: string;
      type: number;
      options: Record<string, unknown>;
    };
    expect(on4011).toMatchObject({ from: "10.72.0.1", fromPort: 4011, file: "aa64/shimaa64.efi", type: 5 });
    expect(on4011.options[60]).toBe("PXEClient");
    // The address the client claims is logged, and grants nothing: the proxy keeps no lease for it.
    await server.waitFor((l) => l.msg === "dhcp exchange" && l.mac === mac && l.ip === ack.yiaddr);
    expect(readLeases(stateDir).filter((l) => l.mac === mac)).toEqual([]);
  });

  it("ignores clients that are not PXE or HTTP boot clients", async () => {
    const lines = runClient(lab, "nbdh-pxe", {
      iface: "nbdh-p0",
      mac: "02:72:00:00:00:02",
      mode: "pxe-proxy",
      broadcastFlag: true,
      options: {},
    });
    const offers = lines.filter((l) => l.event === "reply" && l.type === 2) as {
      yiaddr: string;
      options: Record<string, unknown>;
    }[];
    expect(offers.length).toBeGreaterThanOrEqual(1);
    expect(offers.every((o) => o.options[54] === "10.72.0.2")).toBe(true);
    await server.waitFor(
      (l) => l.msg === "dhcp exchange" && l.mac === "02:72:00:00:00:02" && l.outcome === "not-pxe",
    );
  });

  it("HTTP boot clients get a URL and HTTPClient", () => {
    const lines = runClient(lab, "nbdh-pxe", {
      iface: "nbdh-p0",
      mac: "02:72:00:00:00:03",
      mode: "pxe-proxy",
      broadcastFlag: true,
      options: { 60: hex("HTTPClient:Arch:00016:UNDI:003001"), 93: "0010" },
    });
    const proxy = lines.find((l) => l.event === "reply" && l.type === 2 && l.yiaddr === "0.0.0.0") as
      | { options: Record<string, unknown> }
      | undefined;
    expect(proxy?.options[60]).toBe("HTTPClient");
    expect(proxy?.options[67]).toBe("http://10.72.0.1:8080/x64/shimx64.efi");
  });
});
