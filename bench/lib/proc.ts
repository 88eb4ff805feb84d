/** Process statistics from /proc: peak RSS, CPU time, and the same summed over a process tree. */
import { readdirSync, readFileSync } from "node:fs";

const CLK_TCK = 100; // getconf CLK_TCK on Linux x86_64 and arm64

function statusField(pid: number, field: string): number | undefined {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** Peak resident set size (VmHWM) in bytes. */
export function peakRss(pid: number): number | undefined {
  return statusField(pid, "VmHWM");
}

export function currentRss(pid: number): number | undefined {
  return statusField(pid, "VmRSS");
}

interface StatFields {
  ppid: number;
  /** Own user+system CPU seconds. */
  cpu: number;
  /** Own system CPU seconds (stime: the kernel's work on the process's behalf). */
  sys: number;
  /** CPU seconds of children already waited for. */
  childCpu: number;
}

function readStat(pid: number): StatFields | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, "utf8");
    // Fields after the command name, which is in parentheses and may contain spaces.
    const rest = s.slice(s.lastIndexOf(")") + 2).split(" ");
    const num = (i: number) => Number(rest[i - 3]);
    return {
      ppid: num(4),
      cpu: (num(14) + num(15)) / CLK_TCK,
      sys: num(15) / CLK_TCK,
      childCpu: (num(16) + num(17)) / CLK_TCK,
    };
  } catch {
    return undefined;
  }
}

/** CPU seconds used by the process and its reaped children (tftpd-hpa forks one child per transfer). */
export function cpuSeconds(pid: number): number {
  const st = readStat(pid);
  return st ? st.cpu + st.childCpu : 0;
}

/** System CPU seconds (stime) of the process alone, children not counted. */
export function systemCpuSeconds(pid: number): number {
  return readStat(pid)?.sys ?? 0;
}

/**
 * CPU seconds of a process's live threads, summed by thread name (/proc/PID/task/TID/stat): shows which
 * threads carry the work (the event loop "node", "nbdh-pump", "nbdh-dhcp-in", libuv's pool...).
 */
export function threadCpuSeconds(pid: number): Record<string, number> {
  const byName: Record<string, number> = {};
  let tids: string[] = [];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return byName;
  }
  for (const tid of tids) {
    try {
      const s = readFileSync(`/proc/${pid}/task/${tid}/stat`, "utf8");
      const name = s.slice(s.indexOf("(") + 1, s.lastIndexOf(")"));
      const rest = s.slice(s.lastIndexOf(")") + 2).split(" ");
      const cpu = (Number(rest[11]) + Number(rest[12])) / CLK_TCK;
      byName[name] = (byName[name] ?? 0) + cpu;
    } catch {
      // the thread ended meanwhile
    }
  }
  return byName;
}

/** The thread names' CPU seconds in `after` beyond `before`, above 0.05 s, largest first. */
export function threadCpuDelta(
  before: Record<string, number>,
  after: Record<string, number>,
): Record<string, number> {
  const rows = Object.entries(after)
    .map(([name, s]) => [name, Math.round((s - (before[name] ?? 0)) * 10) / 10] as const)
    .filter(([, s]) => s >= 0.05)
    .sort((a, b) => b[1] - a[1]);
  return Object.fromEntries(rows);
}

/** The process and all its live descendants. */
export function processTree(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const st = readStat(Number(name));
    if (!st) continue;
    const list = children.get(st.ppid) ?? [];
    list.push(Number(name));
    children.set(st.ppid, list);
  }
  const out: number[] = [];
  const stack = [pid];
  while (stack.length) {
    const p = stack.pop() as number;
    out.push(p);
    stack.push(...(children.get(p) ?? []));
  }
  return out;
}

/**
 * Watches a process tree every `everyMs`: the peak of its summed RSS, and its CPU time, counting each
 * descendant's last observed CPU (tftpd-hpa ignores SIGCHLD, so finished children's time never reaches
 * the parent's counters; the last slice of each child after the final sample is missed).
 */
export function monitorTree(
  pid: number,
  everyMs = 50,
): { stop: () => { peakRss: number; cpuSeconds: number } } {
  let peak = 0;
  const start = cpuSeconds(pid);
  const childCpu = new Map<number, number>();
  const take = () => {
    let sum = 0;
    for (const p of processTree(pid)) {
      sum += currentRss(p) ?? 0;
      if (p !== pid) {
        const st = readStat(p);
        if (st) childCpu.set(p, st.cpu);
      }
    }
    if (sum > peak) peak = sum;
  };
  take();
  const timer = setInterval(take, everyMs);
  return {
    stop: () => {
      clearInterval(timer);
      take();
      let children = 0;
      for (const v of childCpu.values()) children += v;
      return { peakRss: peak, cpuSeconds: cpuSeconds(pid) - start + children };
    },
  };
}
