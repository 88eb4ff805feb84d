/**
 * A misbehaving UDP relay between a TFTP client and server: it duplicates and reorders packets in both
 * directions. The client talks to the relay's port; each server transfer ID gets its own client-facing socket.
 */
import { createSocket, type Socket } from "node:dgram";

export interface RelayStats {
  forwarded: number;
  duplicated: number;
  reordered: number;
}

export class MisbehavingRelay {
  readonly stats: RelayStats = { forwarded: 0, duplicated: 0, reordered: 0 };
  private readonly sockets: Socket[] = [];
  private readonly timers = new Set<NodeJS.Timeout>();
  private closed = false;
  private main!: Socket;

  constructor(
    private readonly serverPort: number,
    private readonly pDuplicate = 0.1,
    private readonly pReorder = 0.1,
    private readonly host = "127.0.0.1",
  ) {}

  async start(): Promise<number> {
    this.main = await this.socket();
    const sessions = new Map<string, Socket>();
    this.main.on("message", async (msg, client) => {
      const key = `${client.address}:${client.port}`;
      let up = sessions.get(key);
      if (!up) {
        const upstream = await this.socket();
        up = upstream;
        sessions.set(key, upstream);
        const down = await this.socket();
        let serverTid: number | undefined;
        const toServer = this.misbehave(
          (b) => serverTid !== undefined && upstream.send(b, serverTid, this.host),
        );
        const toClient = this.misbehave((b) => down.send(b, client.port, client.address));
        upstream.on("message", (m, from) => {
          serverTid ??= from.port;
          toClient(m);
        });
        down.on("message", (m) => toServer(m));
      }
      up.send(msg, this.serverPort, this.host);
    });
    return this.main.address().port;
  }

  private async socket(): Promise<Socket> {
    const s = createSocket("udp4");
    await new Promise<void>((r) => s.bind(0, this.host, () => r()));
    this.sockets.push(s);
    return s;
  }

  /** Wraps a sender: sometimes twice, sometimes held back and sent after the next packet. */
  private misbehave(send: (b: Buffer) => void): (b: Buffer) => void {
    let held: Buffer | undefined;
    let timer: NodeJS.Timeout | undefined;
    const flushHeld = () => {
      if (timer) this.timers.delete(timer);
      if (held && !this.closed) send(held);
      held = undefined;
    };
    return (b: Buffer) => {
      this.stats.forwarded++;
      const copy = Buffer.from(b);
      if (!held && Math.random() < this.pReorder) {
        this.stats.reordered++;
        held = copy;
        clearTimeout(timer);
        if (timer) this.timers.delete(timer);
        timer = setTimeout(flushHeld, 30);
        this.timers.add(timer);
        return;
      }
      send(copy);
      if (Math.random() < this.pDuplicate) {
        this.stats.duplicated++;
        send(copy);
      }
      if (held) {
        clearTimeout(timer);
        flushHeld();
      }
    };
  }

  close(): void {
    this.closed = true;
    for (const t of this.timers) clearTimeout(t);
    for (const s of this.sockets) s.close();
  }
}
