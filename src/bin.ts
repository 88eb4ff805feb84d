#!/usr/bin/env node
import { main } from "./cli.js";

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`netboot: ${(err as Error).stack ?? err}\n`);
    process.exitCode = 1;
  },
);
