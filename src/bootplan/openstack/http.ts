import got, { type Method } from "got";

/** One JSON/HTTP exchange, with bounded time and retries; HTTP errors are returned, not thrown. */
export interface HttpResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: unknown;
}

export class OpenStackHttpError extends Error {
  constructor(
    message: string,
    readonly status: number | undefined,
  ) {
    super(message);
    this.name = "OpenStackHttpError";
  }
}

/**
 * An answer that arrived but cannot be used (too large, not the shape the API reference gives). Unlike a
 * transport error or a 5xx it is not retried and never justifies a last-known-good answer.
 */
export class OpenStackAnswerError extends Error {
  override name = "OpenStackAnswerError";
}

/** True for what a stale answer may cover: no answer, a timeout, a 5xx or 429. */
export function isTransientOpenStackError(err: unknown): boolean {
  if (!(err instanceof OpenStackHttpError)) return false;
  return err.status === undefined || err.status >= 500 || err.status === 429;
}

export interface RequestOptions {
  method: Method;
  url: string;
  headers?: Record<string, string>;
  json?: unknown;
  timeoutMs: number;
  /** Extra attempts after the first, for network errors, timeouts and 5xx/429. */
  retries: number;
  /** Largest body read; default MAX_RESPONSE_BYTES. */
  maxResponseBytes?: number;
}

const RETRY_STATUS = new Set([429, 500, 502, 503, 504]);

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Largest OpenStack JSON answer read (a big Keystone catalog is well under 1 MiB). */
export const MAX_RESPONSE_BYTES = 8 * 1024 * 1024;

/** One HTTP exchange read into memory, refusing a body over `maxBytes` (declared or actual). */
async function exchange(
  opts: RequestOptions,
  maxBytes: number,
): Promise<{ status: number; headers: HttpResponse["headers"]; text: string }> {
  const stream = got.stream(opts.url, {
    method: opts.method,
    headers: { accept: "application/json", ...opts.headers },
    ...(opts.json === undefined ? {} : { json: opts.json }),
    throwHttpErrors: false,
    retry: { limit: 0 },
    timeout: { request: opts.timeoutMs },
  });
  // got's request stream is writable for methods that may carry a body: without one, end it (DELETE).
  if (opts.json === undefined && opts.method !== "GET" && opts.method !== "HEAD") stream.end();
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let bytes = 0;
    let status = 0;
    let headers: HttpResponse["headers"] = {};
    // got wraps the error a stream is destroyed with, so the refusal is kept here to be reported as is.
    let refused: OpenStackAnswerError | undefined;
    const refuse = (n: number) => {
      refused = new OpenStackAnswerError(
        `${opts.method} ${opts.url}: answer of ${n}+ bytes is over the ${maxBytes}-byte limit`,
      );
      stream.destroy(refused);
    };
    stream.on("response", (res: { statusCode: number; headers: HttpResponse["headers"] }) => {
      status = res.statusCode;
      headers = res.headers;
      const declared = Number(res.headers["content-length"]);
      if (Number.isFinite(declared) && declared > maxBytes) refuse(declared);
    });
    stream.on("data", (chunk: Buffer) => {
      if (refused) return;
      bytes += chunk.length;
      if (bytes > maxBytes) refuse(bytes);
      else chunks.push(chunk);
    });
    stream.on("error", (err) => reject(refused ?? err));
    stream.on("end", () => resolve({ status, headers, text: Buffer.concat(chunks).toString("utf8") }));
  });
}

export async function requestJson(opts: RequestOptions): Promise<HttpResponse> {
  let lastError: unknown;
  for (let attempt = 0; attempt <= opts.retries; attempt++) {
    if (attempt > 0) await sleep(Math.min(100 * 2 ** attempt, 1000));
    try {
      const res = await exchange(opts, opts.maxResponseBytes ?? MAX_RESPONSE_BYTES);
      let body: unknown;
      if (res.text.length > 0) {
        try {
          body = JSON.parse(res.text);
        } catch {
          body = res.text;
        }
      }
      if (RETRY_STATUS.has(res.status) && attempt < opts.retries) {
        lastError = new OpenStackHttpError(`${opts.method} ${opts.url}: HTTP ${res.status}`, res.status);
        continue;
      }
      return { status: res.status, headers: res.headers, body };
    } catch (err) {
      if (err instanceof OpenStackAnswerError) throw err;
      lastError = err;
    }
  }
  const reason = lastError instanceof Error ? lastError.message : String(lastError);
  throw new OpenStackHttpError(
    `${opts.method} ${opts.url}: ${reason}`,
    (lastError as OpenStackHttpError)?.status,
  );
}

/** The error text of an OpenStack error body ({"badRequest": {"message": ...}} and friends), or "". */
export function errorMessage(body: unknown): string {
  if (body === null || typeof body !== "object") return typeof body === "string" ? body.slice(0, 200) : "";
  for (const value of Object.values(body)) {
    if (value && typeof value === "object" && "message" in value)
      return String((value as { message: unknown }).message);
  }
  return "";
}
