import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ipxeWord, ipxeWords } from "../../src/bootplan/ipxe-word.js";
import { BootPlan, ipxeScriptPath } from "../../src/bootplan/plan.js";
import {
  captureLogger,
  fakeImageFiles,
  grubWords,
  leasedRegistry,
  planOptionsFromYaml,
  tempDir,
} from "./helpers.js";

/**
 * The fast loader path: a machine with `loader: ipxe` gets an iPXE script carrying exactly its GRUB entry's
 * kernel, initrd and command line, under the same ownership rule; iPXE's autoexec.ipxe is served where
 * iPXE looks for it.
 */
const FAST = "52:54:00:cc:00:01";
const SECURE = "52:54:00:cc:00:02";
const CHAP = "Ipxe-Chap-Secret1";
const client = (address: string) => ({ address, port: 2000 });

function yamlFor(files: { kernel: string; initrd: string }, ipxeLoader = "x64/ipxe.efi"): string {
  return `
boot:
  loaders: { x64: { shim: x64/shimx64.efi, grub: x64/grubx64.efi${ipxeLoader ? `, ipxe: ${ipxeLoader}` : ""} } }
images:
  img: { kernel: { path: ${files.kernel} }, initrd: { path: ${files.initrd} }, flavour: dracut, root: UUID=1234, extra_args: [console=ttyS0] }
machines:
  - name: fast
    macs: [${FAST}]
    loader: ipxe
    volume: { resolver: static, portals: [10.0.0.5, 10.0.0.6], iqn: iqn.2024-01.org.example:fast, lun: 1, chap: { username: fu, password: ${CHAP} } }
  - name: secure
    macs: [${SECURE}]
    volume: { resolver: static, portals: [10.0.0.5], iqn: iqn.2024-01.org.example:secure, lun: 2 }
`;
}

describe("iPXE scripts", () => {
  const log = captureLogger();
  let files: { kernel: string; initrd: string };
  let owners: Awaited<ReturnType<typeof leasedRegistry>>;
  let plan: BootPlan;
  const cacheDir = tempDir();
  const optionsFor = (yaml: string, httpServed = true) => ({
    ...planOptionsFromYaml(yaml, { cacheDir, logger: log.logger }),
    httpServed,
  });

  beforeAll(async () => {
    files = fakeImageFiles(tempDir(), "ipxe");
    owners = await leasedRegistry(log.logger);
    plan = new BootPlan(optionsFor(yamlFor(files)), owners.registry);
  });
  afterAll(async () => {
    await owners?.store.close();
  });

  it("carries the GRUB entry's kernel, initrd and command line, word for word", async () => {
    const r = await plan.render(FAST);
    const script = r.ipxeScript.split("\n");
    expect(script[0]).toBe("#!ipxe");
    const kernel = script.find((l) => l.startsWith("kernel "))?.replace(/ \|\| goto failed$/, "");
    const initrd = script.find((l) => l.startsWith("initrd "))?.replace(/ \|\| goto failed$/, "");
    const grubLinux = r.grubConfig.split("\n").find((l) => l.trim().startsWith("linux "));
    const grubInitrd = r.grubConfig.split("\n").find((l) => l.trim().startsWith("initrd "));
    // After the command word (iPXE's `kernel`, GRUB's `linux`), the same words.
    expect(kernel?.split(" ").slice(1)).toEqual(grubWords(grubLinux?.trim() ?? "").slice(1));
    expect(initrd?.split(" ").slice(1)).toEqual(grubWords(grubInitrd?.trim() ?? "").slice(1));
    expect(kernel).toContain(`${r.kernelPath} `);
    expect(kernel).toContain(r.cmdline);
    expect(r.cmdline).toContain("rd.iscsi.initiator=");
    // The initramfs logs in; the script never hands the disk to iPXE.
    expect(r.ipxeScript).not.toMatch(/sanboot|sanhook/);
    expect(script.filter((l) => l.trim() === "boot || goto failed")).toHaveLength(1);
  });

  it("goes only to the address holding the machine's lease, like its GRUB config", async () => {
    const provide = plan.tftpProvider();
    const path = ipxeScriptPath(FAST);
    await expect(provide(path, client("10.0.0.31"))).rejects.toThrow(/only to the machine's own address/);
    await owners.lease(FAST, "10.0.0.31");
    await expect(provide(path, client("10.0.0.32"))).rejects.toThrow(/only to the machine's own address/);
    const ok = await provide(path, client("10.0.0.31"));
    expect(ok?.kind === "data" && ok.data.toString()).toContain(CHAP);
    expect(log.text()).not.toContain(CHAP);
  });

  it("serves autoexec.ipxe at the root and beside the iPXE loader, nowhere else", async () => {
    const provide = plan.tftpProvider();
    for (const path of ["autoexec.ipxe", "x64/autoexec.ipxe"]) {
      const got = await provide(path, client("10.0.0.99"));
      const text = got?.kind === "data" ? got.data.toString() : "";
      expect(text.startsWith("#!ipxe\n")).toBe(true);
      expect(text).toContain("ifconf --configurator dhcp");
      // biome-ignore lint/suspicious/noTemplateCurlyInString: iPXE's own setting syntax, not a JS template
      expect(text).toContain("chain ${filename}");
    }
    expect(await provide("aa64/autoexec.ipxe", client("10.0.0.99"))).toBeUndefined();
    expect(await provide("x64/sub/autoexec.ipxe", client("10.0.0.99"))).toBeUndefined();
    const noIpxe = new BootPlan(optionsFor(yamlFor(files, "").replace("loader: ipxe", "")), owners.registry);
    expect(await noIpxe.tftpProvider()("autoexec.ipxe", client("10.0.0.99"))).toBeUndefined();
  });

  it("tells DHCP which loader each machine starts with", () => {
    expect(plan.loaderKindFor(FAST)).toBe("ipxe");
    expect(plan.loaderKindFor(SECURE)).toBe("shim");
    expect(plan.loaderKindFor("52:54:00:ee:ee:ee")).toBe("shim");
  });

  it("refuses a config whose iPXE machine has no iPXE loader or no HTTP server", () => {
    expect(() => new BootPlan(optionsFor(yamlFor(files, "")))).toThrow(
      /machine fast: loader ipxe needs boot\.loaders\.<arch>\.ipxe/,
    );
    expect(() => new BootPlan(optionsFor(yamlFor(files), false))).toThrow(
      /machine fast: loader ipxe needs the HTTP server \(http\.enable: true\)/,
    );
  });

  it("refuses words iPXE would split, expand or read as an operator", () => {
    expect(ipxeWords(["kernel", "/images/a/kernel", "root=UUID=1"])).toBe(
      "kernel /images/a/kernel root=UUID=1",
    );
    // biome-ignore lint/suspicious/noTemplateCurlyInString: iPXE's own setting syntax, not a JS template
    for (const bad of ["a b", "x${net0/mac}", "tab\there", "||", "&&", "", "caf\u00e9"])
      expect(() => ipxeWord(bad)).toThrow(/iPXE/);
  });
});
