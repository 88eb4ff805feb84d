/** Option 93 (RFC 4578, IANA "Processor Architecture Types") to what this product boots. Pure. */
import type { BootArch } from "./boot-types.js";

export type ArchDecision =
  | { kind: "uefi"; arch: BootArch; http: boolean }
  /** Code 0: legacy BIOS PXE, out of scope: answered without a boot file. */
  | { kind: "bios" }
  | { kind: "unknown"; code: number }
  | { kind: "absent" };

const table: Record<number, { arch: BootArch; http: boolean }> = {
  7: { arch: "x64", http: false }, // EFI BC (x86-64 in practice)
  9: { arch: "x64", http: false }, // EFI x86-64
  11: { arch: "aa64", http: false }, // ARM 64-bit UEFI
  16: { arch: "x64", http: true }, // x64 UEFI HTTP boot
  19: { arch: "aa64", http: true }, // ARM 64-bit UEFI HTTP boot
};

export function archFromCode(code: number | undefined): ArchDecision {
  if (code === undefined) return { kind: "absent" };
  if (code === 0) return { kind: "bios" };
  const hit = table[code];
  return hit ? { kind: "uefi", ...hit } : { kind: "unknown", code };
}

/** HTTP boot clients say so in option 60 even if option 93 is odd; firmware uses "HTTPClient:Arch:...". */
export function isHttpClient(vendorClass: string | undefined): boolean {
  return vendorClass?.startsWith("HTTPClient") ?? false;
}

export function isPxeClient(vendorClass: string | undefined): boolean {
  return vendorClass?.startsWith("PXEClient") ?? false;
}

/** Option 60 "PXEClient:Arch:00007:UNDI:003016" carries the arch too; used when option 93 is missing. */
export function archCodeFromVendorClass(vendorClass: string | undefined): number | undefined {
  const m = vendorClass?.match(/^(?:PXE|HTTP)Client:Arch:(\d{5})/);
  return m ? Number(m[1]) : undefined;
}

/**
 * iPXE says who it is in option 77 as the bare bytes "iPXE" (not RFC 3004's length-prefixed list);
 * a list whose one entry is "iPXE" is accepted too. Given the raw option bytes.
 */
export function isIpxeUserClass(userClass: Uint8Array | undefined): boolean {
  if (!userClass) return false;
  const text = Buffer.from(userClass).toString("latin1");
  return text === "iPXE" || (userClass[0] === 4 && text.slice(1) === "iPXE");
}
