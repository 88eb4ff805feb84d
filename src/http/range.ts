/** HTTP Range (RFC 9110 §14) for one range of bytes: a pure function of the header and the size. */

export type RangeDecision =
  /** No usable Range: send the whole file (a malformed or multi-range header may be ignored, §14.2). */
  | { kind: "whole" }
  | { kind: "partial"; start: number; end: number }
  /** 416, with `Content-Range: bytes *\/size`. */
  | { kind: "unsatisfiable" };

const DIGITS = /^\d{1,16}$/;

export function decideRange(header: string | undefined, size: number): RangeDecision {
  if (header === undefined) return { kind: "whole" };
  const m = /^\s*bytes\s*=\s*([^,]*)$/i.exec(header);
  if (!m) return { kind: "whole" }; // another unit, several ranges, or garbage: ignored
  const spec = (m[1] ?? "").trim();
  const dash = spec.indexOf("-");
  if (dash < 0) return { kind: "whole" };
  const first = spec.slice(0, dash).trim();
  const last = spec.slice(dash + 1).trim();
  if (first === "") {
    // Suffix: the last N bytes.
    if (!/^\d+$/.test(last)) return { kind: "whole" };
    const n = DIGITS.test(last) ? Number(last) : Number.POSITIVE_INFINITY;
    if (n === 0 || size === 0) return { kind: "unsatisfiable" };
    return { kind: "partial", start: Math.max(0, size - n), end: size - 1 };
  }
  if (!/^\d+$/.test(first) || (last !== "" && !/^\d+$/.test(last))) return { kind: "whole" };
  const start = DIGITS.test(first) ? Number(first) : Number.POSITIVE_INFINITY;
  if (start >= size) return { kind: "unsatisfiable" };
  const end = last === "" || !DIGITS.test(last) ? size - 1 : Math.min(Number(last), size - 1);
  if (end < start) return { kind: "whole" }; // an invalid range-spec: the header is ignored
  return { kind: "partial", start, end };
}
