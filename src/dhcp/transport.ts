/**
 * One UDP socket per served interface and port, bound to 0.0.0.0:port and to the device with
 * SO_BINDTODEVICE (native/nbdh_netdev.c), so that a socket receives only the datagrams of its interface
 * and its broadcasts leave only through it. The option is set before bind(2), so not even a datagram
 * that arrives between bind and setsockopt can be queued from another interface. Node's dgram adopts
 * the ready socket through bind({ fd }).
 */
import dgram from "node:dgram";
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { networkInterfaces } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

interface NetdevAddon {
  openUdpSocket(ifname: string, port: number): number;
  bindToDevice(fd: number, ifname: string): void;
  closeFd(fd: number): void;
}

let addon: NetdevAddon | undefined;

/** Loads native/build/Release/nbdh_netdev.node (built by `node native/build.mjs` at install). */
export function loadNetdevAddon(): NetdevAddon {
  if (addon) return addon;
  const require = createRequire(import.meta.url);
  let dir = dirname(fileURLToPath(import.meta.url));
  // src/dhcp when run from sources (vitest), dist/src/dhcp when built: walk up to the repo root.
  for (let i = 0; i < 5; i++) {
    const candidate = join(dir, "native", "build", "Release", "nbdh_netdev.node");
    if (existsSync(candidate)) {
      addon = require(candidate) as NetdevAddon;
      return addon;
    }
    dir = dirname(dir);
  }
  throw new Error(
    "native addon nbdh_netdev.node not built: run `node native/build.mjs` (npm install does it)",
  );
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
