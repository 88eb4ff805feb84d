import type { Logger } from "pino";
import type { InitramfsFlavour, RootVolume } from "./cmdline.js";
import type { LabNetwork } from "./netns.js";
import type { ServerLogItem } from "./timeline.js";
import type { VmArch } from "./vm.js";

/** What the machine should boot: loaders for its architecture, kernel, initrd and command line. */
export interface BootFiles {
  arch: VmArch;
  /** Folder with shimx64.efi/grubx64.efi (x64) or shimaa64.efi/grubaa64.efi (aa64), as firmware/fetch.sh lays out. */
  loaderDir: string;
  kernel: string;
  initrd: string;
  /** The lab's reference command line (dnsmasq serves it in its grub.cfg). */
  cmdline: string;
}

export interface BootServerContext {
  net: LabNetwork;
  /** A private folder for this boot (TFTP root, config, leases). */
  workDir: string;
  boot: BootFiles;
  /**
   * The same boot as data, for a server that renders its own command line (the appliance does, from
   * its inventory): the iSCSI root volume, the initramfs flavour, and the arguments after the root ones.
   */
  volume?: RootVolume;
  flavour?: InitramfsFlavour;
  extraArgs?: string[];
  mac: string;
  logger: Logger;
}

/**
 * The DHCP+TFTP server of one boot. The lab only needs its log, parsed, and a way to stop it:
 * dnsmasq today (the reference), `netboot serve` with a generated config later.
 */
export interface RunningBootServer {
  readonly name: string;
  readonly pid: number;
  /** Parsed log lines so far, in order (live). */
  readonly items: readonly ServerLogItem[];
  stop(): Promise<void>;
}

export type BootServerFactory = (ctx: BootServerContext) => Promise<RunningBootServer>;

/** Loader file names per architecture: shim loads GRUB by this fixed name, beside itself. */
export function loaderNames(arch: VmArch): { shim: string; grub: string; mok: string; ipxe: string } {
  return arch === "x64"
    ? { shim: "shimx64.efi", grub: "grubx64.efi", mok: "mmx64.efi", ipxe: "ipxe.efi" }
    : { shim: "shimaa64.efi", grub: "grubaa64.efi", mok: "mmaa64.efi", ipxe: "ipxe.efi" };
}

/** A minimal GRUB config whose default entry boots the kernel with the iSCSI root. */
export function referenceGrubConfig(cmdline: string): string {
  return [
    "set timeout=0",
    "set default=boot_iscsi",
    "menuentry 'boot_iscsi' --id boot_iscsi {",
    `  linux /vmlinuz ${cmdline}`,
    "  initrd /initrd.img",
    "}",
    "",
  ].join("\n");
}
