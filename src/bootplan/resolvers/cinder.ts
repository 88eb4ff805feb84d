import type { Logger } from "pino";
import { registerSecret } from "../../log.js";
import type { Machine } from "../config.js";
import { chapValueProblem } from "../config.js";
import type { ImageCache } from "../image-cache.js";
import { bootFileFor, imageBootFiles } from "../image-files.js";
import type { CinderClient, Connector, IscsiConnection } from "../openstack/cinder.js";
import { isTransientOpenStackError } from "../openstack/http.js";
import {
  type NamedImage,
  type ResolveContext,
  type ResolvedBoot,
  UnresolvableMachineError,
  type VolumeResolver,
} from "../resolver.js";
import { ephemeralMemory, type ResolverMemory } from "../resolver-memory.js";

const PLATFORM = { x64: "x86_64", aa64: "aarch64" } as const;

/**
 * Cinder: the volume's iSCSI export for this machine's initiator, through the attachments API
 * (falling back to os-initialize_connection), and its kernel/ramdisk from volume_image_metadata.
 * The last good answer per machine is kept and used (logged) while OpenStack is unreachable.
 */
export class CinderResolver implements VolumeResolver {
  readonly name = "cinder" as const;
  private readonly attachments: Map<string, string>;
  private readonly lastGood: Map<string, ResolvedBoot>;

  /** `memory` outlives reloads and, with a state directory, restarts. */
  constructor(
    private readonly cinder: CinderClient,
    private readonly cache: ImageCache,
    private readonly logger: Logger,
    private readonly memory: ResolverMemory = ephemeralMemory(),
  ) {
    this.attachments = memory.attachments;
    this.lastGood = memory.lastGood;
  }

  async resolve(machine: Machine, image: NamedImage | undefined, ctx: ResolveContext): Promise<ResolvedBoot> {
    const volume = machine.volume;
    if (volume.resolver !== "cinder")
      throw new UnresolvableMachineError(`machine ${machine.name}: volume is not a Cinder volume`);
    const key = `${machine.name}/${volume.volume_id}`;
    try {
      const resolved = await this.resolveOnline(machine, volume.volume_id, image, ctx);
      this.lastGood.set(key, { ...resolved, fallback: false });
      this.memory.changed();
      return resolved;
    } catch (err) {
      if (err instanceof UnresolvableMachineError) throw err;
      const last = this.lastGood.get(key);
      // Only an unreachable or failing cloud justifies a stale answer: not a refusal (4xx), and not an
      // answer that arrived with invalid data (a bad IQN, a non-iSCSI volume), which is a refusal too.
      if (last && isTransientOpenStackError(err)) {
        this.logger.warn(
          { machine: machine.name, volume_id: volume.volume_id, err: (err as Error).message },
          "cinder unavailable: using the last known good connection info",
        );
        return { ...last, fallback: true };
      }
      throw new UnresolvableMachineError(
        `machine ${machine.name}: cinder volume ${volume.volume_id}: ${(err as Error).message}`,
      );
    }
  }

  private async resolveOnline(
    machine: Machine,
    volumeId: string,
    image: NamedImage | undefined,
    ctx: ResolveContext,
  ): Promise<ResolvedBoot> {
    const info = await this.cinder.showVolume(volumeId);
    const connector: Connector = {
      initiator: machine.initiator_iqn,
      ip: ctx.ip ?? "0.0.0.0",
      host: machine.name,
      multipath: true,
      platform: PLATFORM[ctx.arch ?? machine.arch ?? "x64"],
      os_type: "linux2",
    };
    const key = `${machine.name}/${volumeId}`;
    let connection: IscsiConnection;
    const attached = await this.cinder.attach(volumeId, connector, this.attachments.get(key));
    if (attached) {
      if (this.attachments.get(key) !== attached.attachmentId) {
        this.attachments.set(key, attached.attachmentId);
        this.memory.changed();
      }
      connection = attached.connection;
    } else {
      connection = await this.cinder.initializeConnection(volumeId, connector);
    }
    if (connection.chap) {
      // Learned at run time, so the config's secrets do not include it: mask it in every log line.
      registerSecret(connection.chap.password);
      registerSecret(connection.chap.in_password);
      for (const [field, value] of [
        ["auth_username", connection.chap.username],
        ["auth_password", connection.chap.password],
      ] as const) {
        const problem = chapValueProblem(value);
        if (problem)
          throw new UnresolvableMachineError(`machine ${machine.name}: cinder ${field} ${problem}`);
      }
    }
    if (new Set(connection.iqns).size > 1)
      this.logger.warn(
        { machine: machine.name, volume_id: volumeId },
        "cinder gave several target IQNs: using the first target only",
      );
    const portals = new Set(connection.iqns).size > 1 ? connection.portals.slice(0, 1) : connection.portals;

    let files: Awaited<ReturnType<typeof imageBootFiles>>;
    if (info.kernelId && info.ramdiskId) {
      const [kernel, initrd] = await Promise.all([
        bootFileFor({ glance_id: info.kernelId }, "glance", "kernel", this.cache),
        bootFileFor({ glance_id: info.ramdiskId }, "glance", "initrd", this.cache),
      ]);
      files = { kernel, initrd, fallback: kernel.fallback || initrd.fallback };
    } else if (image) {
      files = await imageBootFiles(image, this.cache);
    } else {
      throw new UnresolvableMachineError(
        `machine ${machine.name}: volume ${volumeId} has no kernel_id/ramdisk_id in volume_image_metadata and the machine has no image`,
      );
    }
    return {
      resolver: "cinder",
      portals,
      iqn: connection.iqn,
      lun: connection.lun,
      chap: connection.chap,
      kernel: { tftpPath: files.kernel.tftpPath, file: files.kernel.file },
      initrd: { tftpPath: files.initrd.tftpPath, file: files.initrd.file },
      fallback: files.fallback,
    };
  }
}
