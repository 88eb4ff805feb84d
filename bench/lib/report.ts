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
