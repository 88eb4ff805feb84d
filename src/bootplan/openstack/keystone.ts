import type { Logger } from "pino";
import { registerSecret } from "../../log.js";
import type { CinderConfig } from "../config.js";
import {
  errorMessage,
  type HttpResponse,
  OpenStackAnswerError,
  OpenStackHttpError,
  requestJson,
} from "./http.js";

/**
 * Keystone v3 session: password or application-credential authentication, the token cached until
 * shortly before `expires_at`, endpoints from the token's service catalog, and one re-authentication
 * when a service answers 401.
 */

interface CatalogEndpoint {
  interface?: string;
  region?: string;
  region_id?: string;
  url?: string;
}
interface CatalogService {
  type?: string;
  endpoints?: CatalogEndpoint[];
}

interface Token {
  value: string;
  expiresAt: number;
  catalog: CatalogService[];
  projectId: string | undefined;
}

/** Cinder's catalog type and its historical aliases, in the order keystoneauth prefers them. */
export const BLOCK_STORAGE_TYPES = ["block-storage", "volumev3", "volumev2", "volume"];
export const IMAGE_TYPES = ["image"];
export const BAREMETAL_TYPES = ["baremetal"];

/** Refresh this long before the token's expiry, so a request never carries a token about to lapse. */
const EXPIRY_MARGIN_MS = 60_000;

export class KeystoneSession {
  private token: Token | undefined;
  private pending: Promise<Token> | undefined;

  constructor(
    private readonly config: CinderConfig,
    private readonly logger: Logger,
    private readonly now: () => number = Date.now,
  ) {}

  private authBody(): unknown {
    const auth = this.config.auth;
    if (auth.type === "application_credential") {
      // Application credentials carry their own project: no scope may be given.
      return {
        auth: {
          identity: {
            methods: ["application_credential"],
            application_credential: { id: auth.id, secret: auth.secret },
          },
        },
      };
    }
    return {
      auth: {
        identity: {
          methods: ["password"],
          password: {
            user: { name: auth.username, domain: { name: auth.user_domain_name }, password: auth.password },
          },
        },
        scope: { project: { name: auth.project_name, domain: { name: auth.project_domain_name } } },
      },
    };
  }

  private async authenticate(): Promise<Token> {
    const url = `${this.config.auth_url.replace(/\/+$/, "").replace(/\/v3$/, "")}/v3/auth/tokens`;
    const res = await requestJson({
      method: "POST",
      url,
      json: this.authBody(),
      timeoutMs: this.config.timeout_ms,
      retries: this.config.retries,
    });
    if (res.status !== 201) {
      throw new OpenStackHttpError(
        `Keystone authentication failed: HTTP ${res.status} ${errorMessage(res.body)}`.trim(),
        res.status,
      );
    }
    const subject = res.headers["x-subject-token"];
    const value = Array.isArray(subject) ? subject[0] : subject;
    const body = res.body as {
      token?: { expires_at?: string; catalog?: CatalogService[]; project?: { id?: string } };
    };
    const expiresAt = Date.parse(body.token?.expires_at ?? "");
    if (!value || Number.isNaN(expiresAt))
      throw new OpenStackAnswerError("Keystone answered 201 without X-Subject-Token or token.expires_at");
    registerSecret(value);
    this.logger.info(
      { expires_at: body.token?.expires_at, auth_type: this.config.auth.type },
      "keystone token issued",
    );
    return { value, expiresAt, catalog: body.token?.catalog ?? [], projectId: body.token?.project?.id };
  }

  /** A valid token, authenticating when there is none or it is about to expire. Concurrent callers share one request. */
  async getToken(): Promise<Token> {
    if (this.token && this.token.expiresAt - EXPIRY_MARGIN_MS > this.now()) return this.token;
    if (!this.pending) {
      this.pending = this.authenticate()
        .then((t) => {
          this.token = t;
          return t;
        })
        .finally(() => {
          this.pending = undefined;
        });
    }
    return this.pending;
  }

  invalidate(): void {
    this.token = undefined;
  }

  /** Endpoint URL for the first service type found, filtered by interface and region. */
  endpointFrom(token: Token, types: string[], override?: string): string {
    const substitute = (url: string) =>
      url
        .replace(/\/+$/, "")
        .replace(/\$\(project_id\)s|\$\(tenant_id\)s|\{project_id\}/g, token.projectId ?? "");
    if (override) return substitute(override);
    for (const type of types) {
      const service = token.catalog.find((s) => s.type === type);
      const endpoint = service?.endpoints?.find(
        (e) =>
          e.interface === this.config.interface &&
          (this.config.region === undefined ||
            e.region_id === this.config.region ||
            e.region === this.config.region),
      );
      if (endpoint?.url) return substitute(endpoint.url);
    }
    throw new Error(
      `no ${types.join("/")} endpoint with interface ${this.config.interface}${this.config.region ? ` in region ${this.config.region}` : ""} in the service catalog`,
    );
  }

  /**
   * Calls a service: `path` is appended to its endpoint. A 401 drops the token and retries once
   * with a fresh one (the token may have been revoked or expired early).
   */
  async call(
    types: string[],
    method: "GET" | "POST" | "PUT" | "DELETE",
    path: string,
    opts: {
      json?: unknown;
      headers?: Record<string, string>;
      override?: string | undefined;
      retries?: number;
    } = {},
  ): Promise<HttpResponse> {
    for (let attempt = 0; ; attempt++) {
      const token = await this.getToken();
      const base = this.endpointFrom(token, types, opts.override);
      const res = await requestJson({
        method,
        url: `${base}${path}`,
        headers: { "x-auth-token": token.value, ...opts.headers },
        json: opts.json,
        timeoutMs: this.config.timeout_ms,
        retries: opts.retries ?? this.config.retries,
      });
      if (res.status === 401 && attempt === 0) {
        this.logger.warn({ method, path }, "openstack answered 401: re-authenticating once");
        this.invalidate();
        continue;
      }
      return res;
    }
  }

  /** The URL a service call would use (for streaming downloads that bypass requestJson). */
  async endpoint(types: string[], override?: string): Promise<{ url: string; token: string }> {
    const token = await this.getToken();
    return { url: this.endpointFrom(token, types, override), token: token.value };
  }
}
