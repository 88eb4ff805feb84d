import pino, { type DestinationStream, type Logger } from "pino";

export type { Logger } from "pino";

/**
 * Field names that carry secrets anywhere in a log object. pino's redaction has no deep wildcard,
 * so each name is listed at every depth we log objects at.
 */
const SECRET_KEYS = [
  "password",
  "auth_password",
  "in_password",
  "iscsi_password",
  "iscsi_in_password",
  "secret",
  "token",
  "authorization",
  '["x-auth-token"]',
  '["x-subject-token"]',
];
const MAX_DEPTH = 5;

export const REDACT_PATHS: string[] = SECRET_KEYS.flatMap((key) => {
  const paths: string[] = [];
  for (let depth = 0; depth <= MAX_DEPTH; depth++) {
    const prefix = "*.".repeat(depth);
    paths.push(key.startsWith("[") ? `${prefix.slice(0, -1) || "*"}${key}` : `${prefix}${key}`);
  }
  return paths;
});

/** Secret values known at run time (CHAP passwords, Keystone credentials, tokens). */
const knownSecrets = new Set<string>();

/** Registers a secret value so that it is masked wherever it appears in a log line, even inside a message. */
export function registerSecret(value: string | undefined): void {
  if (value && value.length >= 4) knownSecrets.add(value);
}

// Secrets on a kernel command line or in a dracut netroot URL, in case a whole line is ever logged.
const CMDLINE_SECRET = /\b(iscsi_(?:in_)?password=)[^\s"\\]+/g;
const NETROOT_CREDENTIALS = /\b((?:net)?root=iscsi:)[^@\s"\\]*@/g;

/** Second line of defence after path redaction: scrubs the serialised line itself. */
export function scrubLine(line: string): string {
  let out = line.replace(CMDLINE_SECRET, "$1[REDACTED]").replace(NETROOT_CREDENTIALS, "$1[REDACTED]@");
  for (const secret of knownSecrets) {
    if (out.includes(secret)) out = out.split(secret).join("[REDACTED]");
    const escaped = JSON.stringify(secret).slice(1, -1);
    if (escaped !== secret && out.includes(escaped)) out = out.split(escaped).join("[REDACTED]");
  }
  return out;
}

export interface LoggerOptions {
  level?: string;
  /** Where lines go; default stdout. Tests pass a stream to read what was logged. */
  destination?: DestinationStream;
  /** Pretty output for a person at a terminal; JSON otherwise (journald). */
  pretty?: boolean;
}

export function createLogger(options: LoggerOptions = {}): Logger {
  const common = {
    level: options.level ?? "info",
    base: { service: "netboot-appliance" },
    redact: { paths: REDACT_PATHS, censor: "[REDACTED]" },
    hooks: { streamWrite: scrubLine },
  };
  if (options.destination) return pino(common, options.destination);
  if (options.pretty ?? process.stdout.isTTY) {
    return pino({
      ...common,
      transport: { target: "pino-pretty", options: { colorize: true, singleLine: true } },
    });
  }
  return pino(common, pino.destination({ fd: 1, sync: false }));
}
