/**
 * One lab boot from the command line (used by qemu/demo.sh):
 *   node dist/qemu/boot.js [--arch x64|aa64] [--flavour initramfs-tools|dracut] [--secure-boot]
 *        [--chap USER:PASSWORD] [--systemd] [--loaders DIR] [--out DIR] [--time-limit SECONDS] [--json]
 *        [--server appliance|appliance-proxy|appliance-cinder|appliance-ironic|dnsmasq]
 * The default server is the appliance (`netboot serve`); dnsmasq is the reference boot.
 * Prints the boot's timeline table; exit 0 when the root filesystem's marker was seen.
 */
import { parseArgs } from "node:util";
import pino from "pino";
import { applianceServer } from "./appliance-server.js";
import type { BootServerFactory } from "./boot-server.js";
import type { InitramfsFlavour } from "./cmdline.js";
import { dnsmasqServer } from "./dnsmasq-server.js";
import { labCacheDir, runBoot } from "./lab.js";
import { formatTimeline } from "./timeline.js";
import type { VmArch } from "./vm.js";

const { values } = parseArgs({
  options: {
    arch: { type: "string", default: "x64" },
    flavour: { type: "string", default: "initramfs-tools" },
    "secure-boot": { type: "boolean", default: false },
    chap: { type: "string" },
    systemd: { type: "boolean", default: false },
    loaders: { type: "string", default: `${labCacheDir()}/loaders` },
    out: { type: "string" },
    "time-limit": { type: "string", default: "600" },
    json: { type: "boolean", default: false },
    server: { type: "string", default: "appliance" },
  },
});

const arch = values.arch as VmArch;
if (arch !== "x64" && arch !== "aa64") throw new Error(`--arch must be x64 or aa64, not ${values.arch}`);
const flavour = values.flavour as InitramfsFlavour;
if (flavour !== "initramfs-tools" && flavour !== "dracut")
  throw new Error(`--flavour must be initramfs-tools or dracut`);
let chap: { user: string; password: string } | undefined;
if (values.chap) {
  const i = values.chap.indexOf(":");
  if (i < 1) throw new Error("--chap USER:PASSWORD");
  chap = { user: values.chap.slice(0, i), password: values.chap.slice(i + 1) };
}

const servers: Record<string, BootServerFactory> = {
  appliance: applianceServer(),
  "appliance-proxy": applianceServer({ dhcpMode: "proxy" }),
  "appliance-cinder": applianceServer({ cinder: true }),
  "appliance-ironic": applianceServer({ ironic: true }),
  dnsmasq: dnsmasqServer,
};
const server = servers[values.server];
if (!server) throw new Error(`--server must be one of ${Object.keys(servers).join(", ")}`);

// Progress on stderr (pretty when a person watches), the table on stdout.
const level = process.env.NETBOOT_LAB_LOG ?? "info";
const logger = process.stderr.isTTY
  ? pino({ level, transport: { target: "pino-pretty", options: { destination: 2, ignore: "pid,hostname" } } })
  : pino({ level }, pino.destination(2));

const result = await runBoot({
  arch,
  flavour,
  secureBoot: values["secure-boot"],
  loaderRoot: values.loaders,
  ...(chap ? { chap } : {}),
  init: values.systemd ? null : "/sbin/netboot-marker",
  timeLimitMs: Number(values["time-limit"]) * 1000,
  server,
  ...(values.out ? { outDir: values.out } : {}),
  logger,
});
if (values.json) console.log(JSON.stringify(result.timeline, null, 2));
else console.log(formatTimeline(result.timeline));
console.log("");
console.log(result.ok ? `marker: ${result.marker}` : "marker: NOT SEEN");
console.log(
  `iSCSI login seen by the target: ${result.targetSawLogin ? `yes (${result.initiators.join(", ")})` : "no"}`,
);
console.log(
  `lab set up in ${(result.setupMs / 1000).toFixed(1)} s (image copy, namespace, tgtd, ${result.timeline.server}, firmware)`,
);
process.exitCode = result.ok ? 0 : 1;
