/**
 * Who may use the API and the web page: a bearer token (`Authorization: Bearer …`), or the cookie the login
 * form sets. The cookie holds an HMAC of a fixed label keyed by the token, never the token itself.
 * Comparisons are constant-time. Pure, apart from reading the request's headers.
 */
import { createHmac, timingSafeEqual } from "node:crypto";
import type { IncomingMessage } from "node:http";

export const SESSION_COOKIE = "netboot_admin";

export type AuthDecision = { ok: true } | { ok: false; reason: string };

function same(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/** The cookie value that proves the token was given to the login form. */
export function sessionValue(token: string): string {
  return createHmac("sha256", token).update("netboot-admin-session-v1").digest("base64url");
}

function cookie(req: IncomingMessage, name: string): string | undefined {
  for (const part of (req.headers.cookie ?? "").split(";")) {
    const eq = part.indexOf("=");
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

export function authorize(req: IncomingMessage, token: string | undefined): AuthDecision {
  if (token === undefined) return { ok: false, reason: "no admin token configured (admin.token)" };
  const header = req.headers.authorization;
  if (header !== undefined) {
    const m = /^Bearer\s+(\S+)$/i.exec(header);
    if (!m) return { ok: false, reason: "Authorization is not a bearer token" };
    return same(m[1] ?? "", token) ? { ok: true } : { ok: false, reason: "wrong bearer token" };
  }
  const c = cookie(req, SESSION_COOKIE);
  if (c !== undefined)
    return same(c, sessionValue(token)) ? { ok: true } : { ok: false, reason: "stale session cookie" };
  return { ok: false, reason: "no bearer token" };
}

/** Checks a token typed into the login form. */
export function tokenMatches(given: string, token: string | undefined): boolean {
  return token !== undefined && same(given, token);
}
