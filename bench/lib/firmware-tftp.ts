/**
 * A TFTP client that retries the way UEFI firmware and GRUB do, for the storm's loss rows. atftp aborts
 * ("unexpected OACK") when a retransmitted OACK arrives after it acknowledged the first one, which is what a
 * server must do once an ACK 0 is lost; EDK2's MTFTP and GRUB acknowledge it again. So under loss atftp
 * measures itself, not the server. This client:
 *   - sends RRQ with blksize, tsize and (when > 1) windowsize; resends it until a first answer;
 *   - answers every OACK with ACK 0 while no DATA has come;
 *   - acknowledges each window's last block, the last block, and, after a gap or a duplicate, the last
 *     block it has in order (once per gap, so it does not start a storm of its own);
 *   - on a timeout (1 s) resends its last packet; gives up after 30 s without progress, about GRUB's
 *     patience (GRUB_NET_TRIES 40 at 400 ms plus 20 ms per try: 31.6 s);
 *   - follows 16-bit block numbers past 65535.
 *   python3 firmware-tftp.py SERVER PATH OUT BLKSIZE WINDOWSIZE
 * Exits 0 with the file written to OUT, or 1 with one line on stderr saying why.
 */
export const FIRMWARE_TFTP_PY = String.raw`import socket, struct, sys
server, path, out, blksize, windowsize = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
TIMEOUT, PATIENCE = 1.0, 30
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(TIMEOUT)
opts = b"blksize\0" + str(blksize).encode() + b"\0tsize\0" + b"0\0"
if windowsize > 1:
    opts += b"windowsize\0" + str(windowsize).encode() + b"\0"
rrq = b"\0\1" + path.encode() + b"\0octet\0" + opts
def die(why):
    sys.stderr.write("firmware-tftp: " + why + "\n")
    sys.exit(1)
peer = None
got = 0          # blocks in order so far (absolute, not wrapped)
acked = 0        # the last block acknowledged
resynced = False # an ACK for a gap was sent and nothing has come in order since
chunks = []
last = rrq
misses = 0
s.sendto(rrq, (server, 69))
while True:
    try:
        data, addr = s.recvfrom(65536)
    except socket.timeout:
        misses += 1
        if misses >= PATIENCE / TIMEOUT:
            die("timeout after %d blocks" % got)
        s.sendto(last, peer or (server, 69))
        continue
    if peer is None:
        peer = addr
    elif addr != peer:
        continue
    op = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 0
    if op == 5:
        die("server error " + data[4:].split(b"\0")[0].decode(errors="replace"))
    if op == 6:
        if got == 0:
            fields = data[2:].split(b"\0")
            accepted = {k.lower(): v for k, v in zip(fields[0::2], fields[1::2])}
            blksize = int(accepted.get(b"blksize", b"512"))
            windowsize = int(accepted.get(b"windowsize", b"1"))
            last = b"\0\4\0\0"
            s.sendto(last, peer)
            misses = 0
        continue
    if op != 3 or len(data) < 4:
        continue
    if got == 0 and acked == 0 and last == rrq:
        blksize, windowsize = 512, 1  # no OACK: the server ignored the options
    block = struct.unpack("!H", data[2:4])[0]
    if block == (got + 1) & 0xFFFF:
        got += 1
        chunks.append(data[4:])
        misses = 0
        resynced = False
        final = len(data) - 4 < blksize
        if final or got - acked >= windowsize:
            acked = got
            last = struct.pack("!HH", 4, got & 0xFFFF)
            s.sendto(last, peer)
        if final:
            break
    elif not resynced:
        # A gap or a duplicate: say where we are, once, as EDK2 does.
        resynced = True
        acked = got
        last = struct.pack("!HH", 4, got & 0xFFFF)
        s.sendto(last, peer)
with open(out, "wb") as f:
    f.write(b"".join(chunks))
`;
