import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { commandsAvailable } from "../support/require.js";

const run = promisify(execFile);
const UNIT = join(import.meta.dirname, "../../systemd/netboot-appliance.service");

describe.skipIf(!commandsAvailable("systemd-analyze"))("systemd unit", () => {
  it("passes systemd-analyze verify", async () => {
    const { stdout, stderr } = await run("systemd-analyze", ["verify", UNIT]);
    expect(`${stdout}${stderr}`.trim()).toBe("");
  });

  it("keeps its systemd-analyze security exposure low", async () => {
    const { stdout } = await run("systemd-analyze", ["security", "--offline=yes", "--no-pager", UNIT]);
    const score = Number(/Overall exposure level for .*: ([\d.]+)/.exec(stdout)?.[1]);
    console.log(`systemd-analyze security: exposure ${score}`);
    expect(score).toBeLessThanOrEqual(2.5);
  });
});
