/** The default boot policy: loader per architecture, TFTP or HTTP boot, unknown-machine handling. Pure. */
import type { Logger } from "pino";
import { archCodeFromVendorClass, archFromCode, isHttpClient } from "./arch.js";
import type { BootAnswer, BootArch, BootPolicy, BootRequest } from "./boot-types.js";

export interface BootPolicyOptions {
  /** TFTP paths of the first-stage loader, e.g. { x64: "x64/shimx64.efi", aa64: "aa64/shimaa64.efi" }. */
  loaders: Partial<Record<BootArch, string | undefined>>;
  /** Base URL for HTTP boot clients, e.g. "http://10.0.0.1:8080/"; the loader path is appended. */
  httpBaseUrl?: string | undefined;
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
    const loader = opts.loaders[arch];
    if (loader === undefined) {
      log?.warn({ mac: req.mac, arch }, "no loader configured for this architecture");
      return undefined;
    }
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
