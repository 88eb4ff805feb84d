/**
 * Property-based fuzzing with fast-check: each target runs NETBOOT_FUZZ_RUNS cases (10^4 by default, as
 * in CI; `npm run soak` sets 10^6), shrinks any failure to a small counterexample, and records what it
 * tried in test-results/fuzz/<target>.json for the campaign's table.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import fc from "fast-check";

export const FUZZ_RUNS = Number(process.env.NETBOOT_FUZZ_RUNS ?? 10_000);
const outDir = join(import.meta.dirname, "..", "..", "test-results", "fuzz");

export interface FuzzRecord {
  target: string;
  runs: number;
  failures: number;
  ms: number;
  seed: number;
  counterexample?: string;
}

/** Runs the property; writes its record; throws with the shrunk counterexample when it fails. */
export async function fuzz<T>(
  target: string,
  property: fc.IAsyncPropertyWithHooks<T> | fc.IPropertyWithHooks<T>,
  runs = FUZZ_RUNS,
): Promise<FuzzRecord> {
  const started = performance.now();
  const details = await fc.check(property as fc.IAsyncProperty<T>, { numRuns: runs });
  const record: FuzzRecord = {
    target,
    runs: details.numRuns,
    failures: details.failed ? 1 : 0,
    ms: Math.round(performance.now() - started),
    seed: details.seed,
    ...(details.failed
      ? {
          counterexample: `${fc.stringify(details.counterexample)}: ${String(details.errorInstance)}`.slice(
            0,
            2000,
          ),
        }
      : {}),
  };
  mkdirSync(outDir, { recursive: true });
  writeFileSync(join(outDir, `${target}.json`), `${JSON.stringify(record)}\n`);
  if (details.failed)
    throw new Error(`fuzz target ${target} failed after ${details.numRuns} runs: ${record.counterexample}`);
  return record;
}

/** Test timeout for a fuzz target whose one case takes about `msPerCase`. */
export function fuzzTimeout(msPerCase: number): number {
  return Math.max(60_000, FUZZ_RUNS * msPerCase * 3);
}
