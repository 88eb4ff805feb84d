import { expect, test } from "vitest";
import { tftpConfigSchema, tftpServerOptionsFromConfig } from "../../src/tftp/config.js";

test("tftp config: defaults filled in, snake_case keys, unknown keys and bad values refused", () => {
  const c = tftpConfigSchema.parse({ root: "/srv/tftp" });
  expect(c).toEqual({
    root: "/srv/tftp",
    address: "0.0.0.0",
    port: 69,
    max_blksize: 1468,
    max_windowsize: 64,
    timeout_ms: 1000,
    retries: 8,
    max_transfers: 500,
  });
  expect(tftpServerOptionsFromConfig(c)).toMatchObject({
    root: "/srv/tftp",
    maxBlksize: 1468,
    maxWindowsize: 64,
    port: 69,
  });
  expect(tftpConfigSchema.safeParse({ root: "/x", max_blksize: 7 }).success).toBe(false);
  expect(tftpConfigSchema.safeParse({ root: "/x", max_blksize: 65465 }).success).toBe(false);
  expect(tftpConfigSchema.safeParse({ root: "/x", port: 70000 }).success).toBe(false);
  expect(tftpConfigSchema.safeParse({ root: "/x", address: "10.0.0.300" }).success).toBe(false);
  expect(tftpConfigSchema.safeParse({ root: "/x", maxBlksize: 1024 }).success).toBe(false);
  expect(tftpConfigSchema.safeParse({}).success).toBe(false);
  expect(tftpConfigSchema.parse({ root: "/x", address: "::1", max_windowsize: 4 }).max_windowsize).toBe(4);
});
