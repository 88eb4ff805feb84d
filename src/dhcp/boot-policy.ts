/** The default boot policy: loader per architecture, TFTP or HTTP boot, unknown-machine handling. Pure. */
import type { Logger } from "pino";
import { archCodeFromVendorClass, archFromCode, isHttpClient } from "./arch.js";
import type { BootAnswer, BootArch, BootPolicy, BootRequest } from "./boot-types.js";

/** The first-stage loaders of one architecture, as paths served over TFTP and HTTP. */
export interface FirstStageLoaders {
  /** Signed shim (then signed GRUB): the default, and the only path for Secure Boot. */
  shim: string;
  /** Unsigned iPXE, for machines whose inventory entry says `loader: ipxe`. */
  ipxe?: string | undefined;
}

export type LoaderKind = "shim" | "ipxe";

export interface BootPolicyOptions {
  /** e.g. { x64: { shim: "x64/shimx64.efi", ipxe: "x64/ipxe.efi" } }. */
  loaders: Partial<Record<BootArch, FirstStageLoaders | undefined>>;
  /** Which loader the machine with this MAC boots (the inventory's `loader`); default shim. */
  loaderKind?: ((mac: string) => LoaderKind) | undefined;
  /** Base URL of the boot HTTP server, e.g. "http://10.0.0.1:8080/": HTTP boot and iPXE script URLs. */
  httpBaseUrl?: string | undefined;
  /** Path (on the HTTP server) of a machine's iPXE script, given to iPXE's own DHCP request. */
  ipxeScriptPath?: ((mac: string) => string) | undefined;
  /** siaddr / option 66. */
  nextServer: string;
  /** Inventory override: the machine's known architecture wins over what its firmware says. */
  archOverride?: ((mac: string) => BootArch | undefined) | undefined;
  /** `ignore`: machines that isKnown() rejects get no boot answer; `boot`: they get the default loader. */
  unknownMachines?: "ignore" | "boot";
  isKnown?: ((mac: string) => boolean) | undefined;
  logger?: Logger | undefined;
}

function joinUrl(base: string, path: string): string {
  return `${base.replace(/\/+$/, "")}/${path.replace(/^\/+/, "")}`;
}

export function makeBootPolicy(opts: BootPolicyOptions): BootPolicy {
  const unknown = opts.unknownMachines ?? "boot";
  return (req: BootRequest): BootAnswer | undefined => {
    const log = opts.logger;
    if (unknown === "ignore" && opts.isKnown && !opts.isKnown(req.mac)) {
      log?.info({ mac: req.mac, outcome: "unknown-machine-ignored" }, "unknown machine: no boot answer");
      return undefined;
    }
    const code = req.archCode ?? archCodeFromVendorClass(req.vendorClass);
    const decision = archFromCode(code);
    const override = opts.archOverride?.(req.mac);
    let arch: BootArch;
    let http = isHttpClient(req.vendorClass);
    if (decision.kind === "uefi") {
      arch = decision.arch;
      http = http || decision.http;
    } else if (decision.kind === "bios") {
      log?.info({ mac: req.mac, archCode: 0 }, "legacy BIOS PXE client: no boot file (UEFI only)");
      return undefined;
    } else if (override === undefined) {
      if (decision.kind === "unknown")
        log?.warn({ mac: req.mac, archCode: decision.code }, "unknown client architecture");
      return undefined;
    } else {
      arch = override;
    }
    if (override !== undefined && override !== arch) {
      log?.info({ mac: req.mac, firmwareArch: arch, arch: override }, "architecture overridden by inventory");
      arch = override;
    }
    if (req.ipxe) return ipxeScriptAnswer(opts, req, arch);
    const loader = chooseLoader(opts, req.mac, arch);
    if (loader === undefined) return undefined;
    if (http) {
      if (opts.httpBaseUrl === undefined) {
        log?.warn({ mac: req.mac, arch }, "HTTP boot client but no HTTP boot URL configured");
        return undefined;
      }
      return {
        bootFile: joinUrl(opts.httpBaseUrl, loader),
        nextServer: opts.nextServer,
        vendorClass: "HTTPClient",
        arch,
      };
    }
    return { bootFile: loader, nextServer: opts.nextServer, vendorClass: "PXEClient", arch };
  };
}

/** The loader path this machine starts with: iPXE where its entry asks for it and one is configured. */
function chooseLoader(opts: BootPolicyOptions, mac: string, arch: BootArch): string | undefined {
  const loaders = opts.loaders[arch];
  if (loaders === undefined) {
    opts.logger?.warn({ mac, arch }, "no loader configured for this architecture");
    return undefined;
  }
  if (opts.loaderKind?.(mac) !== "ipxe") return loaders.shim;
  if (loaders.ipxe !== undefined) return loaders.ipxe;
  opts.logger?.warn({ mac, arch }, "machine asks for iPXE but boot.loaders has no ipxe for this arch: shim");
  return loaders.shim;
}

/**
 * iPXE running (loaded by the firmware) asks again over DHCP: it gets the URL of its machine's script,
 * never a loader (which would load iPXE again, in a loop).
 */
function ipxeScriptAnswer(opts: BootPolicyOptions, req: BootRequest, arch: BootArch): BootAnswer | undefined {
  if (opts.httpBaseUrl === undefined || opts.ipxeScriptPath === undefined) {
    opts.logger?.warn({ mac: req.mac, arch }, "iPXE client but the HTTP server is off: no script URL");
    return undefined;
  }
  return {
    bootFile: joinUrl(opts.httpBaseUrl, opts.ipxeScriptPath(req.mac)),
    nextServer: opts.nextServer,
    vendorClass: "PXEClient",
    arch,
  };
}
