import { resolve } from "node:path";
import type { FileSource } from "./config.js";
import type { ImageCache } from "./image-cache.js";
import type { BootFile, NamedImage } from "./resolver.js";

/** TFTP path under which a Glance image is served (kernel or initrd alike). */
export function glanceTftpPath(id: string): string {
  return `glance/${id}`;
}

/** TFTP path of an image's kernel or initrd given as a file on disk. */
export function imageTftpPath(image: string, which: "kernel" | "initrd"): string {
  return `images/${image}/${which}`;
}

/** A kernel or initrd source → the TFTP path GRUB will ask for and the file behind it. */
export async function bootFileFor(
  source: FileSource,
  image: string,
  which: "kernel" | "initrd",
  cache: ImageCache | undefined,
): Promise<BootFile & { fallback: boolean }> {
  if ("path" in source)
    return { tftpPath: imageTftpPath(image, which), file: resolve(source.path), fallback: false };
  if (!cache) throw new Error(`image ${image}: ${which} comes from Glance, but no Glance is configured`);
  const got = await cache.get(source.glance_id);
  return { tftpPath: glanceTftpPath(source.glance_id), file: got.path, fallback: got.fallback };
}

export async function imageBootFiles(image: NamedImage, cache: ImageCache | undefined) {
  const { kernel: kernelSource, initrd: initrdSource } = image.config;
  if (!kernelSource || !initrdSource) throw new Error(`image ${image.name} has no kernel or no initrd`);
  const [kernel, initrd] = await Promise.all([
    bootFileFor(kernelSource, image.name, "kernel", cache),
    bootFileFor(initrdSource, image.name, "initrd", cache),
  ]);
  return { kernel, initrd, fallback: kernel.fallback || initrd.fallback };
}
