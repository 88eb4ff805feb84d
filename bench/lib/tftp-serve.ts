/**
 * Runs this project's TFTP server as its own process, so a benchmark can measure its RSS and CPU alone.
 *   node dist/bench/lib/tftp-serve.js ROOT ADDRESS PORT [MAX_BLKSIZE] [MAX_WINDOWSIZE] [native|dgram]
 * Prints "ready" on stdout once listening; stops on SIGTERM.
 */
import { pino } from "pino";
import { TftpServer } from "../../src/tftp/server.js";

const [
  root,
  address = "0.0.0.0",
  port = "69",
  maxBlksize = "65464",
  maxWindowsize = "64",
  transport = "native",
] = process.argv.slice(2);
if (!root || (transport !== "native" && transport !== "dgram")) {
  console.error("usage: tftp-serve ROOT ADDRESS PORT [MAX_BLKSIZE] [MAX_WINDOWSIZE] [native|dgram]");
  process.exit(2);
}
// Transfer lines go to stderr (the benchmark discards them): logging is part of the real cost.
const server = new TftpServer({
  root,
  address,
  port: Number(port),
  maxBlksize: Number(maxBlksize),
  maxWindowsize: Number(maxWindowsize),
  maxTransfers: 1000,
  transport,
  logger: pino({ level: "info" }, pino.destination(2)),
});
await server.listen();
process.stdout.write("ready\n");
process.on("SIGTERM", () => {
  server.close().then(() => process.exit(0));
});
