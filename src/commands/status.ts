/**
 * `netboot status [--mac MAC]`: the operator page's picture in a terminal, read from the running appliance's
 * management API. The URL comes from --url or the config's admin.listen; the token from
 * NETBOOT_ADMIN_TOKEN or the config's admin.token (never from a flag, where `ps` would show it).
 */
import { existsSync } from "node:fs";
import type { MachineView } from "../admin/views.js";
import { DEFAULT_CONFIG_FILE, loadConfig } from "../config/load.js";
import type { BootSession } from "../machines/sessions.js";
import { formatTable } from "./table.js";

const sec = (ms: number | undefined) => (ms === undefined ? "" : `${(ms / 1000).toFixed(1)}s`);

function target(
  values: Record<string, string | boolean | undefined>,
): { url: string; token?: string } | string {
  const file = typeof values.config === "string" ? values.config : undefined;
  const config = file !== undefined || existsSync(DEFAULT_CONFIG_FILE) ? loadConfig(file).config : undefined;
  const listen = config?.admin.listen;
  const url =
    typeof values.url === "string"
      ? values.url
      : listen
        ? `http://${listen.address.includes(":") ? `[${listen.address}]` : listen.address}:${listen.port}`
        : undefined;
  if (url === undefined) return "give --url http://ADDR:PORT or a config with admin.listen";
  const token = process.env.NETBOOT_ADMIN_TOKEN ?? config?.admin.token;
  return token === undefined ? { url } : { url, token };
}

async function get<T>(url: string, token: string | undefined): Promise<T> {
  const res = await fetch(url, {
    headers: token ? { authorization: `Bearer ${token}` } : {},
    signal: AbortSignal.timeout(10_000),
  });
  if (res.status === 401) throw new Error(`${url}: 401 (set NETBOOT_ADMIN_TOKEN or admin.token)`);
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
  return (await res.json()) as T;
}

export function formatMachines(machines: MachineView[]): string {
  const rows = machines.map((m) => [
    m.name ?? "-",
    m.mac,
    m.lease?.address ?? "-",
    m.loader ?? "-",
    m.lastBoot?.state ?? "no boot seen",
    m.lastBoot?.lastStep ?? "",
    m.lastBoot ? sec((m.lastBoot.endedAt ?? Date.now()) - m.lastBoot.startedAt) : "",
    m.lastBoot?.diagnosis ?? "",
  ]);
  return formatTable(
    ["MACHINE", "MAC", "ADDRESS", "LOADER", "STATE", "LAST STEP", "TOOK", "DIAGNOSIS"],
    rows,
  );
}

export function formatSession(s: BootSession): string {
  const head = `${s.machine ?? s.mac} (${s.mac}) boot ${s.id}: ${s.state}${s.endedAt ? ` after ${sec(s.endedAt - s.startedAt)}` : ""}\n`;
  const rows = s.steps.map((st) => [
    sec(st.at - s.startedAt),
    st.kind === "dhcp" ? `dhcp${st.client === "firmware" ? "" : ` (${st.client})`}` : (st.protocol ?? ""),
    st.label,
    st.outcome,
    st.kind === "file" ? String(st.bytes ?? "") : (st.ip ?? ""),
    st.ms === undefined ? "" : `${st.ms}ms`,
    st.blksize ? `${st.blksize}/${st.windowsize}` : "",
    st.retransmits ? String(st.retransmits) : "",
  ]);
  const table = formatTable(["T", "VIA", "STEP", "OUTCOME", "BYTES/IP", "TOOK", "BLK/WIN", "REXMIT"], rows);
  return `${head}${table}${s.diagnosis ? `diagnosis: ${s.diagnosis}\n` : ""}`;
}

export async function commandStatus(values: Record<string, string | boolean | undefined>): Promise<number> {
  const t = target(values);
  if (typeof t === "string") {
    process.stderr.write(`netboot status: ${t}\n`);
    return 2;
  }
  const base = t.url.replace(/\/+$/, "");
  try {
    if (typeof values.mac === "string") {
      const { boots } = await get<{ boots: BootSession[] }>(
        `${base}/api/v1/machines/${encodeURIComponent(values.mac)}/boots`,
        t.token,
      );
      const latest = boots[0];
      process.stdout.write(latest ? formatSession(latest) : `no boot seen for ${values.mac}\n`);
      return 0;
    }
    const { machines } = await get<{ machines: MachineView[] }>(`${base}/api/v1/machines`, t.token);
    process.stdout.write(formatMachines(machines));
    return 0;
  } catch (err) {
    process.stderr.write(`netboot status: ${(err as Error).message}\n`);
    return 1;
  }
}
