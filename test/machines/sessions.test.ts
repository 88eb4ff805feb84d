import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { diagnose } from "../../src/machines/diagnosis.js";
import type { DhcpEvent, FileEvent, FileRole } from "../../src/machines/events.js";
import { MachineRegistry } from "../../src/machines/registry.js";
import { SessionStore } from "../../src/machines/sessions.js";
import { MachineState } from "../../src/machines/state.js";

const MAC = "52:54:00:dd:00:01";
const dhcp = (
  at: number,
  message: string,
  outcome: string,
  client: DhcpEvent["client"] = "firmware",
): DhcpEvent => ({
  kind: "dhcp",
  at,
  mac: MAC,
  message,
  outcome,
  client,
  ip: "10.0.0.10",
  file: "x64/shimx64.efi",
});
const file = (
  at: number,
  name: string,
  outcome: FileEvent["outcome"] = "ok",
  extra: Partial<FileEvent> = {},
): FileEvent => ({
  kind: "file",
  at,
  protocol: "tftp",
  client: "10.0.0.10",
  file: name,
  bytes: 1000,
  ms: 10,
  outcome,
  ...extra,
});
const ROLES: Record<string, FileRole> = {
  "x64/shimx64.efi": "shim",
  "x64/grubx64.efi": "grub",
  "grub/grub.cfg": "grub-master",
  [`grub/${MAC}.conf`]: "grub-config",
  "images/a/kernel": "kernel",
  "images/a/initrd": "initrd",
};
const roleOf = (p: string) => ROLES[p] ?? "other";
const limits = { perMachine: 3, total: 100, stallAfterMs: 1000 };

function boot(store: SessionStore, t: number, upTo: number): void {
  store.dhcp(dhcp(t, "discover", "offer"), "m1");
  store.dhcp(dhcp(t + 1, "request", "ack"), "m1");
  Object.keys(ROLES)
    .slice(0, upTo)
    .forEach((name, i) => {
      store.file(MAC, file(t + 10 + i, name), roleOf(name));
    });
}

describe("boot sessions", () => {
  it("a whole chain ends handed off; the firmware starting over opens a new session", () => {
    const store = new SessionStore(limits);
    boot(store, 1000, 6);
    const [first] = store.sessionsOf(MAC);
    expect(first?.state).toBe("handed-off");
    expect(first?.endedAt).toBe(1015);
    expect(first?.steps.map((s) => s.role ?? s.kind)).toEqual(["dhcp", "dhcp", ...Object.values(ROLES)]);
    // The initramfs asking for an address adds to the handed-off session, it does not start one.
    store.dhcp(dhcp(1100, "discover", "offer", "os"), "m1");
    expect(store.sessionsOf(MAC)).toHaveLength(1);
    boot(store, 2000, 1);
    expect(store.sessionsOf(MAC)).toHaveLength(2);
    expect(store.current(MAC)?.state).toBe("booting");
  });

  it("DHCP retries before any file stay in one session", () => {
    const store = new SessionStore(limits);
    store.dhcp(dhcp(0, "discover", "offer"), "m1");
    store.dhcp(dhcp(4000, "discover", "offer"), "m1");
    expect(store.sessionsOf(MAC)).toHaveLength(1);
  });

  it("a silent boot stalls with the diagnosis of where it stopped, unless a transfer still runs", () => {
    const store = new SessionStore(limits);
    boot(store, 0, 1); // shim only
    store.busy(MAC, 1, 20);
    expect(store.sweep(5000)).toEqual([]); // a long transfer is not silence
    store.busy(MAC, -1, 5000);
    expect(store.sweep(5500)).toEqual([]);
    const [stalled] = store.sweep(6000);
    expect(stalled?.state).toBe("stalled");
    expect(stalled?.diagnosis).toMatch(/^shim was fetched but the next loader \(GRUB\) was never asked for/);
  });

  it("keeps the last sessions per machine and in all, and bounds the steps of one session", () => {
    const store = new SessionStore({ perMachine: 2, total: 3, stallAfterMs: 1000 });
    for (let i = 0; i < 4; i++) boot(store, i * 10_000, 6);
    expect(store.sessionsOf(MAC).map((s) => s.startedAt)).toEqual([20_000, 30_000]);
    const other = "52:54:00:dd:00:02";
    store.dhcp({ ...dhcp(40_000, "discover", "offer"), mac: other }, "m2");
    store.dhcp({ ...dhcp(50_000, "discover", "offer"), mac: "52:54:00:dd:00:03" }, "m3");
    expect(store.size).toBe(3);
    expect(store.sessionsOf(MAC).map((s) => s.startedAt)).toEqual([30_000]);
    for (let i = 0; i < 100; i++) store.file(other, file(40_001 + i, "x64/loop.efi", "not-found"), "other");
    expect(store.current(other)?.steps).toHaveLength(64);
    expect(store.current(other)?.droppedSteps).toBe(37);
  });
});

