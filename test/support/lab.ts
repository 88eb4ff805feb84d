import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { imageAvailable, labCacheDir } from "../../qemu/lab.js";
import { listLabNamespaces } from "../../qemu/netns.js";
import { pidAlive } from "../../qemu/proc.js";
import { commandsAvailable, isRoot, resourceAvailable } from "./require.js";

const repo = join(import.meta.dirname, "..", "..");

/** Root, namespaces, tgt, dnsmasq, QEMU and firmware: everything a lab boot needs except the image. */
export function labToolsAvailable(arch: "x64" | "aa64" = "x64"): boolean {
  return (
    resourceAvailable("root (network namespaces, tgtd)", isRoot()) &&
    commandsAvailable(
      "ip",
      "tgtd",
      "tgtadm",
      "dnsmasq",
      arch === "x64" ? "qemu-system-x86_64" : "qemu-system-aarch64",
    ) &&
    resourceAvailable(
      arch === "x64" ? "OVMF (package ovmf)" : "AAVMF (package qemu-efi-aarch64)",
      existsSync(arch === "x64" ? "/usr/share/OVMF/OVMF_CODE_4M.fd" : "/usr/share/AAVMF/AAVMF_CODE.fd"),
    )
  );
}

/** The loaders folder (firmware/fetch.sh OUTDIR), fetched once per machine and cached. */
export function labLoaderRoot(): string {
  return process.env.NETBOOT_LAB_LOADERS ?? join(labCacheDir(), "loaders");
}

/**
 * Builds (or reuses) an image and the loaders; slow the first time on a machine (debootstrap), then
 * instant. Returns false, with the reason printed, when they cannot be had here (skips outside CI).
 */
export function ensureLabArtefacts(image: string, arch: "x64" | "aa64" = "x64"): boolean {
  const loaders = labLoaderRoot();
  const shim = join(loaders, arch, arch === "x64" ? "shimx64.efi" : "shimaa64.efi");
  try {
    if (!existsSync(shim) && existsSync(join(repo, "firmware", "fetch.sh"))) {
      execFileSync("bash", [join(repo, "firmware", "fetch.sh"), loaders], {
        stdio: "inherit",
        timeout: 300_000,
      });
    }
    if (!imageAvailable(image) && existsSync(join(repo, "qemu", "images", "build.sh"))) {
      execFileSync("bash", [join(repo, "qemu", "images", "build.sh"), image], {
        stdio: "inherit",
        timeout: 1_200_000,
      });
    }
  } catch (err) {
    console.warn(`lab artefacts: ${(err as Error).message}`);
  }
  return (
    resourceAvailable(
      `loaders in ${loaders}/${arch} (bash firmware/fetch.sh ${loaders})`,
      existsSync(shim),
    ) && resourceAvailable(`image ${image} (bash qemu/images/build.sh ${image})`, imageAvailable(image))
  );
}

/** What a lab left behind: its namespace if still listed, and any of its processes still alive. */
export async function labLeftovers(resources: { ns: string; pids: number[] }): Promise<string[]> {
  const left: string[] = [];
  if ((await listLabNamespaces()).includes(resources.ns)) left.push(`namespace ${resources.ns}`);
  for (const pid of resources.pids) if (pidAlive(pid)) left.push(`process ${pid}`);
  return left;
}
