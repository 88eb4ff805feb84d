import { createHash, randomBytes, randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { createIronicFake, type FakeIronic, type FakeIronicOptions } from "./ironic-fake.js";

/**
 * A local Keystone v3 + Cinder v3 + Glance v2 (+ Ironic v1, see ironic-fake.ts) server for tests and the QEMU lab, shaped as the
 * OpenStack API references give the calls the appliance makes (a real Cinder cannot run here: its
 * LVM driver needs device-mapper). Layout as devstack: /identity, /volume/v3/<project>, /image.
 *
 *   const os = await startOpenStackFake({ volumes: [{ id, connection: { target_portal: "10.0.0.1:3260",
 *     target_iqn: "iqn....", target_lun: 1 }, kernelFile, initrdFile }] });
 *   ... os.url (auth_url is `${os.url}/identity/v3`), os.calls, os.addFault(...), await os.close()
 */

export interface FakeConnection {
  driver_volume_type?: "iscsi" | "iser";
  target_portal: string;
  target_iqn: string;
  target_lun: number;
  target_portals?: string[];
  target_iqns?: string[];
  target_luns?: number[];
  auth_method?: "CHAP";
  auth_username?: string;
  auth_password?: string;
}

export interface FakeVolume {
  id: string;
  status?: string;
  multiattach?: boolean;
  connection: FakeConnection;
  /** Registered as Glance images and referenced by volume_image_metadata.kernel_id/ramdisk_id. */
  kernelFile?: string;
  initrdFile?: string;
  kernelData?: Buffer;
  initrdData?: Buffer;
}

export interface FakeImage {
  id: string;
  data: Buffer;
  os_hash_algo?: string;
  /** Override to serve a wrong checksum. */
  os_hash_value?: string;
  status?: string;
  /** Override the size the image record claims (a Glance that lies about it). */
  claimedSize?: number;
  /** Send the data in chunks with a pause between them (a slow but live Glance). */
  trickle?: { chunkBytes: number; delayMs: number };
}

export interface FakeFault {
  method?: string;
  /** Matched against the path (no query), e.g. /\/attachments$/ */
  path: RegExp;
  status?: number;
  delayMs?: number;
  /** How many matching requests it applies to (default: all). */
  times?: number;
  /** Drop the connection instead of answering. */
  reset?: boolean;
  /** Answer 200 with a JSON body of this many bytes, streamed (a hostile or broken endpoint). */
  hugeBodyBytes?: number;
}

export interface FakeOptions {
  volumes?: FakeVolume[];
  images?: FakeImage[];
  username?: string;
  password?: string;
  projectName?: string;
  domainName?: string;
  appCredential?: { id: string; secret: string };
  projectId?: string;
  region?: string;
  tokenTtlSeconds?: number;
  /** false: an old cloud without the attachments API (404 on /attachments). */
  attachmentsApi?: boolean;
  maxMicroversion?: string;
  /** Serve Ironic at /baremetal, with a `baremetal` catalog entry. */
  ironic?: FakeIronicOptions;
}

export interface FakeCall {
  method: string;
  path: string;
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: unknown;
}

export interface OpenStackFake {
  url: string;
  authUrl: string;
  projectId: string;
  calls: FakeCall[];
  addFault(fault: FakeFault): void;
  clearFaults(): void;
  /** Tokens issued so far stop working (as after a revocation or a Keystone restart). */
  expireTokens(): void;
  /** Every token issued so far. */
  issuedTokens(): string[];
  setVolume(volume: FakeVolume): void;
  setImage(image: FakeImage): void;
  /** Image ids registered for a volume's kernelFile/initrdFile. */
  imageIdsOf(volumeId: string): { kernelId?: string; ramdiskId?: string };
  attachments(): { id: string; volumeId: string; connector: unknown; status: string }[];
  /** The Ironic fake, when `ironic` was given. */
  ironic: FakeIronic | undefined;
  close(): Promise<void>;
}

function versionNumber(v: string): number {
  const [maj, min] = v.split(".").map(Number);
  return (maj ?? 0) * 1000 + (min ?? 0);
}

export async function startOpenStackFake(opts: FakeOptions = {}): Promise<OpenStackFake> {
  const username = opts.username ?? "netboot";
  const password = opts.password ?? "keystone-secret";
  const projectName = opts.projectName ?? "baremetal";
  const domainName = opts.domainName ?? "Default";
  const projectId = opts.projectId ?? randomBytes(16).toString("hex");
  const region = opts.region ?? "RegionOne";
  const ttl = opts.tokenTtlSeconds ?? 3600;
  const maxMicroversion = opts.maxMicroversion ?? "3.70";
  const attachmentsApi = opts.attachmentsApi ?? true;
  const ironic = opts.ironic ? createIronicFake(opts.ironic) : undefined;

  const tokens = new Map<string, number>();
  const volumes = new Map<string, FakeVolume & { kernelId?: string; ramdiskId?: string }>();
  // Checksums are computed once per upload, as Glance stores them with the image.
  const images = new Map<
    string,
    FakeImage & { created: string; updated: string; md5: string; multihash: string }
  >();
  const attachments = new Map<string, { id: string; volumeId: string; connector: unknown; status: string }>();
  const calls: FakeCall[] = [];
  const faults: (FakeFault & { used: number })[] = [];

  const setImage = (image: FakeImage) => {
    const now = new Date().toISOString();
    images.set(image.id, {
      ...image,
      created: images.get(image.id)?.created ?? now,
      updated: now,
      md5: createHash("md5").update(image.data).digest("hex"),
      multihash: createHash(image.os_hash_algo ?? "sha512")
        .update(image.data)
        .digest("hex"),
    });
  };
  const setVolume = (volume: FakeVolume) => {
    const v: FakeVolume & { kernelId?: string; ramdiskId?: string } = { ...volume };
    const kernel = volume.kernelData ?? (volume.kernelFile ? readFileSync(volume.kernelFile) : undefined);
    const initrd = volume.initrdData ?? (volume.initrdFile ? readFileSync(volume.initrdFile) : undefined);
    const old = volumes.get(volume.id);
    if (kernel) {
      v.kernelId = old?.kernelId ?? randomUUID();
      setImage({ id: v.kernelId, data: kernel });
    }
    if (initrd) {
      v.ramdiskId = old?.ramdiskId ?? randomUUID();
      setImage({ id: v.ramdiskId, data: initrd });
    }
    volumes.set(volume.id, v);
  };
  for (const i of opts.images ?? []) setImage(i);
  for (const v of opts.volumes ?? []) setVolume(v);

  let base = "";
  const catalog = () => {
    const ep = (url: string) =>
      (["public", "internal", "admin"] as const).map((iface) => ({
        id: randomBytes(16).toString("hex"),
        interface: iface,
        region_id: region,
        region,
        url,
      }));
    return [
      {
        id: randomBytes(16).toString("hex"),
        type: "identity",
        name: "keystone",
        endpoints: ep(`${base}/identity`),
      },
      {
        id: randomBytes(16).toString("hex"),
        type: "block-storage",
        name: "cinder",
        endpoints: ep(`${base}/volume/v3/${projectId}`),
      },
      {
        id: randomBytes(16).toString("hex"),
        type: "volumev3",
        name: "cinderv3",
        endpoints: ep(`${base}/volume/v3/${projectId}`),
      },
      { id: randomBytes(16).toString("hex"), type: "image", name: "glance", endpoints: ep(`${base}/image`) },
      ...(ironic
        ? [
            {
              id: randomBytes(16).toString("hex"),
              type: "baremetal",
              name: "ironic",
              endpoints: ep(`${base}/baremetal`),
            },
          ]
        : []),
    ];
  };

  const send = (
    res: ServerResponse,
    status: number,
    body?: unknown,
    headers: Record<string, string> = {},
  ) => {
    const text = body === undefined ? "" : JSON.stringify(body);
    res.writeHead(status, {
      ...(body === undefined ? {} : { "content-type": "application/json" }),
      "content-length": Buffer.byteLength(text),
      ...headers,
    });
    res.end(text);
  };
  const errorBody = (status: number, message: string) => {
    const kind: Record<number, string> = {
      400: "badRequest",
      403: "forbidden",
      404: "itemNotFound",
      406: "computeFault",
      409: "conflictingRequest",
      500: "computeFault",
      503: "serviceUnavailable",
    };
    return { [kind[status] ?? "computeFault"]: { code: status, message } };
  };
  const keystoneError = (status: number, message: string, title: string) => ({
    error: { code: status, message, title },
  });

  const connectionData = (v: FakeVolume) => {
    const c = v.connection;
    const data: Record<string, unknown> = {
      target_discovered: false,
      target_portal: c.target_portal,
      target_iqn: c.target_iqn,
      target_lun: c.target_lun,
      volume_id: v.id,
      encrypted: false,
      qos_specs: null,
      access_mode: "rw",
    };
    if (c.target_portals) {
      data.target_portals = c.target_portals;
      data.target_iqns = c.target_iqns ?? c.target_portals.map(() => c.target_iqn);
      data.target_luns = c.target_luns ?? c.target_portals.map(() => c.target_lun);
    }
    if (c.auth_method) {
      data.auth_method = c.auth_method;
      data.auth_username = c.auth_username;
      data.auth_password = c.auth_password;
    }
    return data;
  };

  const validConnector = (connector: unknown): string | undefined => {
    if (connector === null || typeof connector !== "object") return "connector must be an object";
    const c = connector as Record<string, unknown>;
    if (typeof c.initiator !== "string" || c.initiator === "")
      return "Invalid connector: iSCSI connector needs an initiator";
    return undefined;
  };

  const attachmentView = (
    a: { id: string; volumeId: string; status: string },
    connectionInfo: Record<string, unknown>,
  ) => ({
    attachment: {
      id: a.id,
      status: a.status,
      instance: null,
      volume_id: a.volumeId,
      attach_mode: "rw",
      attached_at: a.status === "attached" ? new Date().toISOString() : null,
      detached_at: null,
      connection_info: connectionInfo,
    },
  });

  async function handle(
    req: IncomingMessage,
    res: ServerResponse,
    path: string,
    body: unknown,
  ): Promise<number> {
    const method = req.method ?? "GET";

    // ---- Keystone v3
    if (method === "POST" && path === "/identity/v3/auth/tokens") {
      const identity = (body as { auth?: { identity?: Record<string, unknown>; scope?: unknown } })?.auth
        ?.identity;
      const methods = identity?.methods as string[] | undefined;
      let tokenBody: Record<string, unknown> | undefined;
      if (methods?.[0] === "password") {
        const user = (
          identity?.password as { user?: { name?: string; password?: string; domain?: { name?: string } } }
        )?.user;
        const scope = (
          body as { auth: { scope?: { project?: { name?: string; domain?: { name?: string } } } } }
        ).auth.scope;
        if (user?.name === username && user.password === password && user.domain?.name === domainName) {
          if (scope?.project?.name !== projectName || scope.project.domain?.name !== domainName) {
            send(
              res,
              401,
              keystoneError(401, "The request you have made requires authentication.", "Unauthorized"),
            );
            return 401;
          }
          tokenBody = {
            methods: ["password"],
            user: {
              id: "u1",
              name: username,
              domain: { id: "default", name: domainName },
              password_expires_at: null,
            },
          };
        }
      } else if (methods?.[0] === "application_credential") {
        const ac = identity?.application_credential as { id?: string; secret?: string } | undefined;
        if ((body as { auth: { scope?: unknown } }).auth.scope !== undefined) {
          send(
            res,
            401,
            keystoneError(401, "Application credentials cannot request a scope.", "Unauthorized"),
          );
          return 401;
        }
        if (
          opts.appCredential &&
          ac?.id === opts.appCredential.id &&
          ac.secret === opts.appCredential.secret
        ) {
          tokenBody = {
            methods: ["application_credential"],
            user: {
              id: "u1",
              name: username,
              domain: { id: "default", name: domainName },
              password_expires_at: null,
            },
            application_credential: { id: ac.id, name: "netboot", restricted: true },
          };
        }
      }
      if (!tokenBody) {
        send(
          res,
          401,
          keystoneError(401, "The request you have made requires authentication.", "Unauthorized"),
        );
        return 401;
      }
      const token = `gAAAAA${randomBytes(24).toString("hex")}`;
      const issued = Date.now();
      const expires = issued + ttl * 1000;
      tokens.set(token, expires);
      send(
        res,
        201,
        {
          token: {
            ...tokenBody,
            audit_ids: [randomBytes(8).toString("base64url")],
            issued_at: new Date(issued).toISOString().replace("Z", "000Z"),
            expires_at: new Date(expires).toISOString().replace("Z", "000Z"),
            project: { id: projectId, name: projectName, domain: { id: "default", name: domainName } },
            is_domain: false,
            roles: [{ id: "r1", name: "member" }],
            catalog: catalog(),
          },
        },
        { "x-subject-token": token },
      );
      return 201;
    }

    // Every service call needs a live token.
    const token = req.headers["x-auth-token"];
    const expiry = typeof token === "string" ? tokens.get(token) : undefined;
    if (expiry === undefined || expiry <= Date.now()) {
      send(res, 401, {
        error: {
          code: 401,
          title: "Unauthorized",
          message: "The request you have made requires authentication.",
        },
      });
      return 401;
    }

    // ---- Ironic v1
    const bare = ironic?.handle(method, req.url ?? path, req.headers, base);
    if (bare) {
      send(res, bare.status, bare.body, bare.headers);
      return bare.status;
    }

    // ---- Cinder v3
    const volumePrefix = `/volume/v3/${projectId}`;
    if (path.startsWith(`${volumePrefix}/`)) {
      const rest = path.slice(volumePrefix.length);
      const header = req.headers["openstack-api-version"];
      const requested =
        typeof header === "string" ? (/^volume\s+(\d+\.\d+)$/.exec(header.trim())?.[1] ?? "3.0") : "3.0";
      if (versionNumber(requested) > versionNumber(maxMicroversion)) {
        send(
          res,
          406,
          errorBody(
            406,
            `Version ${requested} is not supported by the API. Minimum is 3.0 and maximum is ${maxMicroversion}.`,
          ),
        );
        return 406;
      }
      const mv = versionNumber(requested);
      const showMatch = /^\/volumes\/([^/]+)$/.exec(rest);
      const actionMatch = /^\/volumes\/([^/]+)\/action$/.exec(rest);
      if (method === "GET" && showMatch) {
        const m = showMatch;
        const v = volumes.get(m[1] ?? "");
        if (!v) {
          send(res, 404, errorBody(404, `Volume ${m[1]} could not be found.`));
          return 404;
        }
        const attached = [...attachments.values()].filter((a) => a.volumeId === v.id);
        const meta: Record<string, string> = {};
        if (v.kernelId) meta.kernel_id = v.kernelId;
        if (v.ramdiskId) meta.ramdisk_id = v.ramdiskId;
        send(res, 200, {
          volume: {
            id: v.id,
            name: `vol-${v.id.slice(0, 8)}`,
            status: v.status ?? (attached.length > 0 ? "in-use" : "available"),
            size: 2,
            bootable: "true",
            multiattach: v.multiattach ?? false,
            attachments: attached.map((a) => ({ attachment_id: a.id, volume_id: v.id, server_id: null })),
            volume_image_metadata: meta,
            availability_zone: "nova",
            created_at: new Date().toISOString(),
          },
        });
        return 200;
      }
      if (method === "POST" && actionMatch) {
        const m = actionMatch;
        const v = volumes.get(m[1] ?? "");
        if (!v) {
          send(res, 404, errorBody(404, `Volume ${m[1]} could not be found.`));
          return 404;
        }
        const action = body as Record<string, { connector?: unknown }> | undefined;
        if (action && "os-initialize_connection" in action) {
          const problem = validConnector(action["os-initialize_connection"]?.connector);
          if (problem) {
            send(res, 400, errorBody(400, problem));
            return 400;
          }
          send(res, 200, {
            connection_info: {
              driver_volume_type: v.connection.driver_volume_type ?? "iscsi",
              data: connectionData(v),
            },
          });
          return 200;
        }
        send(res, 400, errorBody(400, "There is no such action"));
        return 400;
      }
      if (rest.startsWith("/attachments")) {
        if (!attachmentsApi || mv < versionNumber("3.27")) {
          send(res, 404, errorBody(404, "The resource could not be found."));
          return 404;
        }
        if (method === "POST" && rest === "/attachments") {
          const a = (body as { attachment?: Record<string, unknown> })?.attachment;
          const extra = a
            ? Object.keys(a).filter(
                (k) =>
                  !["volume_uuid", "instance_uuid", "connector", ...(mv >= 3054 ? ["mode"] : [])].includes(k),
              )
            : [];
          if (!a || typeof a.volume_uuid !== "string" || extra.length > 0) {
            send(
              res,
              400,
              errorBody(
                400,
                `Invalid input for field/attribute attachment. ${extra.length ? `Additional properties are not allowed (${extra.join(", ")})` : "volume_uuid is required"}`,
              ),
            );
            return 400;
          }
          const v = volumes.get(a.volume_uuid);
          if (!v) {
            send(res, 404, errorBody(404, `Volume ${a.volume_uuid} could not be found.`));
            return 404;
          }
          const existing = [...attachments.values()].filter((x) => x.volumeId === v.id);
          if (existing.length > 0 && !v.multiattach) {
            send(
              res,
              400,
              errorBody(
                400,
                `Invalid volume: Volume ${v.id} status must be available or downloading to reserve, but the current status is in-use.`,
              ),
            );
            return 400;
          }
          if (a.connector !== undefined && a.connector !== null) {
            const problem = validConnector(a.connector);
            if (problem) {
              send(res, 400, errorBody(400, problem));
              return 400;
            }
          }
          const att = {
            id: randomUUID(),
            volumeId: v.id,
            connector: a.connector ?? null,
            status: a.connector ? "attaching" : "reserved",
          };
          attachments.set(att.id, att);
          const info = a.connector
            ? {
                driver_volume_type: v.connection.driver_volume_type ?? "iscsi",
                ...connectionData(v),
                attachment_id: att.id,
              }
            : {};
          send(res, 200, attachmentView(att, info));
          return 200;
        }
        const one = /^\/attachments\/([^/]+)(\/action)?$/.exec(rest);
        const att = one ? attachments.get(one[1] ?? "") : undefined;
        if (one && !att) {
          send(res, 404, errorBody(404, `VolumeAttachment ${one[1]} could not be found.`));
          return 404;
        }
        if (att && one && !one[2] && method === "DELETE") {
          attachments.delete(att.id);
          send(res, 200, {});
          return 200;
        }
        if (att && one && !one[2] && method === "PUT") {
          const connector = (body as { attachment?: { connector?: unknown } })?.attachment?.connector;
          const problem = validConnector(connector);
          if (problem) {
            send(res, 400, errorBody(400, problem));
            return 400;
          }
          const v = volumes.get(att.volumeId);
          if (!v) {
            send(res, 404, errorBody(404, `Volume ${att.volumeId} could not be found.`));
            return 404;
          }
          att.connector = connector;
          att.status = "attaching";
          send(
            res,
            200,
            attachmentView(att, {
              driver_volume_type: v.connection.driver_volume_type ?? "iscsi",
              ...connectionData(v),
              attachment_id: att.id,
            }),
          );
          return 200;
        }
        if (att && one?.[2] && method === "POST") {
          if (mv < versionNumber("3.44")) {
            send(res, 404, errorBody(404, "The resource could not be found."));
            return 404;
          }
          if (body && typeof body === "object" && "os-complete" in body) {
            att.status = "attached";
            send(res, 204);
            return 204;
          }
          send(res, 400, errorBody(400, "There is no such action"));
          return 400;
        }
      }
      send(res, 404, errorBody(404, "The resource could not be found."));
      return 404;
    }

    // ---- Glance v2
    const g = /^\/image\/v2\/images\/([^/]+)(\/file)?$/.exec(path);
    if (method === "GET" && g) {
      const image = images.get(g[1] ?? "");
      if (!image) {
        res.writeHead(404, { "content-type": "text/plain" });
        res.end(`404 Not Found\n\nNo image found with ID ${g[1]}\n\n`);
        return 404;
      }
      const algo = image.os_hash_algo ?? "sha512";
      if (g[2]) {
        const md5 = image.md5;
        res.writeHead(200, {
          "content-type": "application/octet-stream",
          "content-length": image.data.length,
          "content-md5": md5,
        });
        if (image.trickle) {
          const { chunkBytes, delayMs } = image.trickle;
          for (let off = 0; off < image.data.length && !res.destroyed; off += chunkBytes) {
            res.write(image.data.subarray(off, off + chunkBytes));
            await new Promise((r) => setTimeout(r, delayMs));
          }
        }
        res.end(image.trickle ? undefined : image.data);
        return 200;
      }
      send(res, 200, {
        id: image.id,
        name: `image-${image.id.slice(0, 8)}`,
        status: image.status ?? "active",
        container_format: "bare",
        disk_format: "raw",
        visibility: "private",
        size: image.claimedSize ?? image.data.length,
        virtual_size: null,
        checksum: image.md5,
        os_hash_algo: algo,
        os_hash_value: image.os_hash_value ?? image.multihash,
        protected: false,
        tags: [],
        created_at: image.created,
        updated_at: image.updated,
        self: `/v2/images/${image.id}`,
        file: `/v2/images/${image.id}/file`,
        schema: "/v2/schemas/image",
      });
      return 200;
    }

    send(res, 404, { error: { code: 404, title: "Not Found", message: `no route for ${method} ${path}` } });
    return 404;
  }

  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      void (async () => {
        const path = (req.url ?? "/").split("?")[0] ?? "/";
        const method = req.method ?? "GET";
        let body: unknown;
        const text = Buffer.concat(chunks).toString("utf8");
        if (text !== "") {
          try {
            body = JSON.parse(text);
          } catch {
            send(res, 400, errorBody(400, "Malformed request body"));
            return;
          }
        }
        const record: FakeCall = { method, path, status: 0, headers: req.headers, body };
        calls.push(record);
        const fault = faults.find(
          (f) =>
            (f.method === undefined || f.method === method) &&
            f.path.test(path) &&
            (f.times === undefined || f.used < f.times),
        );
        if (fault) {
          fault.used++;
          if (fault.delayMs) await new Promise((r) => setTimeout(r, fault.delayMs));
          if (fault.reset) {
            record.status = -1;
            req.socket.destroy();
            return;
          }
          if (fault.hugeBodyBytes) {
            record.status = 200;
            res.writeHead(200, { "content-type": "application/json" });
            const chunk = Buffer.alloc(1024 * 1024, 0x20);
            res.write("{");
            for (let sent = 0; sent < fault.hugeBodyBytes && !res.destroyed; sent += chunk.length)
              if (!res.write(chunk))
                await new Promise((r) => {
                  res.once("drain", r);
                  res.once("close", r);
                });
            res.end("}");
            return;
          }
          if (fault.status) {
            record.status = fault.status;
            if (res.destroyed) return;
            send(
              res,
              fault.status,
              fault.status === 401
                ? keystoneError(401, "The request you have made requires authentication.", "Unauthorized")
                : errorBody(fault.status, "injected fault"),
            );
            return;
          }
        }
        if (res.destroyed) return;
        record.status = await handle(req, res, path, body);
      })().catch((err: unknown) => {
        if (!res.headersSent) send(res, 500, errorBody(500, String(err)));
      });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  base = `http://127.0.0.1:${port}`;

  return {
    url: base,
    authUrl: `${base}/identity/v3`,
    projectId,
    calls,
    addFault: (f) => faults.push({ ...f, used: 0 }),
    clearFaults: () => {
      faults.length = 0;
    },
    expireTokens: () => {
      for (const k of tokens.keys()) tokens.set(k, 0);
    },
    issuedTokens: () => [...tokens.keys()],
    setVolume,
    setImage,
    imageIdsOf: (id) => {
      const v = volumes.get(id);
      const out: { kernelId?: string; ramdiskId?: string } = {};
      if (v?.kernelId) out.kernelId = v.kernelId;
      if (v?.ramdiskId) out.ramdiskId = v.ramdiskId;
      return out;
    },
    attachments: () => [...attachments.values()],
    ironic,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
