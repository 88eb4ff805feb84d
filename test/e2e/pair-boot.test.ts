/**
 * Issue 16, test 3: OVMF PXE-boots through an HA pair (two `netboot serve`, leases on a real PostgreSQL).
 * The appliance that answered the VM's DHCP is killed (-9) once it has served the master grub.cfg, before
 * GRUB asks for the machine's own config (GRUB asks 3 ms later, so the dying appliance's namespace also drops
 * that request from its ACK on: the order is certain, not a race). GRUB falls back to the peer named in the master config; the
 * survivor serves the config, kernel and initrd (the lease is in the shared database), answers the
 * initramfs's DHCP after the failover, and the VM reaches its iSCSI root.
 */
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runBoot } from "../../qemu/lab.js";
import { listLabNamespaces } from "../../qemu/netns.js";
import { appliancePairServer, type PairReport } from "../../qemu/pair-server.js";
import { formatTimeline } from "../../qemu/timeline.js";
import { ensureLabArtefacts, labLeftovers, labLoaderRoot, labToolsAvailable } from "../support/lab.js";
import { postgresAvailable, TestPostgres } from "../support/postgres.js";

const IMAGE = "debian12-x64-initramfs";
const MAC = "52:54:00:6e:62:01";
const MACHINE_CONFIG = `grub/${MAC}.conf`;
const ready = labToolsAvailable("x64") && postgresAvailable() && ensureLabArtefacts(IMAGE, "x64");

type Row = { file?: string; outcome?: string; mac?: string; message?: string; client?: string };
const rows = (report: PairReport, side: "a" | "b", kind: "tftp" | "dhcp"): Row[] =>
  report.items[side].filter((i) => i.kind === kind).map((i) => i.row as Row);

describe.skipIf(!ready)("a VM boots through an HA pair while the appliance that answered it dies", () => {
  let pg: TestPostgres;
  beforeAll(() => {
    pg = new TestPostgres();
    pg.init();
  }, 120_000);
  afterAll(() => pg?.stop("immediate"));

  it("gets its config, kernel and initrd from the survivor and reaches its iSCSI root", async () => {
    let report: PairReport | undefined;
    const r = await runBoot({
      arch: "x64",
      image: IMAGE,
      mac: MAC,
      loaderRoot: labLoaderRoot(),
      outDir: join(import.meta.dirname, "..", "..", "test-results", "e2e", "pair"),
      timeLimitMs: 540_000,
      server: appliancePairServer({
        databaseUrl: pg.url,
        failoverMs: 2000,
        strike: { afterFile: "grub/grub.cfg", neverFrom: MACHINE_CONFIG },
        onStopped: (rep) => {
          report = rep;
        },
      }),
    });
    console.log(`pair boot\n${formatTimeline(r.timeline)}`);
    console.log(`pair boot: ${(r.durationMs / 1000).toFixed(1)} s ${r.accel.toUpperCase()} ok=${r.ok}`);
    expect(report).toBeDefined();
    const rep = report as PairReport;
    const dead = rep.killed?.side;
    expect(dead, "the appliance that answered the VM was killed").toBe(rep.answered);
    expect(dead).toBeDefined();
    const survivor = dead === "a" ? "b" : "a";
    console.log(
      `pair boot: appliance ${dead} (${rep.addresses[dead as "a"]}) answered and was killed; ${survivor} (${rep.addresses[survivor]}) finished`,
    );

    // The dead one served the loaders and the master config, and never the machine's config.
    const deadFiles = rows(rep, dead as "a", "tftp");
    expect(deadFiles.some((f) => f.file === "grub/grub.cfg" && f.outcome === "ok")).toBe(true);
    expect(deadFiles.some((f) => f.file === MACHINE_CONFIG)).toBe(false);
    // The survivor served the machine's config, kernel and initrd to the VM's leased address.
    const served = rows(rep, survivor, "tftp").filter((f) => f.outcome === "ok");
    expect(served.map((f) => f.file)).toEqual(expect.arrayContaining([MACHINE_CONFIG]));
    expect(served.filter((f) => /kernel|vmlinuz|initrd/.test(f.file ?? "")).length).toBeGreaterThanOrEqual(2);
    for (const f of served) expect(f.client?.replace(/:\d+$/, "")).toBe("10.77.0.10");
    // The initramfs's DHCP came after the kill, so only the survivor could answer it.
    const lateAcks = rep.items[survivor].filter(
      (i) =>
        i.kind === "dhcp" && i.row.mac === MAC && i.row.message === "ack" && i.at > (rep.killed?.at ?? 0),
    );
    expect(lateAcks.length).toBeGreaterThanOrEqual(1);
    // The survivor shows the whole boot as one session, the steps its dead peer served included (the
    // boot events are shared through the database).
    const sessions = rep.sessions[survivor] ?? [];
    for (const s of sessions)
      console.log(
        `pair boot: survivor's session ${s.id} ${s.state}: ${s.steps.map((st) => `${st.label} ${st.outcome}`).join(" | ")}`,
      );
    const roles = sessions[0]?.steps
      .filter((st) => st.kind === "file" && st.outcome === "ok")
      .map((st) => st.role);
    // The dead peer's last event (grub.cfg) was served in the loop turn it was killed in, or the one before:
    // it may not have reached the database. Everything before it did.
    console.log(
      `pair boot: the dead peer's grub.cfg is in the survivor's session: ${roles?.includes("grub-master")}`,
    );
    expect(roles?.filter((role) => role !== "grub-master")).toEqual([
      "shim",
      "grub",
      "grub-config",
      "kernel",
      "initrd",
    ]);
    expect(sessions[0]?.state).toBe("handed-off");

    expect(r.timedOut).toBe(false);
    expect(r.ok).toBe(true);
    expect(r.targetSawLogin).toBe(true);
    expect(r.initiators).toContain(r.initiatorIqn);
    // The lease the survivor served from is the one row in the shared database.
    expect(pg.psql(`select count(*) from netboot_leases where mac = '${MAC}'`)).toBe("1");
    // Nothing left behind: the lab's namespace, the two appliances' namespaces, their processes.
    expect(await labLeftovers(r.resources)).toEqual([]);
    expect((await listLabNamespaces()).filter((n) => n.startsWith(r.resources.ns))).toEqual([]);
  }, 600_000);
});
