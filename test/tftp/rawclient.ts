/** A scripted TFTP client over a real UDP socket, for exact protocol behaviour checks. */
import { createSocket, type RemoteInfo, type Socket } from "node:dgram";
import { decodePacket, type TftpPacket } from "../../src/tftp/packet.js";

export interface Received {
  packet: TftpPacket;
  from: RemoteInfo;
}

export class RawClient {
  private readonly socket: Socket;
  private readonly queue: Received[] = [];
  private waiter: (() => void) | undefined;

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.on("message", (msg, from) => {
      const d = decodePacket(msg);
      if (!d.ok) return;
      this.queue.push({ packet: d.packet, from });
      this.waiter?.();
    });
  }

  static async open(): Promise<RawClient> {
    const s = createSocket("udp4");
    await new Promise<void>((r) => s.bind(0, "127.0.0.1", () => r()));
    return new RawClient(s);
  }

  get port(): number {
    return this.socket.address().port;
  }

  send(buf: Buffer, port: number, address = "127.0.0.1"): void {
    this.socket.send(buf, port, address);
  }

  /** Next packet, or undefined after `ms` without one. */
  async next(ms = 2000): Promise<Received | undefined> {
    const deadline = Date.now() + ms;
    while (this.queue.length === 0) {
      const left = deadline - Date.now();
      if (left <= 0) return undefined;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.waiter = undefined;
    }
    return this.queue.shift();
  }

  /** Everything that arrives within `ms`. */
  async drain(ms: number): Promise<Received[]> {
    const out: Received[] = [];
    const deadline = Date.now() + ms;
    for (;;) {
      const left = deadline - Date.now();
      if (left <= 0) break;
      const r = await this.next(left);
      if (!r) break;
      out.push(r);
    }
    return out;
  }

  close(): void {
    this.socket.close();
  }
}
