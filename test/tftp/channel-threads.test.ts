/** The native channel's suite with its sockets owned by pump threads (native/nbdh_pool.h). */
import { expect, test } from "vitest";
import { nativeChannelAvailable, useNativePumpThreads } from "../../src/tftp/channel.js";
import { resourceAvailable } from "../support/require.js";
import { describeNativeChannel } from "./native-channel-suite.js";

const haveAddon = resourceAvailable(
  "native addon nbdh_udp (node native/build.mjs)",
  nativeChannelAvailable(),
);
// Before any channel opens: the first call decides for this process (each test file runs in its own).
const threads = haveAddon ? useNativePumpThreads(2) : 0;

test.skipIf(!haveAddon)("two pump threads start, and a later call cannot change them", () => {
  expect(threads).toBe(2);
  expect(useNativePumpThreads(0)).toBe(2);
});

describeNativeChannel("native channel, pump on its threads", haveAddon);
