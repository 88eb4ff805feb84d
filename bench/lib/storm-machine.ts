/**
 * One machine of the boot storm, played by real clients in the machine's namespace: what OVMF, shim and
 * GRUB do on the wire, in order.
 *   1. udhcpc as a UEFI PXE client (option 93, PXEClient vendor class), started again until 60 s have
 *      passed as EDK2 retries; the bound address goes on eth0;
 *   2. a tsize probe of shim (RRQ with tsize and blksize, OACK, then ERROR 8, as EDK2's MTFTP does);
 *   3. shim at blksize 1468, windowsize 4; GRUB at 512, windowsize 4 (shim's PXE base code reads);
 *   4. grub/grub.cfg, then the machine's own grub/<MAC>.conf; kernel and initrd, at blksize 1024 in
 *      lockstep (GRUB's own TFTP).
 * Each download is checked against the size it should have. The script prints one line:
 *   ok <total ms> dhcp=<ms> shim=<ms> grub=<ms> kernel=<ms> initrd=<ms>   or   fail <step> <ms> <client's words>
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { FIRMWARE_TFTP_PY } from "./firmware-tftp.js";

export interface StormFile {
  /** The step's name in the script's report. */
  step: string;
  /** Path on the TFTP server; <MAC> is replaced with the machine's MAC. */
  path: string;
  blksize: number;
  windowsize: number;
  size: number;
}

/** The files of one boot, in order, with their real sizes (they differ between servers only by config text). */
export function bootSequence(sizes: {
  shim: number;
  grub: number;
  master: number;
  own: number;
  kernel: number;
  initrd: number;
}): StormFile[] {
  return [
    { step: "shim", path: "x64/shimx64.efi", blksize: 1468, windowsize: 4, size: sizes.shim },
    { step: "grub", path: "x64/grubx64.efi", blksize: 512, windowsize: 4, size: sizes.grub },
    { step: "master", path: "grub/grub.cfg", blksize: 1024, windowsize: 1, size: sizes.master },
    { step: "own", path: "grub/<MAC>.conf", blksize: 1024, windowsize: 1, size: sizes.own },
    { step: "kernel", path: "images/deb/kernel", blksize: 1024, windowsize: 1, size: sizes.kernel },
    { step: "initrd", path: "images/deb/initrd", blksize: 1024, windowsize: 1, size: sizes.initrd },
  ];
}

/** DATA packets (plus the OACK) a server must send at least, for one machine: what a loss-free boot costs. */
export function minimumPackets(files: readonly StormFile[]): number {
  const probe = 1; // its OACK
  return probe + files.reduce((n, f) => n + 1 + Math.floor(f.size / f.blksize) + 1, 0);
}

const PROBE = `import socket, sys
server, path, blksize = sys.argv[1], sys.argv[2], sys.argv[3]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
rrq = b"\\0\\1" + path.encode() + b"\\0octet\\0tsize\\0" + b"0\\0blksize\\0" + blksize.encode() + b"\\0"
for attempt in range(6):
    s.sendto(rrq, (server, 69))
    try:
        data, peer = s.recvfrom(2048)
    except socket.timeout:
        continue
    if data[:2] == b"\\0\\6":
        # EDK2 ends the probe with ERROR 8 once it has the size.
        s.sendto(b"\\0\\5\\0\\x08size probe\\0", peer)
        sys.exit(0)
    sys.exit(1)
sys.exit(1)
`;

/**
 * Who downloads the files: atftp (a real client), or firmware-tftp (bench/lib/firmware-tftp.ts), which
 * retries as EDK2 and GRUB do; atftp aborts on a repeated OACK, so under loss it measures itself.
 */
export type StormTftpClient = "atftp" | "firmware";

/** Writes the machine script, its udhcpc hook and the probe into `dir`; returns the script's path. */
export function writeMachineScript(
  dir: string,
  server: string,
  files: readonly StormFile[],
  client: StormTftpClient = "atftp",
): string {
  const hook = join(dir, "udhcpc-hook.sh");
  writeFileSync(
    hook,
    '#!/bin/sh\n[ "$1" = bound ] && exec ip addr add "$ip/$subnet" dev "$interface"\nexit 0\n',
    { mode: 0o755 },
  );
  const probe = join(dir, "probe.py");
  writeFileSync(probe, PROBE);
  const firmware = join(dir, "firmware-tftp.py");
  writeFileSync(firmware, FIRMWARE_TFTP_PY);
  const gets = files
    .map((f) => {
      // A machine's own config differs in size from machine to machine: the runner passes it as OWN_SIZE.
      const perMachine = f.path.includes("<MAC>");
      const path = f.path.replace("<MAC>", "$MAC");
      const size = perMachine ? '"$OWN_SIZE"' : f.size;
      if (client === "firmware") return `fwget ${f.step} "${path}" ${size} ${f.blksize} ${f.windowsize}`;
      const opts = [`--option "blksize ${f.blksize}"`, '--option "tsize 0"'];
      if (f.windowsize > 1) opts.push(`--option "windowsize ${f.windowsize}"`);
      return `get ${f.step} "${path}" ${size} ${opts.join(" ")}`;
    })
    .join("\n");
  const script = join(dir, "machine.sh");
  writeFileSync(
    script,
    `#!/bin/sh
# One storm machine; env: MAC, OWN_SIZE (its config's size), OUT (a private folder). See bench/lib/storm-machine.ts.
S=${server}
now() { date +%s%3N; }
T0=$(now)
REPORT=""
# The client's own last words go with a failure (one line), so a report says why, not only where.
fail() { echo "fail $1 $(( $(now) - T0 )) $(tail -n 3 "$OUT/log" 2>/dev/null | tr -s '\n\t' '  ' | cut -c1-200)"; exit 1; }
get() {
  step=$1; path=$2; size=$3; shift 3
  t=$(now)
  atftp "$@" -g -r "$path" -l "$OUT/f" $S >"$OUT/log" 2>&1 || fail "$step"
  [ "$(stat -c %s "$OUT/f")" = "$size" ] || fail "$step-size"
  rm -f "$OUT/f"
  REPORT="$REPORT $step=$(( $(now) - t ))"
}
fwget() {
  step=$1; path=$2; size=$3
  t=$(now)
  /usr/bin/python3 ${firmware} $S "$path" "$OUT/f" $4 $5 >"$OUT/log" 2>&1 || fail "$step"
  [ "$(stat -c %s "$OUT/f")" = "$size" ] || fail "$step-size"
  rm -f "$OUT/f"
  REPORT="$REPORT $step=$(( $(now) - t ))"
}
mkdir -p "$OUT"
t=$(now)
# udhcpc -n gives up once three REQUESTs go unanswered; EDK2 starts DHCP over until its timeouts (4, 8, 16,
# 32 s) are spent, so udhcpc is started again while 60 s have not passed.
until udhcpc -i eth0 -n -q -f -t 10 -T 2 -s ${hook} -x 0x5d:0007 -V PXEClient:Arch:00007:UNDI:003016 >"$OUT/log" 2>&1; do
  [ $(( $(now) - t )) -lt 60000 ] || fail dhcp
done
REPORT="dhcp=$(( $(now) - t ))"
t=$(now)
/usr/bin/python3 ${probe} $S x64/shimx64.efi 1468 >"$OUT/log" 2>&1 || fail probe
REPORT="$REPORT probe=$(( $(now) - t ))"
${gets}
echo "ok $(( $(now) - T0 )) $REPORT"
`,
    { mode: 0o755 },
  );
  return script;
}
