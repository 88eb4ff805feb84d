import { existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { checkLoader, peMachineType } from "../../src/bootplan/pe.js";
import { tempDir } from "./helpers.js";

/** A minimal PE header: MZ, e_lfanew, "PE\0\0", COFF machine. */
function pe(machine: number, peOffset = 0x80): Buffer {
  const b = Buffer.alloc(0x200);
  b.write("MZ", 0, "latin1");
  b.writeUInt32LE(peOffset, 0x3c);
  b.write("PE\0\0", peOffset, "latin1");
  b.writeUInt16LE(machine, peOffset + 4);
  return b;
}

describe("PE/COFF loader check", () => {
  const dir = tempDir();
  const write = (name: string, data: Buffer) => {
    const p = join(dir, name);
    writeFileSync(p, data);
    return p;
  };

  it("reads the machine type", () => {
    expect(peMachineType(pe(0x8664))).toBe(0x8664);
    expect(peMachineType(pe(0xaa64, 0x100))).toBe(0xaa64);
    expect(peMachineType(Buffer.from("#!/bin/sh\n"))).toMatch(/MZ/);
    const noSig = pe(0x8664);
    noSig.write("XX", 0x80, "latin1");
    expect(peMachineType(noSig)).toMatch(/PE signature/);
    const far = pe(0x8664);
    far.writeUInt32LE(0x10000, 0x3c);
    expect(peMachineType(far)).toMatch(/past/);
  });

  it("accepts the right architecture and refuses the wrong one with a clear error", async () => {
    const x64 = write("shimx64.efi", pe(0x8664));
    const aa64 = write("shimaa64.efi", pe(0xaa64));
    await expect(checkLoader(x64, "x64")).resolves.toBeUndefined();
    await expect(checkLoader(aa64, "aa64")).resolves.toBeUndefined();
    await expect(checkLoader(aa64, "x64")).rejects.toThrow(
      /machine type 0xaa64 \(aa64\), but is configured for x64 \(0x8664\)/,
    );
    await expect(checkLoader(write("i386.efi", pe(0x14c)), "x64")).rejects.toThrow(/0x14c \(unknown\)/);
    await expect(checkLoader(write("text.efi", Buffer.from("hello")), "x64")).rejects.toThrow(
      /not a PE\/COFF image/,
    );
    await expect(checkLoader(join(dir, "missing.efi"), "aa64")).rejects.toThrow(/cannot open \(ENOENT\)/);
  });

  // Debian's signed loaders, when installed on this machine (shim-signed, grub-efi-amd64-signed).
  const real = [
    "/usr/lib/shim/shimx64.efi.signed",
    "/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed",
  ].filter((f) => existsSync(f));
  it.skipIf(real.length === 0)(
    "accepts Debian's signed x64 shim and GRUB, refuses them as aa64",
    async () => {
      for (const f of real) {
        await expect(checkLoader(f, "x64")).resolves.toBeUndefined();
        await expect(checkLoader(f, "aa64")).rejects.toThrow(/0x8664/);
      }
    },
  );
});
