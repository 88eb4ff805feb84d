/** What the API shows, as plain data: built by the appliance from the machine state, inventory and leases. */
import type { Lease } from "../dhcp/leases.js";
import type { BootSession } from "../machines/sessions.js";

export interface SessionSummary {
  id: string;
  /** The address DHCP gave this boot. */
  address?: string | undefined;
  state: BootSession["state"];
  startedAt: number;
  updatedAt: number;
  endedAt?: number | undefined;
  diagnosis?: string | undefined;
  steps: number;
  lastStep?: string | undefined;
}

export interface MachineView {
  mac: string;
  name?: string | undefined;
  arch?: string | undefined;
  loader?: string | undefined;
  inInventory: boolean;
  lease?: { address: string; expires: number; state: Lease["state"] } | undefined;
  lastBoot?: SessionSummary | undefined;
}

export interface SubnetView {
  subnet: string;
  interface?: string | undefined;
  size: number;
  bound: number;
}

/** The appliance's read-only side, as the admin server needs it. */
export interface AdminSource {
  machines(): MachineView[];
  boots(mac: string): BootSession[];
  leases(): Lease[];
  subnets(): SubnetView[];
  subscribe(listener: (session: BootSession) => void): () => void;
}

export function summarise(s: BootSession): SessionSummary {
  const last = s.steps.at(-1);
  return {
    id: s.id,
    address: s.address,
    state: s.state,
    startedAt: s.startedAt,
    updatedAt: s.updatedAt,
    endedAt: s.endedAt,
    diagnosis: s.diagnosis,
    steps: s.steps.length,
    lastStep: last ? `${last.label} ${last.outcome}` : undefined,
  };
}
