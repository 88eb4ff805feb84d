import { describe, expect, it } from "vitest";
import {
  buildTimeline,
  classifySerialLine,
  DnsmasqLogReader,
  formatTimeline,
  parseApplianceLine,
} from "../../qemu/timeline.js";
import { cleanSerial } from "../../qemu/vm.js";

// Lines as dnsmasq 2.90 (--log-dhcp --log-facility=-) and the serial console printed them in the lab.
const T0 = 1_000_000;
const dnsmasq = [
  [T0 + 4100, "dnsmasq-dhcp[7320]: 3547778090 vendor class: PXEClient:Arch:00007:UNDI:003000"],
  [T0 + 4100, "dnsmasq-dhcp[7320]: 3547778090 DHCPDISCOVER(nblab-br0) 52:54:00:6e:62:01"],
  [T0 + 4110, "dnsmasq-dhcp[7320]: 3547778090 DHCPOFFER(nblab-br0) 10.77.0.10 52:54:00:6e:62:01"],
  [T0 + 7900, "dnsmasq-dhcp[7320]: 3547778090 DHCPACK(nblab-br0) 10.77.0.10 52:54:00:6e:62:01 nblab-vm"],
  [T0 + 8000, "dnsmasq-tftp[7320]: error 8 User aborted the transfer received from 10.77.0.10"],
  [T0 + 8010, "dnsmasq-tftp[7320]: sent /tmp/nblab-x/tftp/shimx64.efi to 10.77.0.10"],
  [T0 + 8100, "dnsmasq-tftp[7320]: sent /tmp/nblab-x/tftp/shimx64.efi to 10.77.0.10"],
  [T0 + 8150, "dnsmasq-tftp[7320]: file /tmp/nblab-x/tftp/revocations_sku.efi not found for 10.77.0.10"],
  [T0 + 10_400, "dnsmasq-tftp[7320]: sent /tmp/nblab-x/tftp/grub/grub.cfg to 10.77.0.10"],
] as const;

