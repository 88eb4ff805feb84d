// netboot-appliance operator page: machines and their boot timelines, live over server-sent events.

const $ = (sel) => document.querySelector(sel);
const machines = new Map(); // mac -> machine view
let selected = null; // mac
let selectedSession = null; // session id shown, null = latest

const fmtTime = (ms) => (ms ? new Date(ms).toLocaleTimeString() : "");
const fmtSec = (ms) => (ms === undefined || ms === null ? "" : `${(ms / 1000).toFixed(1)} s`);
const fmtBytes = (b) =>
  b >= 1e6 ? `${(b / 1e6).toFixed(1)} MB` : b >= 1e3 ? `${(b / 1e3).toFixed(1)} kB` : `${b} B`;
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) e.setAttribute(k, v);
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c ?? "")));
  return e;
}
async function api(path) {
  const r = await fetch(path, { credentials: "same-origin" });
  if (r.status === 401) {
    location.href = "/login";
    throw new Error("unauthorized");
  }
  if (!r.ok) throw new Error(`${path}: ${r.status}`);
  return r.json();
}

function renderMachines() {
  const body = $("#machines tbody");
  body.replaceChildren();
  const rows = [...machines.values()].sort(
    (a, b) =>
      (b.lastBoot?.updatedAt ?? 0) - (a.lastBoot?.updatedAt ?? 0) ||
      (a.name ?? a.mac).localeCompare(b.name ?? b.mac),
  );
  const counts = { booting: 0, "handed-off": 0, stalled: 0 };
  for (const m of rows) {
    const b = m.lastBoot;
    if (b) counts[b.state]++;
    const tr = el(
      "tr",
      { "data-mac": m.mac, class: m.mac === selected ? "selected" : "" },
      el("td", {}, m.name ?? "(not in inventory)"),
      el("td", { class: "mono" }, m.mac),
      el("td", { class: "mono" }, m.lease?.address ?? b?.address ?? ""),
      el("td", {}, m.loader ?? ""),
      el("td", { class: `state ${b ? b.state : "none"}` }, b ? b.state : "no boot seen"),
      el("td", { class: "mono" }, b?.lastStep ?? ""),
      el("td", {}, fmtTime(b?.startedAt)),
      el("td", {}, b?.endedAt ? fmtSec(b.endedAt - b.startedAt) : b ? fmtSec(Date.now() - b.startedAt) : ""),
    );
    tr.addEventListener("click", () => select(m.mac));
    body.append(tr);
  }
  $("#counts").replaceChildren(
    el("span", {}, `${rows.length} machines`),
    el("span", { class: "state booting" }, `${counts.booting} booting`),
    el("span", { class: "state handed-off" }, `${counts["handed-off"]} handed off`),
    el("span", { class: "state stalled" }, `${counts.stalled} stalled`),
  );
}

async function renderSubnets() {
  const { subnets } = await api("/api/v1/subnets");
  $("#subnets").replaceChildren(
    ...subnets.map((s) =>
      el("span", { title: "bound / pool size" }, `${s.subnet}: ${s.bound}/${s.size} leased`),
    ),
  );
}

function stepRow(step, t0, span) {
  const end = step.at - t0;
  const start = step.kind === "file" ? Math.max(0, end - (step.ms ?? 0)) : end;
  const bar = el("div", {
    class: `wf-bar ${step.kind === "dhcp" ? "dhcp" : step.protocol === "http" ? "http" : ""} ${step.kind === "file" && step.outcome !== "ok" ? "fail" : ""}`,
  });
  // CSSOM, not a style attribute: the page's CSP allows no inline styles.
  bar.style.left = `${(100 * start) / span}%`;
  if (step.kind === "file") bar.style.width = `${Math.max(0.3, (100 * (end - start)) / span)}%`;
  const label =
    step.kind === "dhcp"
      ? `DHCP ${step.label}${step.client === "ipxe" ? " (iPXE)" : step.client === "os" ? " (OS)" : ""}`
      : `${step.protocol?.toUpperCase() ?? ""} ${step.label}`;
  const meta =
    step.kind === "file"
      ? `${step.outcome === "ok" ? "" : `${step.outcome} `}${fmtBytes(step.bytes ?? 0)} · ${step.ms} ms${step.blksize ? ` · ${step.blksize}/${step.windowsize}` : ""}${step.retransmits ? ` · ${step.retransmits} rexmit` : ""}`
      : `${fmtSec(end)}${step.ip ? ` · ${step.ip}` : ""}`;
  return el(
    "div",
    { class: "wf-row", "data-role": step.role ?? step.kind },
    el("div", { class: "wf-label mono", title: step.bootFile ?? step.label }, label),
    el("div", { class: "wf-track" }, bar),
    el("div", { class: "wf-meta" }, meta),
  );
}

