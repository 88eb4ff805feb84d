import type { Chap } from "./cmdline.js";
import type { Portal } from "./config.js";

/** A kernel or initrd as served: the TFTP path GRUB asks for and the file on disk behind it. */
export interface BootFile {
  tftpPath: string;
  file: string;
}

/** What a machine needs to boot from its iSCSI root, whichever resolver found it. */
export type ResolverName = "static" | "cinder" | "ironic";

export interface ResolvedBoot {
  resolver: ResolverName;
  portals: Portal[];
  iqn: string;
  lun: number;
  chap?: Chap | undefined;
  kernel: BootFile;
  initrd: BootFile;
  /** True when a stale answer was used because the source was unreachable. */
  fallback: boolean;
  /** The initiator the target expects, when the source says (Ironic's iqn connector) rather than the inventory. */
  initiatorIqn?: string | undefined;
  /** Where the answer came from, for `netboot render` and the log (e.g. the Ironic node and target). */
  detail?: string | undefined;
}

/** Per-request facts a resolver may use: the address DHCP gave the machine, its architecture. */
export interface ResolveContext {
  ip?: string | undefined;
  arch?: "x64" | "aa64" | undefined;
}

/** Thrown when a machine cannot be resolved: it gets no boot config. The message names the machine. */
export class UnresolvableMachineError extends Error {
  override name = "UnresolvableMachineError";
}

import type { ImageConfig, Machine } from "./config.js";

export interface NamedImage {
  name: string;
  config: ImageConfig;
}

/** Machine → iSCSI connection plus kernel and initrd. */
export interface VolumeResolver {
  readonly name: ResolverName;
  resolve(machine: Machine, image: NamedImage | undefined, ctx: ResolveContext): Promise<ResolvedBoot>;
}
