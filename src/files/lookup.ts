/**
 * What a client's path names, for every protocol that serves files (TFTP and HTTP): one normalisation, the
 * boot plan's provider first (generated configs, kernels, initrds, with their ownership checks), then the
 * jailed static root. Files are opened through one shared descriptor cache.
 */
import { realpath } from "node:fs/promises";
import type { TftpClient, TftpFileProvider } from "../tftp/provider.js";
import { normaliseRequestPath, resolveInRoot } from "./paths.js";
import { type BlockSource, bufferSource, SharedFileCache } from "./sources.js";

export type LookupResult =
  | { ok: true; source: BlockSource; path: string; generated: boolean }
  | { ok: false; outcome: "not-found" | "denied"; reason: string; path?: string };

export class FileLookup {
  private realRoot: string | undefined;
  readonly files = new SharedFileCache();

  constructor(
    private readonly root: string,
    private provider: TftpFileProvider | undefined,
  ) {}

  /** Resolves the root once (it may be a symlink); call before the first open. */
  async init(): Promise<string> {
    this.realRoot ??= await realpath(this.root);
    return this.realRoot;
  }

  setProvider(provider: TftpFileProvider | undefined): void {
    this.provider = provider;
  }

  /** A client's raw path: normalised, refused when it climbs out, then looked up. */
  async openRequest(requested: string, client: TftpClient): Promise<LookupResult> {
    const path = normaliseRequestPath(requested);
    if (!path.ok)
      return {
        ok: false,
        outcome: path.reason === "empty path" ? "not-found" : "denied",
        reason: path.reason,
      };
    const found = await this.open(path.path, client);
    return found.ok ? found : { ...found, path: path.path };
  }

  /**
   * A normalised path. A provider that throws refuses the request (its message is the reason, for the
   * log); one that answers undefined lets the static root answer.
   */
  async open(path: string, client: TftpClient): Promise<LookupResult> {
    const provided = this.provider ? await this.provider(path, client) : undefined;
    if (provided?.kind === "data")
      return { ok: true, source: bufferSource(provided.data), path, generated: true };
    const real =
      provided?.kind === "file" ? { ok: true as const, realPath: provided.path } : await this.jailed(path);
    if (!real.ok) return { ...real, path };
    const opened = await this.files.open(real.realPath);
    return opened.ok ? { ok: true, source: opened.source, path, generated: false } : { ...opened, path };
  }

  private async jailed(path: string) {
    return resolveInRoot(await this.init(), path);
  }

  get openCount(): number {
    return this.files.openCount;
  }

  close(): Promise<void> {
    return this.files.closeAll();
  }
}
