import { createHash, randomBytes } from "node:crypto";
import { createWriteStream } from "node:fs";
import { mkdir, open, readdir, rename, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { Logger } from "pino";
import type { GlanceClient, GlanceImage } from "./openstack/glance.js";

/**
 * Kernels and initrds from Glance, cached on disk and shared by every machine using the image.
 * Each version is a file named after its checksum, so a changed image is fetched again and never
 * overwrites a file a TFTP transfer may be reading. Files arrive atomically (temp, fsync, rename).
 */
export class ImageCache {
  private readonly inflight = new Map<string, Promise<string>>();

  constructor(
    private readonly dir: string,
    private readonly glance: GlanceClient | undefined,
    private readonly logger: Logger,
  ) {}

  private imageDir(id: string): string {
    if (!/^[0-9a-zA-Z-]+$/.test(id)) throw new Error(`invalid image id ${JSON.stringify(id)}`);
    return join(this.dir, "glance", id);
  }

  /** The newest cached file of an image, whatever its version, or undefined. */
  async newestCached(id: string): Promise<string | undefined> {
    const dir = this.imageDir(id);
    const names = await readdir(dir).catch(() => [] as string[]);
    let best: { path: string; mtime: number } | undefined;
    for (const name of names) {
      if (name.startsWith(".")) continue;
      const path = join(dir, name);
      const st = await stat(path).catch(() => undefined);
      if (st?.isFile() && (!best || st.mtimeMs > best.mtime)) best = { path, mtime: st.mtimeMs };
    }
    return best?.path;
  }

  /**
   * The local file for a Glance image: checks the image's current checksum, downloads it when that
   * version is not cached, and falls back to the newest cached version (logged) when Glance fails.
   */
  async get(id: string): Promise<{ path: string; fallback: boolean }> {
    let image: GlanceImage;
    try {
      if (!this.glance) throw new Error("no Glance configured (resolvers.cinder is needed for glance_id)");
      image = await this.glance.show(id);
      if (image.status !== "active") throw new Error(`image ${id} is ${image.status}, not active`);
    } catch (err) {
      const cached = await this.newestCached(id);
      if (cached) {
        this.logger.warn(
          { image_id: id, file: cached, err: (err as Error).message },
          "glance unavailable: using the cached image file",
        );
        return { path: cached, fallback: true };
      }
      throw err;
    }
    const path = join(this.imageDir(id), versionName(image));
    if (
      await stat(path)
        .then((s) => s.isFile())
        .catch(() => false)
    )
      return { path, fallback: false };

    let running = this.inflight.get(path);
    if (!running) {
      running = this.download(image, path).finally(() => this.inflight.delete(path));
      this.inflight.set(path, running);
    }
    return { path: await running, fallback: false };
  }

  private async download(image: GlanceImage, path: string): Promise<string> {
    const glance = this.glance;
    if (!glance) throw new Error("no Glance configured");
    const dir = this.imageDir(image.id);
    await mkdir(dir, { recursive: true });
    const tmp = join(dir, `.tmp-${process.pid}-${randomBytes(6).toString("hex")}`);
    const { algo, expected } = expectedHash(image);
    const hash = algo ? createHash(algo) : undefined;
    let bytes = 0;
    const started = Date.now();
    const meter = new Transform({
      transform(chunk: Buffer, _enc, done) {
        hash?.update(chunk);
        bytes += chunk.length;
        done(null, chunk);
      },
    });
    try {
      await pipeline(
        await glance.download(image.id),
        meter,
        createWriteStream(tmp, { flags: "wx", mode: 0o644 }),
      );
      // The data must be on disk before the rename makes it visible under its final name.
      const written = await open(tmp, "r+");
      await written.sync().finally(() => written.close());
      if (hash && expected) {
        const actual = hash.digest("hex");
        if (actual !== expected.toLowerCase())
          throw new Error(`image ${image.id}: ${algo} of the download is ${actual}, Glance says ${expected}`);
      }
      if (image.size !== undefined && bytes !== image.size)
        throw new Error(`image ${image.id}: downloaded ${bytes} bytes, Glance says ${image.size}`);
      await rename(tmp, path);
      const d = await open(dir, "r");
      await d.sync().finally(() => d.close());
    } catch (err) {
      await rm(tmp, { force: true });
      throw err;
    }
    this.logger.info(
      { image_id: image.id, file: path, bytes, ms: Date.now() - started, hash_algo: algo },
      "glance image cached",
    );
    await this.removeOtherVersions(dir, path);
    return path;
  }

  /** Older versions go once the new one is in place (a transfer holding one open keeps reading it). */
  private async removeOtherVersions(dir: string, keep: string): Promise<void> {
    for (const name of await readdir(dir).catch(() => [] as string[])) {
      const p = join(dir, name);
      if (p !== keep && !name.startsWith(".tmp-")) await rm(p, { force: true });
    }
  }
}

const NODE_HASHES: Record<string, string> = {
  sha512: "sha512",
  sha384: "sha384",
  sha256: "sha256",
  sha1: "sha1",
  md5: "md5",
};

function expectedHash(image: GlanceImage): { algo: string | undefined; expected: string | undefined } {
  if (image.hashAlgo && image.hashValue) {
    const algo = NODE_HASHES[image.hashAlgo.toLowerCase()];
    if (!algo) throw new Error(`image ${image.id}: unsupported os_hash_algo ${image.hashAlgo}`);
    return { algo, expected: image.hashValue };
  }
  if (image.checksum) return { algo: "md5", expected: image.checksum };
  return { algo: undefined, expected: undefined };
}

/** File name of one version of an image: its checksum when Glance gives one. */
function versionName(image: GlanceImage): string {
  if (image.hashAlgo && image.hashValue)
    return `${image.hashAlgo.toLowerCase()}-${image.hashValue.toLowerCase().slice(0, 40)}`;
  if (image.checksum) return `md5-${image.checksum.toLowerCase()}`;
  return `updated-${(image.updatedAt ?? "unknown").replace(/[^0-9A-Za-z]/g, "")}-${image.size ?? 0}`;
}
