import { expect, test } from "vitest";
import { pumpThreadsFor } from "../../src/tftp/channel.js";
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
    pump_threads: "auto",
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
  expect(tftpConfigSchema.parse({ root: "/x", pump_threads: 0 }).pump_threads).toBe(0);
  expect(tftpConfigSchema.safeParse({ root: "/x", pump_threads: 65 }).success).toBe(false);
  expect(tftpConfigSchema.safeParse({ root: "/x", pump_threads: "many" }).error?.issues[0]?.message).toBe(
    'must be "auto" or an integer 0..64',
  );
});

test("pump threads: auto is the cores this process may use (none on 1 or 2, else one per core but one); the environment overrides, and is checked", () => {
  expect(pumpThreadsFor("auto", {}, 1)).toBe(0);
  expect(pumpThreadsFor("auto", {}, 2)).toBe(0);
  expect(pumpThreadsFor("auto", {}, 8)).toBe(7);
  expect(pumpThreadsFor("auto", {}, 128)).toBe(64);
  expect(pumpThreadsFor(3, {})).toBe(3);
  expect(pumpThreadsFor(3, { NETBOOT_TFTP_PUMP_THREADS: "0" })).toBe(0);
  expect(pumpThreadsFor(0, { NETBOOT_TFTP_PUMP_THREADS: "auto" }, 4)).toBe(3);
  expect(() => pumpThreadsFor("auto", { NETBOOT_TFTP_PUMP_THREADS: "two" })).toThrow(
    /NETBOOT_TFTP_PUMP_THREADS: two/,
  );
});
