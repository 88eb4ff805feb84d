import { open } from "node:fs/promises";
import type { BootArch } from "../dhcp/boot-types.js";

/** PE/COFF machine types of the UEFI loaders we serve (PE format, "Machine Types"). */
export const PE_MACHINE: Record<BootArch, number> = { x64: 0x8664, aa64: 0xaa64 };

/** Reads the COFF machine type from the start of a PE image, or returns why it is not one. */
export function peMachineType(head: Buffer): number | string {
  if (head.length < 0x40 || head.readUInt16LE(0) !== 0x5a4d) return "no MZ header";
  const peOffset = head.readUInt32LE(0x3c);
  if (peOffset + 6 > head.length)
    return `PE header offset ${peOffset} is past the first ${head.length} bytes`;
  if (head.readUInt32LE(peOffset) !== 0x00004550) return "no PE signature";
  return head.readUInt16LE(peOffset + 4);
}

/** Throws a clear error unless `path` is a PE/COFF image for `arch`. */
export async function checkLoader(path: string, arch: BootArch): Promise<void> {
  let head: Buffer;
  const file = await open(path, "r").catch((err: NodeJS.ErrnoException) => {
    throw new Error(`loader ${path} for ${arch}: cannot open (${err.code ?? err.message})`);
  });
  try {
    const buf = Buffer.alloc(4096);
    const { bytesRead } = await file.read(buf, 0, buf.length, 0);
    head = buf.subarray(0, bytesRead);
  } finally {
    await file.close();
  }
  const machine = peMachineType(head);
  if (typeof machine === "string")
    throw new Error(`loader ${path} for ${arch} is not a PE/COFF image: ${machine}`);
  const want = PE_MACHINE[arch];
  if (machine !== want) {
    const name = Object.entries(PE_MACHINE).find(([, m]) => m === machine)?.[0] ?? "unknown";
    throw new Error(
      `loader ${path} is for machine type 0x${machine.toString(16)} (${name}), but is configured for ${arch} (0x${want.toString(16)})`,
    );
  }
}