function renderSession(s) {
  $("#detail-title").textContent =
    `${s.machine ?? s.mac} · boot ${s.id} · ${s.state}${s.endedAt ? ` after ${fmtSec(s.endedAt - s.startedAt)}` : ""}`;
  const d = $("#diagnosis");
  d.className = s.state;
  d.textContent =
    s.state === "stalled"
      ? `Stalled: ${s.diagnosis}`
      : s.state === "handed-off"
        ? "Kernel and initrd delivered: handed off to the OS."
        : "Booting…";
  const t0 = s.startedAt;
  const span = Math.max(1000, ...s.steps.map((st) => st.at - t0));
  const wf = $("#waterfall");
  wf.replaceChildren(
    el(
      "div",
      { class: "wf-axis" },
      el("div", {}, "step"),
      el("div", {}, el("span", {}, "0 s"), el("span", {}, fmtSec(span))),
      el("div", {}, ""),
    ),
    ...s.steps.map((st) => stepRow(st, t0, span)),
  );
  if (s.droppedSteps) wf.append(el("div", { class: "wf-meta" }, `${s.droppedSteps} more steps not kept`));
}

async function select(mac, sessionId = null) {
  selected = mac;
  selectedSession = sessionId;
  renderMachines();
  const { boots } = await api(`/api/v1/machines/${encodeURIComponent(mac)}/boots`);
  $("#detail").hidden = false;
  const shown = boots.find((b) => b.id === sessionId) ?? boots[0];
  if (!shown) {
    $("#detail-title").textContent = `${machines.get(mac)?.name ?? mac}: no boot seen yet`;
    $("#diagnosis").textContent = "";
    $("#waterfall").replaceChildren();
  } else renderSession(shown);
  $("#history").replaceChildren(
    ...boots.map((b) => {
      const li = el("li", {}, `${fmtTime(b.startedAt)} · ${b.state}${b.diagnosis ? `: ${b.diagnosis}` : ""}`);
      li.addEventListener("click", () => select(mac, b.id));
      return li;
    }),
  );
}

function onSession(s) {
  const m = machines.get(s.mac) ?? { mac: s.mac, name: s.machine, inInventory: false };
  m.lastBoot = s.summary; // the server's own summary (src/admin/views.ts), not derived again here
  machines.set(s.mac, m);
  renderMachines();
  if (selected === s.mac && (selectedSession === null || selectedSession === s.id)) renderSession(s);
}

async function load() {
  const { machines: list } = await api("/api/v1/machines");
  machines.clear();
  for (const m of list) machines.set(m.mac, m);
  renderMachines();
  await renderSubnets();
  if (!selected && list.length > 0) await select(list[0].mac);
}

// Leases and new machines change without a session event: the list is read again now and then.
async function refresh() {
  const { machines: list } = await api("/api/v1/machines");
  for (const m of list) machines.set(m.mac, { ...machines.get(m.mac), ...m });
  renderMachines();
  await renderSubnets();
}

function connect() {
  const es = new EventSource("/api/v1/events");
  es.addEventListener("open", () => {
    $("#live").textContent = "● live";
    $("#live").className = "on";
  });
  es.addEventListener("session", (ev) => onSession(JSON.parse(ev.data)));
  es.addEventListener("error", () => {
    $("#live").textContent = "○ reconnecting";
    $("#live").className = "";
  });
}

load().then(connect, (err) => {
  $("#counts").textContent = String(err);
});
setInterval(() => {
  refresh().catch(() => {});
}, 5000);
