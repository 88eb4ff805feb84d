/**
 * One UDP socket per served interface and port, bound to 0.0.0.0:port and to the device with
 * SO_BINDTODEVICE (native/nbdh_netdev.c), so that a socket receives only the datagrams of its interface
 * and its broadcasts leave only through it. The option is set before bind(2), so not even a datagram
 * that arrives between bind and setsockopt can be queued from another interface. Node's dgram adopts
 * the ready socket through bind({ fd }).
 */
import dgram from "node:dgram";
import { networkInterfaces } from "node:os";
import { loadAddon } from "../native.js";

interface NetdevAddon {
  openUdpSocket(ifname: string, port: number): number;
  bindToDevice(fd: number, ifname: string): void;
  closeFd(fd: number): void;
}

/** Loads native/build/Release/nbdh_netdev.node (built by `node native/build.mjs` at install). */
export function loadNetdevAddon(): NetdevAddon {
  return loadAddon<NetdevAddon>("nbdh_netdev");
}

export interface BoundSocket {
  iface: string;
  port: number;
  socket: dgram.Socket;
}

/** A dgram socket on 0.0.0.0:port that sees and sends only on `iface`. */
export function openInterfaceSocket(iface: string, port: number): Promise<BoundSocket> {
  const native = loadNetdevAddon();
  const fd = native.openUdpSocket(iface, port);
  const socket = dgram.createSocket({ type: "udp4" });
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => {
      native.closeFd(fd);
      reject(err);
    };
    socket.once("error", onError);
    socket.bind({ fd }, () => {
      socket.off("error", onError);
      try {
        socket.setRecvBufferSize(4 * 1024 * 1024);
      } catch {
        // best effort: rmem_max may be lower
      }
      resolve({ iface, port, socket });
    });
  });
}

/** The first IPv4 address of an interface in this network namespace. */
export function interfaceAddress(iface: string): string | undefined {
  return (
    networkInterfaces()[iface]?.find((a) => a.family === "IPv4" && !a.internal)?.address ??
    networkInterfaces()[iface]?.find((a) => a.family === "IPv4")?.address
  );
}