describe("boot timeline", () => {
  it("reads dnsmasq: DHCP with the arch from option 60, the size probe, files relative to the TFTP root", () => {
    const reader = new DnsmasqLogReader("/tmp/nblab-x/tftp", (p) =>
      p.endsWith("shimx64.efi") ? 1048504 : undefined,
    );
    for (const [at, line] of dnsmasq) reader.push(line, at);
    const tl = buildTimeline({
      startedAt: T0,
      arch: "x64",
      accel: "tcg",
      server: "dnsmasq",
      durationMs: 30_000,
      ok: true,
      serial: [
        { t: 8000, text: ">>Start PXE over IPv4." },
        { t: 26_500, text: "[    0.000000] Linux version 6.1.0-50-amd64 (debian-kernel@lists.debian.org)" },
        {
          t: 42_372,
          text: "iscsistart: Connection1:0 to [target: iqn.x, portal: 10.77.0.1,3260] through [iface: default] is operational now",
        },
        { t: 42_900, text: "[   16.1] sd 0:0:0:1: [sda] Attached SCSI disk" },
        { t: 44_000, text: "NETBOOT-E2E-OK host=nblab-vm root=/dev/sda iscsi=iqn.x" },
      ],
      serverItems: reader.items,
    });
    expect(tl.dhcp.map((d) => [d.message, d.arch ?? null, d.ip ?? null])).toEqual([
      ["DHCPDISCOVER", 7, null],
      ["DHCPOFFER", null, "10.77.0.10"],
      ["DHCPACK", null, "10.77.0.10"],
    ]);
    expect(tl.tftp.map((f) => [f.file, f.outcome, f.bytes ?? null])).toEqual([
      ["shimx64.efi", "size-probe", 1048504],
      ["shimx64.efi", "ok", 1048504],
      ["revocations_sku.efi", "not-found", null],
      ["grub/grub.cfg", "ok", null],
    ]);
    expect(tl.milestones).toMatchObject({
      dhcp: 4100,
      "firmware-pxe": 8000,
      "kernel-start": 26_500,
      "iscsi-login": 42_372,
      "root-disk": 42_900,
      marker: 44_000,
    });
    const text = formatTimeline(tl);
    expect(text).toContain("boot OK: x64 TCG via dnsmasq, 30.0 s");
    expect(text).toMatch(/shimx64\.efi\s+1048504/);
  });

  it("reads the appliance's pino lines for TFTP and DHCP, preferring pino's own time", () => {
    const tftp = parseApplianceLine(
      JSON.stringify({
        level: 30,
        time: 5000,
        client: "10.77.0.10:1234",
        file: "x64/shimx64.efi",
        blksize: 1468,
        windowsize: 4,
        bytes: 1048504,
        ms: 310,
        outcome: "ok",
        msg: "tftp transfer",
      }),
      9999,
    );
    expect(tftp).toEqual({
      kind: "tftp",
      at: 5000,
      row: {
        file: "x64/shimx64.efi",
        client: "10.77.0.10:1234",
        blksize: 1468,
        windowsize: 4,
        bytes: 1048504,
        ms: 310,
        outcome: "ok",
        protocol: "tftp",
      },
    });
    // The boot HTTP server's request line: a file row carried by HTTP.
    expect(
      parseApplianceLine(
        JSON.stringify({
          time: 6000,
          client: "10.77.0.10",
          method: "GET",
          path: "/images/lab/kernel",
          status: 200,
          bytes: 8,
          ms: 3,
          msg: "http request",
        }),
        9999,
      ),
    ).toEqual({
      kind: "tftp",
      at: 6000,
      row: {
        file: "images/lab/kernel",
        protocol: "http",
        outcome: "ok",
        client: "10.77.0.10",
        bytes: 8,
        ms: 3,
      },
    });
    const dhcp = parseApplianceLine(
      // As src/dhcp/engine.ts logs it.
      JSON.stringify({
        level: 30,
        svc: "dhcp",
        mac: "52:54:00:6e:62:01",
        type: "REQUEST",
        ip: "10.77.0.10",
        archCode: 7,
        arch: "x64",
        file: "x64/shimx64.efi",
        outcome: "ack",
        msg: "dhcp exchange",
      }),
      7000,
    );
    expect(dhcp).toEqual({
      kind: "dhcp",
      at: 7000,
      row: { message: "ack", mac: "52:54:00:6e:62:01", ip: "10.77.0.10", arch: 7, file: "x64/shimx64.efi" },
    });
    expect(parseApplianceLine("not json", 1)).toBeUndefined();
    expect(parseApplianceLine("{broken", 1)).toBeUndefined();
    expect(parseApplianceLine(JSON.stringify({ msg: "listening" }), 1)).toBeUndefined();
    // The boot plan names the MAC too, but it is not a DHCP message.
    const generated = { level: 30, mac: "52:54:00:6e:62:01", machine: "vm", msg: "machine config generated" };
    expect(parseApplianceLine(JSON.stringify(generated), 1)).toBeUndefined();
  });

  it("classifies serial milestones and strips OVMF's escape sequences", () => {
    expect(cleanSerial("\u001b[2J\u001b[01;01H\u001b[=3h>>Start PXE over IPv4.\r")).toBe(
      ">>Start PXE over IPv4.",
    );
    expect(classifySerialLine("[    9.85] sd 2:0:0:1: [sda] Attached SCSI disk")).toBe("root-disk");
    expect(classifySerialLine("[   10.2] EXT4-fs (sda): mounted filesystem with ordered data mode")).toBe(
      "root-mounted",
    );
    expect(classifySerialLine("NETBOOT-E2E-OK boot=systemd host=a root=/dev/sda iscsi=iqn.x")).toBe("marker");
    expect(classifySerialLine("Begin: Running /scripts/init-bottom ... done.")).toBeUndefined();
  });
});
