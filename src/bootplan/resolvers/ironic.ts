import type { Logger } from "pino";
import { registerSecret } from "../../log.js";
import type { Machine } from "../config.js";
import type { ImageCache } from "../image-cache.js";
import { bootFileFor, imageBootFiles } from "../image-files.js";
import type { IronicCatalog } from "../ironic/catalog.js";
import type { IronicNode } from "../ironic/node.js";
import type { GlanceClient } from "../openstack/glance.js";
import {
  type NamedImage,
  type ResolveContext,
  type ResolvedBoot,
  UnresolvableMachineError,
  type VolumeResolver,
} from "../resolver.js";

/**
 * Ironic: the node's iqn volume connector is the initiator, its boot_index 0 iSCSI target the root. The
 * target's properties (Cinder's connection data, stored by Ironic's cinder storage interface) are used
 * as they are; when policy masks them, the target's volume is resolved through Cinder with the node's
 * connector, as Ironic itself would. Kernel and ramdisk: instance_info, else the instance image's
 * kernel_id/ramdisk_id, else (Cinder) the volume's image metadata, else the configured image.
 */
export class IronicResolver implements VolumeResolver {
  readonly name = "ironic" as const;

  constructor(
    private readonly catalog: IronicCatalog,
    private readonly cinder: VolumeResolver | undefined,
    private readonly glance: GlanceClient | undefined,
    private readonly cache: ImageCache,
    private readonly logger: Logger,
  ) {}

  async resolve(machine: Machine, image: NamedImage | undefined, ctx: ResolveContext): Promise<ResolvedBoot> {
    const volume = machine.volume;
    if (volume.resolver !== "ironic")
      throw new UnresolvableMachineError(`machine ${machine.name}: volume is not an Ironic node's`);
    let answer: Awaited<ReturnType<IronicCatalog["node"]>>;
    try {
      answer = await this.catalog.node(volume.node);
    } catch (err) {
      throw new UnresolvableMachineError(
        `machine ${machine.name}: ironic node ${volume.node}: ${(err as Error).message}`,
      );
    }
    if (answer.verdict.kind === "refused") throw new UnresolvableMachineError(answer.verdict.reason);
    const node = answer.verdict.node;
    const via = `ironic node ${node.name}${node.name === node.uuid ? "" : ` (${node.uuid})`}`;

    let connection: Pick<ResolvedBoot, "portals" | "iqn" | "lun" | "chap">;
    let cinderFiles: Pick<ResolvedBoot, "kernel" | "initrd"> | undefined;
    let fallback = answer.stale;
    let detail: string;
    if (node.target.kind === "properties") {
      const c = node.target.connection;
      if (c.chap) {
        registerSecret(c.chap.password);
        registerSecret(c.chap.in_password);
      }
      if (new Set(c.iqns).size > 1)
        this.logger.warn(
          { machine: machine.name, node: node.uuid },
          "ironic target has several IQNs: using the first",
        );
      const portals = new Set(c.iqns).size > 1 ? c.portals.slice(0, 1) : c.portals;
      connection = { portals, iqn: c.iqn, lun: c.lun, chap: c.chap };
      detail = `${via}, target ${node.targetUuid} properties`;
    } else {
      if (!this.cinder)
        throw new UnresolvableMachineError(
          `${via}: the boot volume target's properties are masked and resolvers.cinder is not configured`,
        );
      // Ironic's connector for this node: its iqn connector, as its cinder storage interface sends it.
      const asCinder: Machine = {
        ...machine,
        initiator_iqn: node.initiatorIqn,
        volume: { resolver: "cinder", volume_id: node.target.volumeId },
      };
      const viaCinder = await this.cinder.resolve(asCinder, image, ctx);
      connection = {
        portals: viaCinder.portals,
        iqn: viaCinder.iqn,
        lun: viaCinder.lun,
        chap: viaCinder.chap,
      };
      cinderFiles = viaCinder;
      fallback ||= viaCinder.fallback;
      detail = `${via}, target ${node.targetUuid} masked: Cinder volume ${node.target.volumeId}`;
    }

    const files = await this.bootFiles(node, image, cinderFiles);
    return {
      resolver: "ironic",
      ...connection,
      initiatorIqn: node.initiatorIqn,
      kernel: files.kernel,
      initrd: files.initrd,
      fallback: fallback || files.fallback,
      detail,
    };
  }

  private async bootFiles(
    node: IronicNode,
    image: NamedImage | undefined,
    fromCinder: Pick<ResolvedBoot, "kernel" | "initrd"> | undefined,
  ) {
    let kernelId = node.kernelId;
    let ramdiskId = node.ramdiskId;
    if (!kernelId && node.imageSource && this.glance) {
      const source = await this.glance.show(node.imageSource);
      if (source.kernelId && source.ramdiskId) {
        kernelId = source.kernelId;
        ramdiskId = source.ramdiskId;
      }
    }
    if (kernelId && ramdiskId) {
      const [kernel, initrd] = await Promise.all([
        bootFileFor({ glance_id: kernelId }, "glance", "kernel", this.cache),
        bootFileFor({ glance_id: ramdiskId }, "glance", "initrd", this.cache),
      ]);
      return { kernel, initrd, fallback: kernel.fallback || initrd.fallback };
    }
    if (fromCinder) return { ...fromCinder, fallback: false };
    if (!image?.config.kernel || !image.config.initrd)
      throw new UnresolvableMachineError(
        `ironic node ${node.name}: no kernel and ramdisk in instance_info or its image, and image ${image?.name ?? "(none)"} has none`,
      );
    return imageBootFiles(image, this.cache);
  }
}
