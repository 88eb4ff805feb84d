/**
 * Full mode against real clients in network namespaces:
 *   nbdh-srv [nbdh-s0 10.77.0.1/24] ── [nbdh-c0] nbdh-cl        (udhcpc, dhclient, scripted client)
 *            [nbdh-s1 10.66.0.1/24] ── [nbdh-r0 10.66.0.2/24] nbdh-rl   (a scripted relay, giaddr 10.88.0.1)
 */
import type { ChildProcess } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { commandsAvailable, isRoot, resourceAvailable } from "../support/require.js";
import { buildFixtures, type JsonLines, Lab, runClient, startServer, tempDir } from "./helpers/netns.js";

const ready =
  resourceAvailable("root (network namespaces)", isRoot()) && commandsAvailable("ip", "udhcpc", "dhclient");
const SRV = "nbdh-srv";
const CL = "nbdh-cl";
const RL = "nbdh-rl";
const hex = (s: string): string => Buffer.from(s).toString("hex");

describe.runIf(ready)("DHCP full mode with real clients", () => {
  const lab = new Lab();
  const dir = tempDir("nbdh-full-");
  const stateDir = join(dir, "state");
  let server: JsonLines;
  let serverChild: ChildProcess;

  beforeAll(async () => {
    buildFixtures();
    lab.ns(SRV);
    lab.ns(CL);
    lab.ns(RL);
    lab.link(SRV, "nbdh-s0", "10.77.0.1/24", CL, "nbdh-c0", undefined);
    lab.link(SRV, "nbdh-s1", "10.66.0.1/24", RL, "nbdh-r0", "10.66.0.2/24");
    lab.exec(RL, "ip", ["addr", "add", "10.88.0.1/24", "dev", "nbdh-r0"]);
    lab.exec(SRV, "ip", ["route", "add", "10.88.0.0/24", "via", "10.66.0.2"]);
    const started = startServer(
      lab,
      SRV,
      {
        stateDir,
        nextServer: "10.77.0.1",
        httpBaseUrl: "http://10.77.0.1:8080/",
        dhcp: {
          mode: "full",
          interfaces: ["nbdh-s0", "nbdh-s1"],
          subnets: [
            {
              subnet: "10.77.0.0/24",
              interface: "nbdh-s0",
              range: { start: "10.77.0.100", end: "10.77.0.199" },
              router: "10.77.0.1",
              dns: ["10.77.0.53"],
              domain: "lab.test",
              lease_time: 600,
            },
            {
              subnet: "10.88.0.0/24",
              range: { start: "10.88.0.10", end: "10.88.0.11" },
              router: "10.88.0.1",
            },
          ],
          reservations: [{ mac: "02:aa:00:00:00:01", address: "10.77.0.50", hostname: "reserved-one" }],
        },
      },
      dir,
    );
    server = started.out;
    serverChild = started.child;
    await server.waitFor((l) => l.event === "ready", 15_000);
  });

  afterAll(() => lab.cleanup());

  const dora = (mac: string, options: Record<string, string>, extra: Record<string, unknown> = {}) =>
    runClient(lab, CL, { iface: "nbdh-c0", mac, mode: "dora", options, ...extra });
  const ack = (lines: Record<string, unknown>[]) =>
    lines.find((l) => l.event === "reply" && l.type === 5) as
      | {
          yiaddr: string;
          siaddr: string;
          file: string;
          options: Record<string, unknown>;
          flags: number;
          giaddr: string;
        }
      | undefined;

  it.each([
    [7, "PXEClient", "x64/shimx64.efi"],
    [9, "PXEClient", "x64/shimx64.efi"],
    [11, "PXEClient", "aa64/shimaa64.efi"],
    [16, "HTTPClient", "http://10.77.0.1:8080/x64/shimx64.efi"],
    [19, "HTTPClient", "http://10.77.0.1:8080/aa64/shimaa64.efi"],
  ])("option 93 = %i (%s) gets %s, next-server and option 60", (code, vendor, file) => {
    const mac = `02:bb:00:00:00:${code.toString(16).padStart(2, "0")}`;
    const a = ack(
      dora(mac, {
        60: hex(`${vendor}:Arch:${String(code).padStart(5, "0")}:UNDI:003016`),
        93: code.toString(16).padStart(4, "0"),
      }),
    );
    expect(a).toBeDefined();
    expect(a?.yiaddr).toMatch(/^10\.77\.0\.1\d\d$/);
    expect(a?.options[67]).toBe(file);
    expect(a?.file).toBe(file);
    expect(a?.siaddr).toBe("10.77.0.1");
    expect(a?.options[66]).toBe("10.77.0.1");
    expect(a?.options[60]).toBe(vendor);
  });

  it("option 93 = 0 (legacy BIOS) gets an address but no boot file, and is logged", async () => {
    const a = ack(dora("02:bb:00:00:00:00", { 60: hex("PXEClient:Arch:00000:UNDI:002001"), 93: "0000" }));
    expect(a?.yiaddr).toMatch(/^10\.77\.0\./);
    expect(a?.file).toBe("");
    expect(a?.options[67]).toBeUndefined();
    await server.waitFor(
      (l) => l.msg === "legacy BIOS PXE client: no boot file (UEFI only)" && l.mac === "02:bb:00:00:00:00",
    );
    await server.waitFor(
      (l) =>
        l.msg === "dhcp exchange" &&
        l.mac === "02:bb:00:00:00:00" &&
        l.outcome === "ack" &&
        l.arch === "bios",
    );
  });

  it("udhcpc as an aarch64 PXE client (-x 0x5d:000b -V PXEClient)", () => {
    const envDir = tempDir("nbdh-udhcpc-");
    const script = join(envDir, "script.sh");
    writeFileSync(script, `#!/bin/sh\nenv > ${envDir}/env-$1\n`, { mode: 0o755 });
    lab.exec(
      CL,
      "udhcpc",
      [
        "-i",
        "nbdh-c0",
        "-n",
        "-q",
        "-f",
        "-t",
        "3",
        "-T",
        "1",
        "-s",
        script,
        "-x",
        "0x5d:000b",
        "-V",
        "PXEClient",
      ],
      {
        timeout: 20_000,
      },
    );
    const env = Object.fromEntries(
      readFileSync(join(envDir, "env-bound"), "utf8")
        .split("\n")
        .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
    );
    expect(env.ip).toMatch(/^10\.77\.0\.1\d\d$/);
    expect(env.boot_file).toBe("aa64/shimaa64.efi");
    expect(env.siaddr).toBe("10.77.0.1");
    expect(env.vendor).toBe("PXEClient");
    expect(env.router).toBe("10.77.0.1");
    expect(env.dns).toBe("10.77.0.53");
    expect(env.domain).toBe("lab.test");
    expect(env.lease).toBe("600");
  });

  it("dhclient gets a lease (no PXE: no boot file) and releases it", async () => {
    const d = tempDir("nbdh-dhclient-");
    const args = ["-sf", "/bin/true", "-lf", join(d, "leases"), "-pf", join(d, "pid"), "nbdh-c0"];
    lab.exec(CL, "dhclient", ["-1", "-v", ...args], { timeout: 30_000 });
    const leaseText = readFileSync(join(d, "leases"), "utf8");
    const address = /fixed-address (\S+);/.exec(leaseText)?.[1];
    expect(address).toMatch(/^10\.77\.0\.1\d\d$/);
    expect(leaseText).not.toMatch(/filename/);
    expect(leaseText).toMatch(/option domain-name "lab.test"/);
    const bound = await server.waitFor(
      (l) => l.msg === "dhcp exchange" && l.outcome === "ack" && l.ip === address,
    );
    // The release is unicast from the leased address, which -sf /bin/true did not configure: add it.
    lab.exec(CL, "ip", ["addr", "add", `${address}/24`, "dev", "nbdh-c0"]);
    lab.exec(CL, "dhclient", ["-r", "-v", ...args], { timeout: 30_000 });
    await server.waitFor(
      (l) =>
        l.msg === "dhcp exchange" && l.type === "RELEASE" && l.mac === bound.mac && l.outcome === "released",
    );
    lab.exec(CL, "ip", ["addr", "del", `${address}/24`, "dev", "nbdh-c0"]);
  });

  it.runIf(commandsAvailable("dhcpcd"))(
    "dhcpcd gets a lease, renews it (-n) and releases it (-k)",
    async () => {
      const daemon = lab.spawn(CL, "dhcpcd", [
        "-4",
        "-B",
        "--noipv4ll",
        // No RFC 5227 ARP probe: it delays configuring the address by about 5 s, longer than the wait below.
        "--noarp",
        "-c",
        "/bin/true",
        "-f",
        "/dev/null",
        "nbdh-c0",
      ]);
      try {
        const bound = await server.waitFor(
          (l) => l.msg === "dhcp exchange" && l.outcome === "ack" && !String(l.mac).startsWith("02:"),
          20_000,
        );
        expect(String(bound.ip)).toMatch(/^10\.77\.0\.1\d\d$/);
        for (
          let i = 0;
          i < 100 &&
          !lab.exec(CL, "ip", ["-4", "addr", "show", "dev", "nbdh-c0"]).includes(`inet ${bound.ip}/`);
          i++
        )
          await new Promise((r) => setTimeout(r, 100));
        expect(lab.exec(CL, "ip", ["-4", "addr", "show", "dev", "nbdh-c0"])).toContain(`inet ${bound.ip}/24`);
        const acks = () =>
          server.lines.filter((l) => l.msg === "dhcp exchange" && l.outcome === "ack" && l.mac === bound.mac)
            .length;
        const before = acks();
        lab.exec(CL, "dhcpcd", ["-4", "-n", "nbdh-c0"]); // rebind/renew now
        await server.waitFor(
          (l) => l.msg === "dhcp exchange" && l.outcome === "ack" && l.mac === bound.mac && acks() > before,
          20_000,
        );
        lab.exec(CL, "dhcpcd", ["-4", "-k", "nbdh-c0"]);
        await server.waitFor(
          (l) =>
            l.msg === "dhcp exchange" &&
            l.type === "RELEASE" &&
            l.mac === bound.mac &&
            l.outcome === "released",
          20_000,
        );
      } finally {
        if (daemon.exitCode === null) daemon.kill("SIGTERM");
        lab.exec(CL, "ip", ["-4", "addr", "flush", "dev", "nbdh-c0"], { allowFail: true });
        lab.exec(CL, "ip", ["-4", "route", "flush", "dev", "nbdh-c0"], { allowFail: true });
      }
    },
  );

  it("renews by unicast (ciaddr) and NAKs a wrong requested address", async () => {
    const mac = "02:cc:00:00:00:01";
    const first = ack(dora(mac, {}));
    const ip = first?.yiaddr as string;
    expect(ip).toMatch(/^10\.77\.0\./);
    lab.exec(CL, "ip", ["addr", "add", `${ip}/24`, "dev", "nbdh-c0"]);
    try {
      const renew = runClient(lab, CL, {
        iface: "nbdh-c0",
        mac,
        mode: "request",
        ciaddr: ip,
        target: "10.77.0.1",
      });
      const r = ack(renew);
      expect(r?.yiaddr).toBe(ip);
      expect(renew.find((l) => l.event === "reply")?.from).toBe("10.77.0.1");
    } finally {
      lab.exec(CL, "ip", ["addr", "del", `${ip}/24`, "dev", "nbdh-c0"]);
    }
    // INIT-REBOOT into the wrong network
    const wrong = runClient(lab, CL, { iface: "nbdh-c0", mac, mode: "request", requested: "10.99.0.5" });
    expect(wrong.find((l) => l.event === "reply")).toMatchObject({ type: 6, yiaddr: "0.0.0.0" });
    // an address that is another client's
    const taken = runClient(lab, CL, {
      iface: "nbdh-c0",
      mac: "02:cc:00:00:00:02",
      mode: "request",
      requested: ip,
    });
    expect(taken.find((l) => l.event === "reply")).toMatchObject({ type: 6 });
    // the reserved address, asked for by someone else
    const reserved = runClient(lab, CL, {
      iface: "nbdh-c0",
      mac: "02:cc:00:00:00:03",
      mode: "request",
      requested: "10.77.0.50",
    });
    expect(reserved.find((l) => l.event === "reply")).toMatchObject({ type: 6 });
  });

  it("quarantines a DECLINEd address and answers INFORM without a lease", async () => {
    const mac = "02:cc:00:00:00:0d";
    const first = ack(dora(mac, {}));
    const declined = first?.yiaddr as string;
    runClient(lab, CL, {
      iface: "nbdh-c0",
      mac,
      mode: "request",
      messageType: 4,
      requested: declined,
      serverId: "10.77.0.1",
      timeoutMs: 300,
    });
    await server.waitFor(
      (l) =>
        l.msg === "dhcp exchange" && l.type === "DECLINE" && l.outcome === "declined" && l.ip === declined,
    );
    // neither the decliner nor anyone else is offered the quarantined address
    for (const m of [mac, "02:cc:00:00:00:0e"]) {
      const offer = runClient(lab, CL, { iface: "nbdh-c0", mac: m, mode: "discover" }).find(
        (l) => l.event === "reply",
      );
      expect(offer?.yiaddr).toMatch(/^10\.77\.0\./);
      expect(offer?.yiaddr).not.toBe(declined);
    }
    lab.exec(CL, "ip", ["addr", "add", "10.77.0.77/24", "dev", "nbdh-c0"]);
    try {
      const inform = runClient(lab, CL, {
        iface: "nbdh-c0",
        mac: "02:cc:00:00:00:0f",
        mode: "request",
        messageType: 8,
        ciaddr: "10.77.0.77",
        target: "10.77.0.1",
      });
      const reply = inform.find((l) => l.event === "reply") as {
        type: number;
        yiaddr: string;
        options: Record<string, unknown>;
      };
      expect(reply).toMatchObject({ type: 5, yiaddr: "0.0.0.0" });
      expect(reply.options[51]).toBeUndefined();
      expect(reply.options[3]).toEqual(["10.77.0.1"]);
    } finally {
      lab.exec(CL, "ip", ["addr", "del", "10.77.0.77/24", "dev", "nbdh-c0"]);
    }
  });

  it("ignores a REQUEST for another server's offer (server identifier)", () => {
    const lines = runClient(lab, CL, {
      iface: "nbdh-c0",
      mac: "02:cc:00:00:00:09",
      mode: "request",
      requested: "10.77.0.150",
      serverId: "10.77.0.254",
      timeoutMs: 1500,
    });
    expect(lines.filter((l) => l.event === "reply")).toEqual([]);
  });

  it("honours a reservation by MAC, with its host name", () => {
    const a = ack(dora("02:aa:00:00:00:01", { 60: hex("PXEClient:Arch:00007:UNDI:003016"), 93: "0007" }));
    expect(a?.yiaddr).toBe("10.77.0.50");
    expect(a?.options[12]).toBe("reserved-one");
    expect(a?.options[67]).toBe("x64/shimx64.efi");
  });

  it("answers a relayed request to the relay (giaddr) on port 67 from the giaddr subnet, echoing option 82", () => {
    const relayAgent = "0104deadbeef020463616665";
    const lines = runClient(lab, RL, {
      iface: "nbdh-r0",
      mac: "02:dd:00:00:00:01",
      mode: "relay-dora",
      port: 67,
      target: "10.66.0.1",
      giaddr: "10.88.0.1",
      broadcastFlag: true,
      options: { 82: relayAgent, 60: hex("PXEClient:Arch:00011:UNDI:003016"), 93: "000b" },
    });
    const a = ack(lines);
    expect(a?.yiaddr).toMatch(/^10\.88\.0\.1[01]$/);
    expect(a?.giaddr).toBe("10.88.0.1");
    expect(a?.options[82]).toBe(relayAgent);
    expect(a?.options[3]).toEqual(["10.88.0.1"]);
    expect(a?.options[67]).toBe("aa64/shimaa64.efi");
    expect(a?.flags).toBe(0x8000);
    expect(lines.find((l) => l.event === "reply")?.fromPort).toBe(67);
  });

  it("on pool exhaustion sends no offer and logs a clear line", async () => {
    for (const n of [2, 3, 4]) {
      runClient(lab, RL, {
        iface: "nbdh-r0",
        mac: `02:dd:00:00:00:0${n}`,
        mode: "relay-dora",
        port: 67,
        target: "10.66.0.1",
        giaddr: "10.88.0.1",
        timeoutMs: 1000,
      });
    }
    const lines = runClient(lab, RL, {
      iface: "nbdh-r0",
      mac: "02:dd:00:00:00:09",
      mode: "discover",
      port: 67,
      target: "10.66.0.1",
      giaddr: "10.88.0.1",
      timeoutMs: 1000,
    });
    expect(lines.filter((l) => l.event === "reply")).toEqual([]);
    await server.waitFor(
      (l) => l.msg === "DHCP pool exhausted: no free address, no offer sent" && l.subnet === "10.88.0.0/24",
    );
  });

  it("drops malformed datagrams and a 10,000-datagram random burst while good clients are still served", async () => {
    const base = Buffer.alloc(240);
    base[0] = 1;
    base[1] = 1;
    base[2] = 6;
    base.writeUInt32BE(0x63825363, 236);
    const withOpts = (o: number[], mutate?: (b: Buffer) => void) => {
      const b = Buffer.concat([base, Buffer.from(o)]);
      mutate?.(b);
      return b.toString("hex");
    };
    const rawHex = [
      base.subarray(0, 100).toString("hex"), // truncated
      withOpts([53, 1, 1], (b) => b.writeUInt32BE(0x12345678, 236)), // wrong cookie
      withOpts([53, 1, 1, 60, 200, 1, 2]), // length past the end
      withOpts([53, 1, 1, 52, 1, 3, 255], (b) => {
        Buffer.from([52, 1, 3, 255]).copy(b, 108); // overload inside the overloaded field
        Buffer.from([52, 1, 1, 255]).copy(b, 44);
      }),
      withOpts([53, 1, 99, 255]), // unknown message type
    ];
    runClient(lab, CL, { iface: "nbdh-c0", mac: "02:ee:00:00:00:00", mode: "raw", rawHex });
    await server.waitFor(
      (l) => l.msg === "malformed DHCP datagram dropped" && /cookie/.test(String(l.error)),
    );
    await server.waitFor(
      (l) => l.msg === "malformed DHCP datagram dropped" && /past the end/.test(String(l.error)),
    );

    const burst = lab.spawn(CL, process.execPath, [
      join(import.meta.dirname, "../../dist/test/dhcp/fixtures/client.js"),
      JSON.stringify({
        iface: "nbdh-c0",
        mac: "02:ee:00:00:00:01",
        mode: "burst",
        count: 10_000,
        port: 6801,
      }),
    ]);
    const served: string[] = [];
    for (let i = 0; i < 5; i++) {
      const a = ack(dora(`02:ee:00:00:01:0${i}`, { 60: hex("PXEClient"), 93: "0007" }, { timeoutMs: 4000 }));
      if (a) served.push(a.yiaddr);
    }
    const code = await new Promise<number | null>((r) => burst.on("exit", (c) => r(c)));
    expect(code).toBe(0);
    await new Promise((r) => setTimeout(r, 500));
    serverChild.kill("SIGUSR2");
    const stats = (await server.waitFor((l) => l.event === "stats")) as { counters: { malformed: number } };
    // Most of the burst reached the server and was dropped as malformed (UDP may lose a few).
    expect(stats.counters.malformed).toBeGreaterThan(9000);
    expect(served).toHaveLength(5);
    expect(new Set(served).size).toBe(5);
    // still alive and still serving after the burst
    expect(ack(dora("02:ee:00:00:02:00", {}))?.yiaddr).toMatch(/^10\.77\.0\./);
    // no lease record corrupted: every journal line parses and no address has two owners
    const journal = readFileSync(join(stateDir, "dhcp-leases.csv"), "latin1").trim().split("\n");
    for (const line of journal) expect(line).toMatch(/^\d+\.\d+\.\d+\.\d+,[0-9a-f:]*,\d+,[bfd],[^,]*$/);
  });
});
