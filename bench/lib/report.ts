/** Markdown tables for benchmark results. */
export function markdownTable(header: string[], rows: (string | number)[][]): string {
  const line = (cells: (string | number)[]) => `| ${cells.map(String).join(" | ")} |`;
  return [line(header), line(header.map(() => "---")), ...rows.map(line)].join("\n");
}

export function mib(bytes: number | undefined): string {
  return bytes === undefined ? "n/a" : (bytes / 1024 / 1024).toFixed(1);
}

export function ratio(a: number | undefined, b: number | undefined): string {
  if (!a || !b) return "n/a";
  return `${(a / b).toFixed(2)}x`;
}

/** The median: for an even count, the mean of the middle two (not the lower one, which biases toward the best run). */
export function median(values: readonly number[]): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2
    ? (sorted[mid] as number)
    : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}
