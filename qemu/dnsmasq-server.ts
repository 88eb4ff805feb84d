import { statSync } from "node:fs";
import { copyFile, mkdir, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { type BootServerFactory, loaderNames, referenceGrubConfig } from "./boot-server.js";
import type { LabNetwork } from "./netns.js";
import { startDaemon } from "./proc.js";
import { DnsmasqLogReader } from "./timeline.js";

/**
 * The reference boot server: dnsmasq as DHCP+TFTP in the lab namespace, bound to the bridge only.
 * TFTP root: both architectures' shim chosen by option 93, GRUB beside shim, /grub/grub.cfg, kernel, initrd.
 */
export const dnsmasqServer: BootServerFactory = async (ctx) => {
  const { net, boot, workDir, logger } = ctx;
  const root = join(workDir, "tftp");
  await mkdir(join(root, "grub"), { recursive: true });
  const names = loaderNames(boot.arch);
  // Loaders are small: copy (dnsmasq then never follows a link out of its root).
  await copyFile(join(boot.loaderDir, names.shim), join(root, names.shim));
  await copyFile(join(boot.loaderDir, names.grub), join(root, names.grub));
  await copyFile(join(boot.loaderDir, names.mok), join(root, names.mok)).catch(() => undefined);
  await symlink(boot.kernel, join(root, "vmlinuz"));
  await symlink(boot.initrd, join(root, "initrd.img"));
  await writeFile(join(root, "grub", "grub.cfg"), referenceGrubConfig(boot.cmdline));

  const args = [
    ...dnsmasqDhcpArgs(net, workDir, "dnsmasq"),
    `--dhcp-host=${ctx.mac},${net.subnet}.10,nblab-vm`,
    "--dhcp-match=set:efi-x64,option:client-arch,7",
    "--dhcp-match=set:efi-x64,option:client-arch,9",
    "--dhcp-match=set:efi-aa64,option:client-arch,11",
    "--dhcp-boot=tag:efi-x64,shimx64.efi",
    "--dhcp-boot=tag:efi-aa64,shimaa64.efi",
    "--enable-tftp",
    `--tftp-root=${root}`,
  ];
  const sizeOf = (p: string) => {
    try {
      return statSync(p).size;
    } catch {
      return undefined;
    }
  };
  const reader = new DnsmasqLogReader(root, sizeOf);
  const [cmd, argv] = net.exec("dnsmasq", ...args);
  const recent: string[] = [];
  const d = startDaemon(cmd, argv, (line, at) => {
    logger.debug({ dnsmasq: line }, "dnsmasq");
    recent.push(line);
    if (recent.length > 5) recent.shift();
    reader.push(line, at);
  });
  // dnsmasq logs "started" at once; a bad option makes it exit instead.
  const ready = await Promise.race([
    new Promise<boolean>((r) => setTimeout(() => r(true), 300)),
    d.exited.then(() => false),
  ]);
  if (!ready) throw new Error(`dnsmasq exited at start: ${recent.join(" | ")}`);
  logger.info({ dnsmasqPid: d.pid, tftpRoot: root }, "dnsmasq ready");
  return {
    name: "dnsmasq",
    pid: d.pid,
    items: reader.items,
    stop: () => d.stop(2_000),
  };
};

/**
 * dnsmasq as a DHCP server on the lab bridge only: foreground, no DNS, its own lease and pid files in the
 * boot's folder, every exchange logged to stdout. The reference server and the proxy row's site server share it.
 */
export function dnsmasqDhcpArgs(net: LabNetwork, workDir: string, name: string): string[] {
  return [
    "--keep-in-foreground",
    "--conf-file=/dev/null",
    "--port=0",
    // Stay root: the per-boot folders are private (mkdtemp 0700) and the namespace is throw-away.
    "--user=root",
    `--interface=${net.bridge}`,
    "--bind-interfaces",
    `--dhcp-range=${net.subnet}.100,${net.subnet}.200,255.255.255.0,1h`,
    "--log-dhcp",
    "--log-facility=-",
    `--dhcp-leasefile=${join(workDir, `${name}.leases`)}`,
    `--pid-file=${join(workDir, `${name}.pid`)}`,
  ];
}
