import { createHash, randomBytes } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { mkdir, open, readdir, rename, rm, stat } from "node:fs/promises";
import { Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { Logger } from "pino";
import type { Metrics } from "../metrics/metrics.js";
import { joinInside } from "../paths.js";
import type { GlanceClient, GlanceImage } from "./openstack/glance.js";

/** Limits on what Glance may make the appliance download. */
export interface ImageCacheLimits {
  /** Largest image accepted, whatever Glance claims; the download stops when it is passed. */
  maxBytes: number;
  /** Whole-download deadline (the inactivity limit alone lets a trickle run for ever). */
  downloadTimeoutMs: number;
}

export const DEFAULT_IMAGE_LIMITS: ImageCacheLimits = {
  maxBytes: 2 * 1024 ** 3,
  downloadTimeoutMs: 15 * 60_000,
};

/** Hex digest length of each algorithm Glance's multihash may name (os_hash_algo). */
const DIGEST_HEX_LENGTH: Record<string, number> = { sha512: 128, sha384: 96, sha256: 64, sha1: 40, md5: 32 };

/** A cache file name: `<algo>-<full lowercase hex digest>`, or `updated-<timestamp digits>-<size>`. */
const VERSION_NAME_RE =
  /^(?:sha512-[0-9a-f]{128}|sha384-[0-9a-f]{96}|sha256-[0-9a-f]{64}|sha1-[0-9a-f]{40}|md5-[0-9a-f]{32}|updated-[0-9A-Za-z]{0,40}-\d{1,16})$/;

interface Digest {
  algo: string;
  hex: string;
}

/**
 * The digest Glance claims for an image, checked: a known algorithm and a lowercase hex digest of that
 * algorithm's length. Glance's answer is untrusted input: it names a file in the cache.
 */
export function imageDigest(image: GlanceImage): Digest | undefined {
  if (image.hashAlgo !== undefined || image.hashValue !== undefined) {
    const algo = image.hashAlgo ?? "";
    const length = DIGEST_HEX_LENGTH[algo];
    if (length === undefined)
      throw new Error(
        `image ${image.id}: os_hash_algo ${JSON.stringify(algo).slice(0, 40)} is not supported`,
      );
    const hex = image.hashValue ?? "";
    if (hex.length !== length || !/^[0-9a-f]+$/.test(hex))
      throw new Error(
        `image ${image.id}: os_hash_value is not a ${algo} digest (${length} lowercase hex digits)`,
      );
    return { algo, hex };
  }
  if (image.checksum !== undefined) {
    if (!/^[0-9a-f]{32}$/.test(image.checksum))
      throw new Error(`image ${image.id}: checksum is not an md5 digest (32 lowercase hex digits)`);
    return { algo: "md5", hex: image.checksum };
  }
  return undefined;
}

/** File name of one version of an image. */
function versionName(image: GlanceImage, digest: Digest | undefined): string {
  if (digest) return `${digest.algo}-${digest.hex}`;
  const stamp = (image.updatedAt ?? "unknown").replace(/[^0-9A-Za-z]/g, "").slice(0, 40);
  const size = Number.isSafeInteger(image.size) ? image.size : 0;
  return `updated-${stamp}-${size}`;
}

/** The digest a cache file's own name promises, if it names one. */
function digestOfName(name: string): Digest | undefined {
  const dash = name.indexOf("-");
  const algo = name.slice(0, dash);
  return algo in DIGEST_HEX_LENGTH ? { algo, hex: name.slice(dash + 1) } : undefined;
}

async function fileDigest(path: string, algo: string): Promise<string> {
  const hash = createHash(algo);
  await pipeline(createReadStream(path), hash);
  return hash.digest("hex");
}

/**
 * Kernels and initrds from Glance, cached on disk and shared by every machine using the image.
 * Each version is a file named after its digest, so a changed image is fetched again and never
 * overwrites a file a TFTP transfer may be reading. Files arrive atomically (temp, fsync, rename).
 * Every path stays inside the cache directory, and a cached file is checked against its digest before
 * it is first served (and again whenever it changes on disk).
 */
export class ImageCache {
  private readonly inflight = new Map<string, Promise<string>>();
  /** path → "size:mtime" of the content last verified against the file's digest. */
  private readonly verified = new Map<string, string>();

  constructor(
    private readonly dir: string,
    private readonly glance: GlanceClient | undefined,
    private readonly logger: Logger,
    private readonly limits: ImageCacheLimits = DEFAULT_IMAGE_LIMITS,
    private readonly metrics?: Metrics | undefined,
  ) {}

  private imageDir(id: string): string {
    if (!/^[0-9a-zA-Z-]{1,64}$/.test(id))
      throw new Error(`invalid image id ${JSON.stringify(id).slice(0, 80)}`);
    return joinInside(this.dir, "glance", id);
  }

  /**
   * True when the file's bytes match `digest` (or it has none to check). A mismatch is logged and the
   * file removed, so it is fetched again rather than served.
   */
  private async verify(path: string, digest: Digest | undefined): Promise<boolean> {
    const st = await stat(path).catch(() => undefined);
    if (!st?.isFile()) return false;
    if (!digest) return true;
    const key = `${st.size}:${st.mtimeMs}`;
    if (this.verified.get(path) === key) return true;
    const actual = await fileDigest(path, digest.algo);
    if (actual === digest.hex) {
      this.verified.set(path, key);
      return true;
    }
    this.verified.delete(path);
    this.logger.error(
      { file: path, algo: digest.algo, expected: digest.hex, actual },
      "cached image does not match its digest: removed, not served",
    );
    await rm(path, { force: true });
    return false;
  }

  /** The newest cached file of an image that passes its digest check, whatever its version, or undefined. */
  async newestCached(id: string): Promise<string | undefined> {
    const dir = this.imageDir(id);
    const names = await readdir(dir).catch(() => [] as string[]);
    const candidates: { path: string; mtime: number; digest: Digest | undefined }[] = [];
    for (const name of names) {
      if (!VERSION_NAME_RE.test(name)) continue;
      const path = joinInside(dir, name);
      const st = await stat(path).catch(() => undefined);
      if (st?.isFile()) candidates.push({ path, mtime: st.mtimeMs, digest: digestOfName(name) });
    }
    candidates.sort((a, b) => b.mtime - a.mtime);
    for (const c of candidates) if (await this.verify(c.path, c.digest)) return c.path;
    return undefined;
  }

  /**
   * The local file for a Glance image: checks the image's current digest, downloads it when that
   * version is not cached, and falls back to the newest cached version (logged) when Glance fails.
   * Invalid metadata (a digest that is not one, a size over the limit) is a refusal, never a fallback.
   */
  async get(id: string): Promise<{ path: string; fallback: boolean }> {
    const dir = this.imageDir(id);
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
    const digest = imageDigest(image);
    if (image.size !== undefined && image.size > this.limits.maxBytes)
      throw new Error(
        `image ${id}: Glance says ${image.size} bytes, over the limit of ${this.limits.maxBytes} (resolvers.cinder.image_max_bytes)`,
      );
    const path = joinInside(dir, versionName(image, digest));
    if (await this.verify(path, digest)) {
      this.metrics?.imageCache.inc({ result: "hit" });
      return { path, fallback: false };
    }
    this.metrics?.imageCache.inc({ result: "miss" });

    let running = this.inflight.get(path);
    if (!running) {
      running = this.download(image, digest, path).finally(() => this.inflight.delete(path));
      this.inflight.set(path, running);
    }
    return { path: await running, fallback: false };
  }

  private async download(image: GlanceImage, digest: Digest | undefined, path: string): Promise<string> {
    const glance = this.glance;
    if (!glance) throw new Error("no Glance configured");
    const dir = this.imageDir(image.id);
    await mkdir(dir, { recursive: true });
    const tmp = joinInside(dir, `.tmp-${process.pid}-${randomBytes(6).toString("hex")}`);
    const hash = digest ? createHash(digest.algo) : undefined;
    const limit = Math.min(image.size ?? this.limits.maxBytes, this.limits.maxBytes);
    let bytes = 0;
    const started = Date.now();
    const meter = new Transform({
      transform(chunk: Buffer, _enc, done) {
        bytes += chunk.length;
        if (bytes > limit) {
          done(new Error(`image ${image.id}: download passed ${limit} bytes (Glance's size or the limit)`));
          return;
        }
        hash?.update(chunk);
        done(null, chunk);
      },
    });
    const deadline = AbortSignal.timeout(this.limits.downloadTimeoutMs);
    try {
      await pipeline(
        await glance.download(image.id),
        meter,
        createWriteStream(tmp, { flags: "wx", mode: 0o644 }),
        { signal: deadline },
      ).catch((err: unknown) => {
        if (deadline.aborted)
          throw new Error(
            `image ${image.id}: download not finished after ${this.limits.downloadTimeoutMs} ms (${bytes} bytes)`,
          );
        throw err;
      });
      // The data must be on disk before the rename makes it visible under its final name.
      const written = await open(tmp, "r+");
      await written.sync().finally(() => written.close());
      if (hash && digest) {
        const actual = hash.digest("hex");
        if (actual !== digest.hex)
          throw new Error(
            `image ${image.id}: ${digest.algo} of the download is ${actual}, Glance says ${digest.hex}`,
          );
      }
      if (image.size !== undefined && bytes !== image.size)
        throw new Error(`image ${image.id}: downloaded ${bytes} bytes, Glance says ${image.size}`);
      await rename(tmp, path);
      this.metrics?.imageCacheBytes.inc(bytes);
      const d = await open(dir, "r");
      await d.sync().finally(() => d.close());
    } catch (err) {
      await rm(tmp, { force: true });
      throw err;
    }
    const st = await stat(path);
    this.verified.set(path, `${st.size}:${st.mtimeMs}`);
    this.logger.info(
      { image_id: image.id, file: path, bytes, ms: Date.now() - started, hash_algo: digest?.algo },
      "glance image cached",
    );
    await this.removeOtherVersions(dir, path);
    return path;
  }

  /** Older versions go once the new one is in place (a transfer holding one open keeps reading it). */
  private async removeOtherVersions(dir: string, keep: string): Promise<void> {
    for (const name of await readdir(dir).catch(() => [] as string[])) {
      if (name.startsWith(".tmp-")) continue;
      const p = joinInside(dir, name);
      if (p !== keep) {
        this.verified.delete(p);
        await rm(p, { force: true });
      }
    }
  }
}
