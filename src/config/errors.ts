/** One thing wrong with a config file, precise enough for a person to fix it without reading code. */
export interface ConfigIssue {
  file: string;
  /** 1-based line, where the YAML parser knows it. */
  line?: number;
  /** Dotted field path, e.g. `dhcp.subnets[0].range.start`. */
  field: string;
  message: string;
}

export function formatIssue(issue: ConfigIssue): string {
  const where = issue.line === undefined ? issue.file : `${issue.file}:${issue.line}`;
  return issue.field ? `${where} ${issue.field}: ${issue.message}` : `${where}: ${issue.message}`;
}

/** Thrown by the loader; the CLI prints each issue and exits 2. */
export class ConfigError extends Error {
  constructor(readonly issues: ConfigIssue[]) {
    super(issues.map(formatIssue).join("\n"));
    this.name = "ConfigError";
  }
}

export function fieldPath(path: readonly PropertyKey[]): string {
  let out = "";
  for (const key of path) {
    if (typeof key === "number") out += `[${key}]`;
    else out += out === "" ? String(key) : `.${String(key)}`;
  }
  return out;
}
