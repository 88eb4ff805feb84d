/**
 * Why a boot stopped, from the steps it got through. Pure: the session store calls it when a session has
 * been silent too long. The sentences name the step that was reached and the one that never came, with
 * the likely causes known for UEFI firmware, shim, GRUB and iPXE.
 */
import type { FileRole } from "./events.js";

export interface DiagnosedStep {
  kind: "dhcp" | "file";
  /** For DHCP: the server's outcome (offer, ack, ...); for files: the transfer's outcome. */
  outcome: string;
  file?: string | undefined;
  role?: FileRole | undefined;
  retransmits?: number | undefined;
  /** The boot file the DHCP answer named. */
  bootFile?: string | undefined;
}

const delivered = (steps: DiagnosedStep[], role: FileRole) =>
  steps.some((s) => s.kind === "file" && s.role === role && s.outcome === "ok");

export function diagnose(steps: DiagnosedStep[]): string {
  const files = steps.filter((s) => s.kind === "file");
  const last = files.at(-1);
  if (
    last &&
    (last.outcome === "timeout" || last.outcome === "error" || last.outcome === "aborted-by-client")
  )
    return `the transfer of ${last.file} ${last.outcome === "timeout" ? "timed out" : last.outcome === "error" ? "failed" : "was aborted by the client"}${last.retransmits ? ` after ${last.retransmits} retransmits` : ""}, and nothing came after it`;
  const missing = last && (last.outcome === "not-found" || last.outcome === "denied") ? last : undefined;
  const missingText = missing
    ? `${missing.file}, which ${missing.outcome === "denied" ? "it may not read (not its own machine's file)" : "does not exist"}`
    : "";
  // A chain file that is missing is the cause; a probe (shim's revocation files) only a detail.
  if (missing && missing.role !== undefined && missing.role !== "other" && missing.role !== "ipxe-autoexec")
    return `the client asked for ${missingText}, and asked for nothing after it`;
  const detail =
    missing && missing.role !== "ipxe-autoexec" ? `; its last request was for ${missingText}` : "";
  return progress(steps, files, last?.file) + detail;
}

function progress(steps: DiagnosedStep[], files: DiagnosedStep[], lastFile: string | undefined): string {
  const dhcp = steps.filter((s) => s.kind === "dhcp");
  const acked = dhcp.filter(
    (s) => s.outcome === "ack" || s.outcome === "proxy-ack" || s.outcome === "proxy-offer",
  );
  if (files.length === 0) {
    if (dhcp.length === 0) return "nothing was heard from the machine";
    if (acked.length === 0)
      return dhcp.some((s) => s.outcome === "offer")
        ? "the firmware was offered an address but never requested it (another DHCP server's offer taken, or the offer never arrived)"
        : `the DHCP requests got no boot answer (${dhcp.at(-1)?.outcome ?? "?"})`;
    const file = acked.at(-1)?.bootFile;
    return `DHCP named the boot file${file ? ` ${file}` : ""}, but the firmware never asked for it (a firewall in the way, or the firmware gave up)`;
  }
  if (delivered(steps, "kernel") && !delivered(steps, "initrd"))
    return "the kernel was delivered but the initrd was never asked for (the config's initrd line, or the loader failed reading it)";
  if (delivered(steps, "grub-config") || delivered(steps, "ipxe-script"))
    return "the machine's config was served, but the kernel was never asked for (the loader stopped at its menu or failed to parse the config)";
  if (delivered(steps, "grub-master"))
    return "GRUB read the master config but never asked for the machine's own grub/<mac>.conf";
  if (delivered(steps, "grub"))
    return "GRUB was loaded but never asked for its config (it looked under another prefix, or failed to start)";
  if (delivered(steps, "shim"))
    return "shim was fetched but the next loader (GRUB) was never asked for: Secure Boot refused shim, or shim looked for GRUB elsewhere";
  if (delivered(steps, "ipxe"))
    return "iPXE was loaded but never asked for its script (its own DHCP got no script URL, or it could not reach the HTTP server)";
  return `the last thing fetched was ${lastFile ?? "?"}, and nothing of the boot chain followed`;
}
