/**
 * ProxyDHCP beside a site DHCP server that shares our address (both on one host, as in the lab of
 * matrix row 5), with a scripted client that behaves like EDK2's UEFI PXE client:
 *   nbpx-site: dnsmasq (addresses only) and us (proxy), both 10.73.0.1 on nbpx-s0
 *   nbpx-pxe:  the client on nbpx-c0
 * With the same server identifier on both servers, any ACK from the proxy to the client's lease
 * REQUEST is taken by EDK2 as the lease confirmation; its yiaddr 0 makes the client decline the lease.
 */
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { commandsAvailable, isRoot, resourceAvailable } from "../support/require.js";
import { buildFixtures, type JsonLines, Lab, runClient, startServer, tempDir } from "./helpers/netns.js";

const ready = resourceAvailable("root (network namespaces)", isRoot()) && commandsAvailable("ip", "dnsmasq");
const hex = (s: string): string => Buffer.from(s).toString("hex");
const SHARED = "10.73.0.1";

describe.runIf(ready)("ProxyDHCP and the site's DHCP server on one address, EDK2-like client", () => {
  const lab = new Lab();
  const dir = tempDir("nbpx-edk2-");
  let server: JsonLines;

  beforeAll(async () => {
    buildFixtures();
    lab.ns("nbpx-site");
    lab.ns("nbpx-pxe");
    lab.link("nbpx-site", "nbpx-s0", `${SHARED}/24`, "nbpx-pxe", "nbpx-c0", undefined);
    const dnsmasq = lab.spawn("nbpx-site", "dnsmasq", [
      "--no-daemon",
      "--port=0",
      "--conf-file=/dev/null",
      "--interface=nbpx-s0",
      "--bind-interfaces",
      "--dhcp-range=10.73.0.100,10.73.0.150,255.255.255.0,5m",
      `--dhcp-leasefile=${join(dir, "dnsmasq.leases")}`,
      `--pid-file=${join(dir, "dnsmasq.pid")}`,
      "--log-dhcp",
      "--no-ping",
    ]);
    let dnsmasqLog = "";
    dnsmasq.stderr?.on("data", (d) => {
      dnsmasqLog += d.toString();
    });
    await new Promise((r) => setTimeout(r, 500));
    if (dnsmasq.exitCode !== null) throw new Error(`dnsmasq exited: ${dnsmasqLog}`);
    const started = startServer(
      lab,
      "nbpx-site",
      {
        stateDir: join(dir, "state"),
        nextServer: SHARED,
        httpBaseUrl: `http://${SHARED}:8080/`,
        dhcp: { mode: "proxy", interfaces: ["nbpx-s0"] },
      },
      dir,
    );
    server = started.out;
    await server.waitFor((l) => l.event === "ready", 15_000);
  });

  afterAll(() => lab.cleanup());

  it("the client keeps the site's lease and boots the proxy's file (no ACK from us on 67)", async () => {
    const mac = "02:73:00:00:00:01";
    const lines = runClient(lab, "nbpx-pxe", {
      iface: "nbpx-c0",
      mac,
      mode: "edk2-proxy",
      broadcastFlag: true, // EDK2 sets it on DISCOVER and REQUEST
      options: {
        60: hex("PXEClient:Arch:00007:UNDI:003000"),
        93: "0007",
        94: "010300",
        97: `00${"22".repeat(16)}`,
      },
    });
    const requestReplies = lines.filter((l) => l.event === "request-reply") as {
      yiaddr: string;
      type: number;
      options: Record<string, unknown>;
    }[];
    // Only the site's server answers the lease REQUEST, with the address it offered.
    expect(requestReplies.length).toBeGreaterThanOrEqual(1);
    for (const r of requestReplies) expect(r.yiaddr).not.toBe("0.0.0.0");
    const result = lines.find((l) => l.event === "result");
    expect(result).toMatchObject({
      outcome: "boot",
      via: "ProxyPxe10",
      file: "x64/shimx64.efi",
      server: SHARED,
    });
    expect(String((result as { address: string }).address)).toMatch(/^10\.73\.0\.1\d\d$/);
    await server.waitFor((l) => l.msg === "dhcp exchange" && l.mac === mac && l.outcome === "learned");
  });
});
