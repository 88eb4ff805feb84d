/**
 * The operator page in a real browser (Debian's chromium, driven by playwright-core; no browser download)
 * while a real VM boots through the appliance: without the token the page answers 401; after signing in it
 * lists the VM, and the VM's timeline fills in live (server-sent events, no reload) with the boot's steps
 * and their durations. A screenshot is kept under test-results/.
 */
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { afterAll, describe, expect, it } from "vitest";
import { applianceServer } from "../../qemu/appliance-server.js";
import { runBoot } from "../../qemu/lab.js";
import { ensureLabArtefacts, labLeftovers, labLoaderRoot, labToolsAvailable } from "../support/lab.js";
import { resourceAvailable } from "../support/require.js";

const CHROMIUM = "/usr/bin/chromium";
const IMAGE = "debian12-x64-initramfs";
const MAC = "52:54:00:6e:62:01";
const outDir = join(import.meta.dirname, "..", "..", "test-results");
const ready =
  labToolsAvailable("x64") &&
  resourceAvailable("Debian's chromium (package chromium)", existsSync(CHROMIUM)) &&
  ensureLabArtefacts(IMAGE, "x64");

describe.skipIf(!ready)("operator page during a lab boot", () => {
  const dir = mkdtempSync(join(tmpdir(), "nbpage-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("asks for the token, then shows the booting VM and its timeline, live", async () => {
    let watching: Promise<string[]> | undefined;
    const r = await runBoot({
      arch: "x64",
      image: IMAGE,
      loaderRoot: labLoaderRoot(),
      timeLimitMs: 540_000,
      server: applianceServer({
        onAdmin: (admin) => {
          watching = watch(admin);
          watching.catch(() => undefined); // awaited below, once the boot is over
        },
      }),
    });
    const seen = await watching;
    expect(r.ok).toBe(true);
    expect(seen).toContain("handed-off");
    expect(await labLeftovers(r.resources)).toEqual([]);
  }, 900_000);

  /** Drives the page from inside the lab namespace (where the management listener is). */
  async function watch(admin: { url: string; token: string; ns: string }): Promise<string[]> {
    // The browser runs in the lab's namespace: the management address is reachable only there.
    const wrapper = join(dir, "chromium-in-lab.sh");
    writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec ${admin.ns} ${CHROMIUM} "$@"\n`);
    chmodSync(wrapper, 0o755);
    const browser = await chromium.launch({
      executablePath: wrapper,
      headless: true,
      args: [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
    });
    try {
      const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
      const denied = await page.goto(`${admin.url}/`);
      expect(denied?.status()).toBe(401);
      // From the page itself (page.request would run outside the lab namespace).
      const apiStatus = await page.evaluate(async () => (await fetch("/api/v1/machines")).status);
      expect(apiStatus).toBe(401);

      await page.fill('input[name="token"]', admin.token);
      await Promise.all([page.waitForURL(`${admin.url}/`), page.click('button[type="submit"]')]);
      const row = page.locator(`#machines tr[data-mac="${MAC}"]`);
      await row.waitFor({ timeout: 120_000 });
      await row.click();
      await page.locator("#live.on").waitFor({ timeout: 30_000 });

      // Live: the timeline grows while the page stays open (no reload), up to the kernel and initrd.
      const rows = page.locator("#waterfall .wf-row");
      const first = await rows.count();
      const states: string[] = [];
      await page.locator('#waterfall .wf-row[data-role="initrd"]').waitFor({ timeout: 240_000 });
      await page.locator(`#machines tr[data-mac="${MAC}"] td.state.handed-off`).waitFor({ timeout: 60_000 });
      states.push((await row.locator("td.state").textContent()) ?? "");
      expect(await rows.count()).toBeGreaterThan(first);
      for (const role of ["dhcp", "shim", "grub", "grub-master", "grub-config", "kernel", "initrd"])
        expect(await page.locator(`#waterfall .wf-row[data-role="${role}"]`).count(), role).toBeGreaterThan(
          0,
        );
      expect(await page.locator('#waterfall .wf-row[data-role="kernel"] .wf-meta').textContent()).toMatch(
        /\d+(\.\d)? MB · \d+ ms/,
      );
      expect(await page.locator("#diagnosis").textContent()).toContain("handed off");
      mkdirSync(outDir, { recursive: true });
      await page.screenshot({ path: join(outDir, "operator-page.png"), fullPage: true });
      return states;
    } finally {
      await browser.close();
    }
  }
});
