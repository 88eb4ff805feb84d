import { planSections } from "../appliance.js";
import { BootPlan } from "../bootplan/plan.js";
import { UnresolvableMachineError } from "../bootplan/resolver.js";
import { loadConfig } from "../config/load.js";
import { createLogger, registerSecret } from "../log.js";

const ARCHES = ["x64", "aa64"] as const;

export async function commandRender(values: Record<string, string | boolean | undefined>): Promise<number> {
  const mac = values.mac;
  if (typeof mac !== "string") {
    process.stderr.write("netboot render: --mac MAC is required\n");
    return 2;
  }
  const arch = values.arch;
  if (arch !== undefined && !ARCHES.includes(arch as (typeof ARCHES)[number])) {
    process.stderr.write(`netboot render: --arch must be x64 or aa64, not ${String(arch)}\n`);
    return 2;
  }
  const { config } = loadConfig(typeof values.config === "string" ? values.config : undefined);
  // Resolver logs go to stderr so that stdout is exactly the served config.
  const logger = createLogger({ level: "warn", destination: process.stderr, pretty: false });
  const plan = new BootPlan({ ...planSections(config), logger });
  let result: Awaited<ReturnType<BootPlan["render"]>>;
  try {
    result = await plan.render(mac, arch as (typeof ARCHES)[number] | undefined);
  } catch (err) {
    if (err instanceof UnresolvableMachineError) {
      process.stderr.write(`netboot render: ${err.message}\n`);
      return 1;
    }
    throw err;
  }
  const mask = (text: string) =>
    values["show-secrets"] ? text : result.secrets.reduce((t, s) => t.split(s).join("********"), text);
  for (const s of result.secrets) registerSecret(s);

  const loader = config.boot.loaders[result.arch];
  const info = [
    `machine:   ${result.machine}${result.viaDefault ? " (unknown MAC: boot.default_machine)" : ""}`,
    `mac:       ${result.mac}`,
    `arch:      ${result.arch}`,
    `loader:    ${loader ? `${loader.shim} (DHCP boot file), then ${loader.grub}` : "(none configured for this arch)"}`,
    "grub:      grub/grub.cfg (master), then grub/" + `${result.mac}.conf`,
    `kernel:    /${result.kernelPath} <- ${result.kernelFile}`,
    `initrd:    /${result.initrdPath} <- ${result.initrdFile}`,
    `flavour:   ${result.flavour}`,
    `resolver:  ${result.resolver}${result.detail ? `: ${result.detail}` : ""}${result.fallback ? " (last known good: OpenStack unreachable)" : ""}`,
    `cmdline:   ${mask(result.cmdline)} (${result.cmdline.length} bytes)`,
  ];
  process.stderr.write(`${info.join("\n")}\n`);
  process.stdout.write(mask(result.grubConfig));
  return 0;
}