describe("diagnosis", () => {
  const f = (file: string, role: FileRole, outcome = "ok", retransmits?: number) => ({
    kind: "file" as const,
    file,
    role,
    outcome,
    retransmits,
  });
  const acked = [
    { kind: "dhcp" as const, outcome: "offer" },
    { kind: "dhcp" as const, outcome: "ack", bootFile: "x64/shimx64.efi" },
  ];
  it("names the step reached and the one that never came", () => {
    expect(diagnose([])).toBe("nothing was heard from the machine");
    expect(diagnose([{ kind: "dhcp", outcome: "offer" }])).toMatch(
      /offered an address but never requested it/,
    );
    expect(diagnose(acked)).toMatch(
      /^DHCP named the boot file x64\/shimx64\.efi, but the firmware never asked for it/,
    );
    expect(diagnose([...acked, f("x64/grubx64.efi", "grub")])).toMatch(
      /^GRUB was loaded but never asked for its config/,
    );
    expect(diagnose([...acked, f("grub/grub.cfg", "grub-master")])).toMatch(
      /never asked for the machine's own/,
    );
    expect(diagnose([...acked, f("c", "grub-config")])).toMatch(
      /config was served, but the kernel was never asked for/,
    );
    expect(diagnose([...acked, f("k", "kernel")])).toMatch(
      /kernel was delivered but the initrd was never asked for/,
    );
    expect(diagnose([...acked, f("x64/ipxe.efi", "ipxe")])).toMatch(
      /^iPXE was loaded but never asked for its script/,
    );
  });
  it("a transfer that timed out, or a missing chain file, is the cause; a missing probe only a detail", () => {
    expect(diagnose([...acked, f("images/a/initrd", "initrd", "timeout", 5)])).toBe(
      "the transfer of images/a/initrd timed out after 5 retransmits, and nothing came after it",
    );
    expect(diagnose([...acked, f("images/a/kernel", "kernel", "not-found")])).toBe(
      "the client asked for images/a/kernel, which does not exist, and asked for nothing after it",
    );
    expect(
      diagnose([...acked, f("x64/shimx64.efi", "shim"), f("x64/revocations_sku.efi", "other", "not-found")]),
    ).toMatch(
      /^shim was fetched but .*; its last request was for x64\/revocations_sku\.efi, which does not exist$/,
    );
  });
});

describe("machine state", () => {
  const make = (stateDir: string) =>
    new MachineState({
      registry: new MachineRegistry({ role: "off" }),
      nameOf: () => "m1",
      roleOf,
      stateDir,
      limits,
      logger: pino({ level: "silent" }),
    });

  it("finds the machine of a file by the address DHCP gave it, and persists sessions across a restart", async () => {
    const dir = mkdtempSync(join(tmpdir(), "nbms-"));
    const state = make(dir);
    await state.start();
    state.record(dhcp(0, "discover", "offer"));
    state.record(dhcp(1, "request", "ack"));
    state.record(file(10, "x64/shimx64.efi"));
    state.record({ ...file(11, "x64/shimx64.efi"), client: "10.9.9.9" }); // nobody's address: not recorded
    expect(state.sessions.current(MAC)?.steps.filter((s) => s.kind === "file")).toHaveLength(1);
    await state.stop();
    const saved = JSON.parse(readFileSync(join(dir, "boot-sessions.json"), "utf8"));
    expect(saved.sessions).toHaveLength(1);

    const again = make(dir);
    await again.start();
    expect(again.sessions.current(MAC)?.steps).toHaveLength(3);
    again.record(dhcp(100, "discover", "offer"));
    expect(again.sessions.sessionsOf(MAC).map((s) => s.id)).toEqual([
      `${MAC.replaceAll(":", "")}-1`,
      `${MAC.replaceAll(":", "")}-2`,
    ]);
    await again.stop();
  });

  it("a torn or foreign sessions file starts empty, with a warning, and is replaced", async () => {
    const dir = mkdtempSync(join(tmpdir(), "nbms-"));
    writeFileSync(join(dir, "boot-sessions.json"), '{"sessions": [{"id": 1}, ');
    const state = make(dir);
    await state.start();
    expect(state.sessions.size).toBe(0);
    state.record(dhcp(0, "discover", "offer"));
    await state.stop();
    expect(JSON.parse(readFileSync(join(dir, "boot-sessions.json"), "utf8")).sessions).toHaveLength(1);
  });
});
