/**
 * The OpenStack fake as a process, for the QEMU lab: it must listen inside the lab's namespace, where the
 * appliance runs. Options (FakeOptions) as JSON in argv[2]; prints one JSON line {url, authUrl, projectId}
 * when listening; on SIGTERM prints {calls} (method, path, status) and exits.
 */
import { type FakeOptions, startOpenStackFake } from "./openstack-fake.js";

const options = JSON.parse(process.argv[2] ?? "{}") as FakeOptions;
const fake = await startOpenStackFake(options);
process.stdout.write(
  `${JSON.stringify({ url: fake.url, authUrl: fake.authUrl, projectId: fake.projectId })}\n`,
);
process.once("SIGTERM", () => {
  const calls = fake.calls.map((c) => ({ method: c.method, path: c.path, status: c.status }));
  process.stdout.write(`${JSON.stringify({ calls })}\n`);
  void fake.close().finally(() => process.exit(0));
});
