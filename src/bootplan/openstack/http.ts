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

export interface RequestOptions {
  method: Method;
  url: string;
  headers?: Record<string, string>;
  json?: unknown;
  timeoutMs: number;
  /** Extra attempts after the first, for network errors, timeouts and 5xx/429. */
  retries: number;
}

const RETRY_STATUS = new Set([429, 500, 502, 503, 504]);

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export async function requestJson(opts: RequestOptions): Promise<HttpResponse> {
  let lastError: unknown;
  for (let attempt = 0; attempt <= opts.retries; attempt++) {
    if (attempt > 0) await sleep(Math.min(100 * 2 ** attempt, 1000));
    try {
      const res = await got(opts.url, {
        method: opts.method,
        headers: { accept: "application/json", ...opts.headers },
        ...(opts.json === undefined ? {} : { json: opts.json }),
        throwHttpErrors: false,
        retry: { limit: 0 },
        timeout: { request: opts.timeoutMs },
        responseType: "text",
      });
      let body: unknown;
      if (res.body.length > 0) {
        try {
          body = JSON.parse(res.body);
        } catch {
          body = res.body;
        }
      }
      if (RETRY_STATUS.has(res.statusCode) && attempt < opts.retries) {
        lastError = new OpenStackHttpError(
          `${opts.method} ${opts.url}: HTTP ${res.statusCode}`,
          res.statusCode,
        );
        continue;
      }
      return { status: res.statusCode, headers: res.headers, body };
    } catch (err) {
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
