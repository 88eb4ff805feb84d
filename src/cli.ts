import { type ParseArgsConfig, parseArgs } from "node:util";
import { commandCheckConfig } from "./commands/check-config.js";
import { commandLeases } from "./commands/leases.js";
import { commandRender } from "./commands/render.js";
import { commandServe } from "./commands/serve.js";
import { commandStatus } from "./commands/status.js";
import { ConfigError } from "./config/errors.js";

/** A subcommand: its flags, its help text and what it does. Exit codes: 0 ok, 1 failure, 2 usage or config error. */
export interface Command {
  summary: string;
  usage: string;
  options: NonNullable<ParseArgsConfig["options"]>;
  run(values: Record<string, string | boolean | undefined>, positionals: string[]): Promise<number>;
}

const CONFIG_OPTION = { config: { type: "string", short: "c" } } as const;

export const commands: Record<string, Command> = {
  serve: {
    summary: "run the appliance: DHCP, TFTP and the boot plan in one process",
    usage: `netboot serve [--config FILE] [--listen ADDR] [--tftp-root DIR] [--tftp-port N] [--http-port N] [--admin-listen ADDR:PORT] [--dhcp-port N] [--no-dhcp] [--log-level LEVEL]

  --config FILE     config file (default /etc/netboot-appliance/config.yaml; optional when flags say enough)
  --listen ADDR     IPv4 address TFTP binds and DHCP names as next-server
  --tftp-root DIR   folder served over TFTP (read-only, jailed)
  --tftp-port N     TFTP port (default 69)
  --http-port N     serve the same files over HTTP on this port (UEFI HTTP boot)
  --admin-listen A:P management listener: /metrics, and the API and web page once admin.token is set
  --dhcp-port N     DHCP server port (default 67)
  --no-dhcp         no DHCP at all: TFTP (and the boot plan) only
  --log-level L     fatal|error|warn|info|debug|trace

Signals: SIGTERM/SIGINT stop within 5 s; SIGHUP reloads config and inventory (an invalid one is refused and logged).`,
    options: {
      ...CONFIG_OPTION,
      listen: { type: "string" },
      "tftp-root": { type: "string" },
      "tftp-port": { type: "string" },
      "dhcp-port": { type: "string" },
      "http-port": { type: "string" },
      "admin-listen": { type: "string" },
      "no-dhcp": { type: "boolean" },
      "log-level": { type: "string" },
    },
    run: commandServe,
  },
  "check-config": {
    summary: "validate the config and print a summary (machines, resolvers, files found or missing)",
    usage:
      "netboot check-config [--config FILE]\n\nExit 0 when valid, 2 with one line per problem (file:line field: reason).",
    options: { ...CONFIG_OPTION },
    run: commandCheckConfig,
  },
  render: {
    summary: "show what a machine would get: its GRUB config on stdout, boot files on stderr",
    usage: `netboot render --mac MAC [--arch x64|aa64] [--config FILE] [--show-secrets]

Prints the per-machine GRUB config exactly as the TFTP server serves it; CHAP secrets are masked unless --show-secrets.`,
    options: {
      ...CONFIG_OPTION,
      mac: { type: "string" },
      arch: { type: "string" },
      "show-secrets": { type: "boolean" },
    },
    run: commandRender,
  },
  status: {
    summary: "machines and their last boot (or one machine's boot timeline), from the running appliance",
    usage: `netboot status [--mac MAC] [--url http://ADDR:PORT] [--config FILE]

Reads the management API (admin.listen). The token comes from NETBOOT_ADMIN_TOKEN or the config's admin.token.`,
    options: { ...CONFIG_OPTION, mac: { type: "string" }, url: { type: "string" } },
    run: commandStatus,
  },
  leases: {
    summary: "list the current DHCP leases from the state directory",
    usage: "netboot leases [--config FILE] [--state-dir DIR] [--json]",
    options: { ...CONFIG_OPTION, "state-dir": { type: "string" }, json: { type: "boolean" } },
    run: commandLeases,
  },
};

function mainHelp(): string {
  const width = Math.max(...Object.keys(commands).map((c) => c.length));
  const lines = Object.entries(commands).map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`);
  return `netboot: network boot appliance (UEFI x64/aarch64, boot from iSCSI volumes)

Usage: netboot <command> [options]   (netboot <command> --help for its options)

Commands:
${lines.join("\n")}
`;
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === "--help" || name === "-h" || name === "help") {
    process.stdout.write(mainHelp());
    return name === undefined ? 2 : 0;
  }
  const command = commands[name];
  if (!command) {
    process.stderr.write(`netboot: unknown command "${name}"\n\n${mainHelp()}`);
    return 2;
  }
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({
      args: rest,
      options: { ...command.options, help: { type: "boolean", short: "h" } },
      allowPositionals: false,
      strict: true,
    });
  } catch (err) {
    process.stderr.write(`netboot ${name}: ${(err as Error).message}\n\nUsage: ${command.usage}\n`);
    return 2;
  }
  if (parsed.values.help) {
    process.stdout.write(`${command.summary}\n\nUsage: ${command.usage}\n`);
    return 0;
  }
  try {
    return await command.run(
      parsed.values as Record<string, string | boolean | undefined>,
      parsed.positionals,
    );
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      return 2;
    }
    throw err;
  }
}
