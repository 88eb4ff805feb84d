/** The contract between the DHCP server and the policy that decides what a machine boots. */

/** Client system architecture as this product cares about it (RFC 4578 option 93, IANA registry). */
export type BootArch = "x64" | "aa64";

export interface BootRequest {
  /** lowercase, colon separated: 52:54:00:12:34:56 */
  mac: string;
  /** First value of option 93, if sent. */
  archCode: number | undefined;
  /** Option 60 as sent (e.g. "PXEClient:Arch:00007:UNDI:003000"). */
  vendorClass: string | undefined;
  /** True when option 77 says the client is iPXE (its own DHCP, after the firmware loaded it). */
  ipxe?: boolean | undefined;
  /** Option 97 machine UUID as text, if sent. */
  uuid: string | undefined;
  /** Interface the request arrived on (or the relay's giaddr subnet). */
  interface: string;
}

export interface BootAnswer {
  /** Option 67 / `file`: a TFTP path, or a URL (HTTP boot, or iPXE's script). */
  bootFile: string;
  /** siaddr / option 66. */
  nextServer: string;
  /** Option 60 in the reply. */
  vendorClass: "PXEClient" | "HTTPClient";
  arch: BootArch;
}

/** Synchronous and cheap: it runs inside the DHCP exchange. Undefined means "no boot answer". */
export type BootPolicy = (req: BootRequest) => BootAnswer | undefined;
