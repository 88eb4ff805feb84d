import type { ChapCredentials } from "./iscsi-target.js";
import type { VmArch } from "./vm.js";

export type InitramfsFlavour = "initramfs-tools" | "dracut";

export interface RootVolume {
  portalIp: string;
  port: number;
  targetIqn: string;
  lun: number;
  initiatorIqn: string;
  rootUuid: string;
  chap?: ChapCredentials;
}

export interface CommandLineOptions {
  arch: VmArch;
  flavour: InitramfsFlavour;
  volume: RootVolume;
  /** `/sbin/netboot-marker` for the fast path; undefined boots systemd. */
  init?: string;
  /** Quiet console: only notices and worse from the kernel (TCG pays for every console byte). */
  quiet?: boolean;
}

/**
 * The arguments after the iSCSI and root ones: rw, the serial console, a quiet console, init=.
 * quiet sets loglevel 4; loglevel=6 after it keeps the few notice lines the timeline reads
 * (kernel banner, SCSI disk) while hiding hundreds of info lines (TCG pays for every console byte).
 */
export function trailingArgs(o: Pick<CommandLineOptions, "arch" | "init" | "quiet">): string[] {
  const args = ["rw", o.arch === "x64" ? "console=ttyS0,115200" : "console=ttyAMA0,115200"];
  if (o.quiet !== false) args.push("quiet", "loglevel=6");
  if (o.init) args.push(`init=${o.init}`);
  return args;
}

/**
 * The lab's reference kernel command line (the appliance renders its own from templates).
 * Forms as measured in issue 7: initramfs-tools takes iscsi_* arguments, dracut `netroot=iscsi:`.
 */
export function kernelCommandLine(o: CommandLineOptions): string {
  const v = o.volume;
  const args: string[] = [];
  if (o.flavour === "initramfs-tools") {
    args.push(
      "ip=dhcp",
      `iscsi_initiator=${v.initiatorIqn}`,
      `iscsi_target_name=${v.targetIqn}`,
      `iscsi_target_ip=${v.portalIp}`,
      `iscsi_target_port=${v.port}`,
      "iscsi_target_group=1",
    );
    if (v.chap) args.push(`iscsi_username=${v.chap.user}`, `iscsi_password=${v.chap.password}`);
  } else {
    const auth = v.chap ? `${v.chap.user}:${v.chap.password}@` : "";
    args.push(
      "ip=dhcp",
      "rd.neednet=1",
      `rd.iscsi.initiator=${v.initiatorIqn}`,
      `netroot=iscsi:${auth}${v.portalIp}::${v.port}:${v.lun}:${v.targetIqn}`,
    );
  }
  args.push(`root=UUID=${v.rootUuid}`, ...trailingArgs(o));
  return args.join(" ");
}
