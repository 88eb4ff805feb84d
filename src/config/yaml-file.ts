import { readFileSync } from "node:fs";
import { type Document, isMap, isScalar, LineCounter, parseDocument } from "yaml";
import type { z } from "zod";
import { ConfigError, type ConfigIssue, fieldPath } from "./errors.js";

/** A parsed YAML file that can say on which line a field stands. */
export class YamlSource {
  private constructor(
    readonly file: string,
    private readonly doc: Document,
    private readonly lines: LineCounter,
    /** The document as plain data, built once (building it can fail: see parse). */
    readonly data: unknown,
  ) {}

  static read(file: string): YamlSource {
    let text: string;
    try {
      text = readFileSync(file, "utf8");
    } catch (err) {
      throw new ConfigError([
        { file, field: "", message: `cannot read: ${(err as NodeJS.ErrnoException).code ?? err}` },
      ]);
    }
    return YamlSource.parse(file, text);
  }

  static parse(file: string, text: string): YamlSource {
    const lines = new LineCounter();
    const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
    const issues: ConfigIssue[] = doc.errors.map((e) => ({
      file,
      line: e.linePos?.[0]?.line ?? lines.linePos(e.pos[0]).line,
      field: "",
      message: e.message.split("\n", 1)[0] ?? e.message,
    }));
    if (issues.length > 0) throw new ConfigError(issues);
    // A document can parse and still not become data: an alias to an anchor that is not set, or more
    // alias expansions than the limit (a "billion laughs" file). Both are the file's fault, said as such.
    let data: unknown;
    try {
      data = doc.toJS({ maxAliasCount: 100 }) ?? {};
    } catch (err) {
      throw new ConfigError([
        { file, line: 1, field: "", message: `invalid YAML: ${(err as Error).message}` },
      ]);
    }
    return new YamlSource(file, doc, lines, data);
  }

  /** Line of the deepest node on the path that exists (a missing field points at its parent). */
  lineOf(path: readonly PropertyKey[]): number | undefined {
    for (let depth = path.length; depth >= 0; depth--) {
      const node = this.doc.getIn(path.slice(0, depth) as unknown[], true) as {
        range?: [number, number, number];
      };
      if (node && typeof node === "object" && node.range) return this.lines.linePos(node.range[0]).line;
    }
    return undefined;
  }

  /** Line of a key inside a mapping, for "unknown key" errors. */
  lineOfKey(parent: readonly PropertyKey[], key: string): number | undefined {
    const node = parent.length === 0 ? this.doc.contents : this.doc.getIn(parent as unknown[], true);
    if (isMap(node)) {
      for (const pair of node.items) {
        if (isScalar(pair.key) && pair.key.value === key && pair.key.range) {
          return this.lines.linePos(pair.key.range[0]).line;
        }
      }
    }
    return this.lineOf(parent);
  }

  issue(path: readonly PropertyKey[], message: string): ConfigIssue {
    return { file: this.file, line: this.lineOf(path), field: fieldPath(path), message };
  }
}

function valueAt(data: unknown, path: readonly PropertyKey[]): unknown {
  let v = data;
  for (const k of path) {
    if (v === null || typeof v !== "object") return undefined;
    v = (v as Record<PropertyKey, unknown>)[k];
  }
  return v;
}

/** zod's issues, turned into file:line field: reason, naming the offending value where that helps. */
export function zodIssues(source: YamlSource, error: z.ZodError, data: unknown = source.data): ConfigIssue[] {
  const out: ConfigIssue[] = [];
  for (const issue of error.issues) {
    const path = issue.path as PropertyKey[];
    if (issue.code === "unrecognized_keys") {
      for (const key of issue.keys) {
        out.push({
          file: source.file,
          line: source.lineOfKey(path, key),
          field: fieldPath([...path, key]),
          message: "unknown key (a typo?)",
        });
      }
      continue;
    }
    const value = valueAt(data, path);
    let message = issue.message;
    if (issue.code === "invalid_type") {
      message =
        value === undefined
          ? `is required (${issue.expected})`
          : `expected ${issue.expected}, got ${JSON.stringify(value)}`;
    } else if (issue.code === "invalid_value" && "values" in issue) {
      message = `${JSON.stringify(value)} is not one of ${issue.values.map((v) => JSON.stringify(v)).join(", ")}`;
    }
    out.push(source.issue(path, message));
  }
  return out;
}

/** Reads and validates one YAML file against a schema; throws ConfigError listing every problem. */
export function parseWith<S extends z.ZodType>(
  source: YamlSource,
  schema: S,
  data: unknown = source.data,
): z.output<S> {
  const result = schema.safeParse(data);
  if (!result.success) throw new ConfigError(zodIssues(source, result.error, data));
  return result.data;
}
