import { Appliance } from "../appliance.js";
import { ConfigError } from "../config/errors.js";
import { type ConfigOverrides, loadConfig } from "../config/load.js";
import { createLogger } from "../log.js";

const STOP_DEADLINE_MS = 5_000;

function port(value: string | boolean | undefined, flag: string): number | undefined {
  if (typeof value !== "string") return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 65535)
    throw new ConfigError([
      { file: "(command line)", field: flag, message: `${value} is not a port number` },
    ]);
  return n;
}

export function overridesFrom(values: Record<string, string | boolean | undefined>): ConfigOverrides {
  const str = (k: string) => (typeof values[k] === "string" ? (values[k] as string) : undefined);
  return {
    listen: str("listen"),
    tftpRoot: str("tftp-root"),
    tftpPort: port(values["tftp-port"], "--tftp-port"),
    dhcpPort: port(values["dhcp-port"], "--dhcp-port"),
    httpPort: port(values["http-port"], "--http-port"),
    adminListen: str("admin-listen"),
    noDhcp: values["no-dhcp"] === true,
    logLevel: str("log-level"),
  };
}

export async function commandServe(values: Record<string, string | boolean | undefined>): Promise<number> {
  const overrides = overridesFrom(values);
  const configFile = typeof values.config === "string" ? values.config : undefined;
  // A bad config fails here, before any socket is bound (exit 2 from main).
  const loaded = loadConfig(configFile, overrides);
  const logger = createLogger({ level: loaded.config.log.level });
  const appliance = new Appliance(loaded, logger);
  await appliance.start();

  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) return;
      stopping = true;
      logger.info({ signal }, "stopping");
      const deadline = setTimeout(() => {
        logger.error("stop took longer than 5 s; exiting anyway");
        resolve(1);
      }, STOP_DEADLINE_MS);
      deadline.unref();
      appliance.stop().then(
        () => {
          clearTimeout(deadline);
          logger.info("stopped");
          logger.flush?.();
          resolve(0);
        },
        (err: unknown) => {
          logger.error({ err }, "error while stopping");
          resolve(1);
        },
      );
    };
    process.once("SIGTERM", () => stop("SIGTERM"));
    process.once("SIGINT", () => stop("SIGINT"));
    process.on("SIGHUP", () => {
      if (stopping) return;
      try {
        const next = loadConfig(configFile, overrides);
        appliance.reload(next).then(
          () => logger.info({ file: next.file }, "configuration reloaded"),
          (err: unknown) => logger.error({ err }, "reload failed; the previous configuration stays in force"),
        );
      } catch (err) {
        const reason = err instanceof ConfigError ? err.issues : String(err);
        logger.error(
          { reason },
          "invalid configuration on reload; the previous configuration stays in force",
        );
      }
    });
  });
}
