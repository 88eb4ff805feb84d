import type { Machine } from "../config.js";
import type { ImageCache } from "../image-cache.js";
import { imageBootFiles } from "../image-files.js";
import {
  type NamedImage,
  type ResolvedBoot,
  UnresolvableMachineError,
  type VolumeResolver,
} from "../resolver.js";

/** The volume exactly as the inventory gives it. */
export class StaticResolver implements VolumeResolver {
  readonly name = "static" as const;

  constructor(private readonly cache: ImageCache | undefined) {}

  async resolve(machine: Machine, image: NamedImage | undefined): Promise<ResolvedBoot> {
    const volume = machine.volume;
    if (volume.resolver !== "static")
      throw new UnresolvableMachineError(`machine ${machine.name}: volume is not static`);
    if (!image)
      throw new UnresolvableMachineError(`machine ${machine.name}: no image (kernel and initrd) configured`);
    const files = await imageBootFiles(image, this.cache);
    return {
      resolver: "static",
      portals: volume.portals,
      iqn: volume.iqn,
      lun: volume.lun,
      chap: volume.chap,
      kernel: { tftpPath: files.kernel.tftpPath, file: files.kernel.file },
      initrd: { tftpPath: files.initrd.tftpPath, file: files.initrd.file },
      fallback: files.fallback,
    };
  }
}
