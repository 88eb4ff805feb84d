import { Writable } from "node:stream";
import { describe, expect, it } from "vitest";
import { createLogger, registerSecret } from "../../src/log.js";

function capture() {
  const lines: string[] = [];
  const destination = new Writable({
    write(chunk, _enc, cb) {
      lines.push(chunk.toString());
      cb();
    },
  });
  return { lines, logger: createLogger({ destination, level: "debug" }) };
}

describe("log redaction", () => {
  it("masks secret fields at every depth we log", () => {
    const { lines, logger } = capture();
    logger.info({ password: "p0-secret", chap: { password: "p1-secret" } }, "a");
    logger.info({ machine: { volume: { chap: { password: "p3-secret", in_password: "p4-secret" } } } }, "b");
    logger.info(
      { req: { headers: { "x-auth-token": "tok-secret", "x-subject-token": "subj-secret" } } },
      "c",
    );
    logger.info({ data: { auth_password: "cinder-secret", auth_method: "CHAP" } }, "d");
    const all = lines.join("");
    for (const s of [
      "p0-secret",
      "p1-secret",
      "p3-secret",
      "p4-secret",
      "tok-secret",
      "subj-secret",
      "cinder-secret",
    ]) {
      expect(all).not.toContain(s);
    }
    expect(all).toContain("CHAP");
    expect(all.match(/\[REDACTED\]/g)?.length).toBe(7);
  });

  it("masks registered secrets and command-line credentials inside messages", () => {
    const { lines, logger } = capture();
    registerSecret("Registered-Secret-42");
    logger.warn(`login failed for user with Registered-Secret-42`);
    logger.info(
      { cmdline: "iscsi_username=u iscsi_password=hunter2xx iscsi_in_password=other2xx ip=dhcp" },
      "x",
    );
    logger.info({ cmdline: "netroot=iscsi:user:pa55word@10.0.0.1::3260:1:iqn.2024-01.x:y" }, "y");
    const all = lines.join("");
    expect(all).not.toMatch(/Registered-Secret-42|hunter2xx|other2xx|pa55word/);
    expect(all).toContain("iscsi_username=u");
    expect(all).toContain("@10.0.0.1::3260:1:iqn.2024-01.x:y");
  });
});
