import got from "got";
import { errorMessage, OpenStackHttpError } from "./http.js";
import { IMAGE_TYPES, type KeystoneSession } from "./keystone.js";

export interface GlanceImage {
  id: string;
  status: string;
  size: number | undefined;
  /** Multihash (Glance "os_hash_algo"/"os_hash_value"), e.g. sha512. */
  hashAlgo: string | undefined;
  hashValue: string | undefined;
  /** Legacy md5 "checksum", used only when there is no multihash. */
  checksum: string | undefined;
  updatedAt: string | undefined;
  /** A whole-disk or partition image's separate kernel and ramdisk (image properties), as Ironic reads them. */
  kernelId: string | undefined;
  ramdiskId: string | undefined;
}

/** Glance v2: image show and the data download. */
export class GlanceClient {
  constructor(
    private readonly session: KeystoneSession,
    private readonly timeoutMs: number,
  ) {}

  private async base(): Promise<{ url: string; token: string }> {
    const { url, token } = await this.session.endpoint(IMAGE_TYPES);
    // Glance catalog entries usually carry no version; some carry /v2.
    return { url: url.replace(/\/v2(\.\d+)?$/, ""), token };
  }

  async show(id: string): Promise<GlanceImage> {
    const res = await this.session.call(IMAGE_TYPES, "GET", `/v2/images/${encodeURIComponent(id)}`);
    if (res.status !== 200)
      throw new OpenStackHttpError(
        `glance image ${id}: HTTP ${res.status} ${errorMessage(res.body)}`.trim(),
        res.status,
      );
    const b = res.body as Record<string, unknown>;
    const str = (v: unknown) => (typeof v === "string" && v !== "" ? v : undefined);
    return {
      id: String(b.id ?? id),
      status: String(b.status ?? ""),
      size: typeof b.size === "number" ? b.size : undefined,
      hashAlgo: str(b.os_hash_algo),
      hashValue: str(b.os_hash_value),
      checksum: str(b.checksum),
      updatedAt: str(b.updated_at),
      kernelId: str(b.kernel_id),
      ramdiskId: str(b.ramdisk_id),
    };
  }

  /** A readable stream of the image data. Idle time is bounded, not the total (initrds are large). */
  async download(id: string) {
    const { url, token } = await this.base();
    return got.stream(`${url}/v2/images/${encodeURIComponent(id)}/file`, {
      headers: { "x-auth-token": token },
      // got's `read` bounds the whole body; `socket` bounds inactivity, which is what a large initrd needs.
      timeout: { connect: this.timeoutMs, response: this.timeoutMs, socket: this.timeoutMs },
      retry: { limit: 0 },
    });
  }
}
