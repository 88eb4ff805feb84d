/** The smallest PE/COFF header the loader check accepts: MZ, e_lfanew, "PE\0\0" and the machine type. */
export function peImage(machine: number, size = 4096): Buffer {
  const b = Buffer.alloc(size);
  b.writeUInt16LE(0x5a4d, 0);
  b.writeUInt32LE(0x80, 0x3c);
  b.writeUInt32LE(0x00004550, 0x80);
  b.writeUInt16LE(machine, 0x84);
  return b;
}
