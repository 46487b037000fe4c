/**
 * Shared pieces of the benchmarks: statistics, the machine description, a
 * kernel over a KV file in a temp directory, and a probe that timestamps
 * every syscall as it reaches the broker.
 *
 * Inside a process `performance.now()` and `Date.now()` are the journal's
 * replay-safe clock, so no benchmark times anything from inside a program.
 * Timings are taken on the host: a program loops a call, and the time
 * between two consecutive arrivals of its syscalls at `Broker.dispatch` is
 * one full round trip (reply host → cell → Worker → program → next call →
 * Worker → cell → host) plus the broker's own work on the earlier call.
 *
 * @module
 */

import { join } from "node:path";
import { Kernel, type KernelOptions } from "../runtime/kernel.ts";
import type { AgentImage } from "../runtime/image.ts";

/** One measured figure, with its floor and target when it has them. */
export interface Row {
  /** Which measurement (e.g. `syscall_rtt.time.now.p50`). */
  name: string;
  value: number;
  unit: string;
  /** The floor measured in the same run, in the same unit. */
  floor?: number;
  floorName?: string;
  /** `value / floor`. */
  ratio?: number;
  /** The target, in words. */
  target?: string;
  /** Whether the target was reached (absent when the row has no target). */
  met?: boolean;
  /** A short note on how it was measured. */
  note?: string;
}

/** What one benchmark module returns. */
export interface Section {
  section: string;
  rows: Row[];
  /** Raw details (counts, stats) kept in the JSON only. */
  details?: Record<string, unknown>;
  /** The machine's 1-minute load average before and after the benchmark ran. */
  load?: { before: number; after: number };
}

/** Options every benchmark takes. */
export interface BenchOptions {
  /** Fewer rounds and smaller counts, for a quick look. */
  quick: boolean;
  /** Progress lines go here. */
  log: (line: string) => void;
}

/** The `p`-th percentile (0..100) of `values`, by nearest rank. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))];
}

/** The median of `values`. */
export function median(values: readonly number[]): number {
  return percentile(values, 50);
}

/** Rounds to `digits` significant-ish decimals for display and JSON. */
export function round(value: number, digits = 3): number {
  if (!Number.isFinite(value)) return value;
  const factor = 10 ** digits;
  return Math.round(value * factor) / factor;
}

/** A row comparing `value` with a floor, with the ratio filled in. */
export function against(
  row: Omit<Row, "ratio">,
): Row {
  const ratio = row.floor ? round(row.value / row.floor, 2) : undefined;
  return { ...row, value: round(row.value), floor: row.floor && round(row.floor), ratio };
}

/** The machine the run happened on. */
export interface Machine {
  cores: number;
  memoryMb: number;
  cpu: string;
  os: string;
  deno: string;
  v8: string;
}

/** Describes this machine. */
export async function machine(): Promise<Machine> {
  let cpu = "unknown";
  let memoryMb = NaN;
  try {
    // Deno asks for --allow-all to read /proc directly; a child process may.
    const output = await new Deno.Command("cat", { args: ["/proc/cpuinfo", "/proc/meminfo"] })
      .output();
    const info = new TextDecoder().decode(output.stdout);
    cpu = info.match(/model name\s*:\s*(.+)/)?.[1]?.trim() ?? cpu;
    memoryMb = Math.round(Number(info.match(/MemTotal:\s*(\d+)/)?.[1]) / 1024);
  } catch {
    // Not Linux: leave them unknown.
  }
  return {
    cores: navigator.hardwareConcurrency,
    memoryMb,
    cpu,
    os: `${Deno.build.os} ${Deno.build.arch}`,
    deno: Deno.version.deno,
    v8: Deno.version.v8,
  };
}

/**
 * The 1-minute load average (NaN where `/proc/loadavg` cannot be read): on
 * a shared machine it says how much else was running.
 */
export async function loadAverage(): Promise<number> {
  try {
    // Deno asks for --allow-sys for Deno.loadavg(); a child process may read it.
    const output = await new Deno.Command("cat", { args: ["/proc/loadavg"] }).output();
    return Number(new TextDecoder().decode(output.stdout).split(" ")[0]);
  } catch {
    return NaN;
  }
}

/** A kernel over a KV file in a fresh temp directory, with a workspace. */
export interface BenchKernel {
  kernel: Kernel;
  dir: string;
  workspace: string;
  store: string;
  /** Registers a program image whose entry is `source`; returns its tag. */
  program(name: string, source: string, image?: Partial<AgentImage>): Promise<string>;
  /** Closes the kernel and removes the directory. */
  close(): Promise<void>;
}

/** Limits that keep the per-process rate limit out of the way of a benchmark loop. */
export const BENCH_LIMITS = { syscallsPerSecond: 1_000_000 };

/** Opens a kernel over `dir/libos.db` (a new temp dir unless given). */
export async function openBenchKernel(
  options: KernelOptions & { dir?: string } = {},
): Promise<BenchKernel> {
  const dir = options.dir ??
    await Deno.realPath(await Deno.makeTempDir({ prefix: "libos-bench-" }));
  const workspace = join(dir, "ws");
  await Deno.mkdir(workspace, { recursive: true });
  const store = join(dir, "libos.db");
  const kernel = await Kernel.open({ limits: BENCH_LIMITS, ...options, store });
  return {
    kernel,
    dir,
    workspace,
    store,
    program: async (name, source, image = {}) =>
      (await kernel.images.register({
        name,
        version: "1.0.0",
        entry: "./main.ts",
        tools: [],
        capabilities: [],
        policy: {},
        ...image,
      } as AgentImage, { entrySource: source })).tag,
    close: async () => {
      await kernel.close();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

/**
 * Records, per pid, the host time (`performance.now()`) at which each of
 * its syscalls reached the broker, and the syscall's name. Wraps the
 * kernel's broker instance; `stop()` puts it back.
 */
export interface DispatchProbe {
  arrivals: Map<number, { at: number; name: string }[]>;
  /** Resolves once `pid` has made `count` syscalls through the broker. */
  until(pid: number, count: number): Promise<void>;
  stop(): void;
}

/** Starts a {@link DispatchProbe} on `kernel`. */
export function probeDispatch(kernel: Kernel): DispatchProbe {
  const broker = kernel.broker;
  const original = broker.dispatch;
  const arrivals = new Map<number, { at: number; name: string }[]>();
  const waiters: { pid: number; count: number; resolve: () => void }[] = [];
  broker.dispatch = function (ctx, request) {
    const at = performance.now();
    let list = arrivals.get(ctx.pid);
    if (!list) arrivals.set(ctx.pid, list = []);
    list.push({ at, name: request.name });
    for (let i = waiters.length - 1; i >= 0; i--) {
      const w = waiters[i];
      if (w.pid === ctx.pid && list.length >= w.count) {
        waiters.splice(i, 1);
        w.resolve();
      }
    }
    return original.call(broker, ctx, request);
  };
  return {
    arrivals,
    until: (pid, count) =>
      new Promise((resolve) => {
        if ((arrivals.get(pid)?.length ?? 0) >= count) resolve();
        else waiters.push({ pid, count, resolve });
      }),
    stop: () => {
      broker.dispatch = original;
    },
  };
}

/** Differences between consecutive numbers. */
export function gaps(times: readonly number[]): number[] {
  const out: number[] = [];
  for (let i = 1; i < times.length; i++) out.push(times[i] - times[i - 1]);
  return out;
}

/** Memory after a full collection (when run with `--expose-gc`). */
export function collectedMemory(): Deno.MemoryUsage {
  (globalThis as { gc?: () => void }).gc?.();
  return Deno.memoryUsage();
}

/** One OS process of a tree, as `ps` sees it. */
export interface OsProcess {
  pid: number;
  ppid: number;
  /** Resident set size, in KiB. */
  rssKiB: number;
  command: string;
}

/**
 * The OS process `root` and all its descendants, with their RSS, read
 * with `ps` (Deno reads `/proc` only with `--allow-all`).
 */
export async function treeRss(root: number): Promise<{ totalKiB: number; processes: OsProcess[] }> {
  const child = new Deno.Command("ps", {
    args: ["-e", "-o", "pid=,ppid=,rss=,comm="],
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const output = await child.output();
  const all: OsProcess[] = new TextDecoder().decode(output.stdout).split("\n")
    .map((line) => line.trim().match(/^(\d+)\s+(\d+)\s+(\d+)\s+(.*)$/))
    .filter((m): m is RegExpMatchArray => m !== null)
    .map((m) => ({ pid: +m[1], ppid: +m[2], rssKiB: +m[3], command: m[4] }))
    .filter((p) => p.pid !== child.pid);
  const inTree = new Set([root]);
  for (let grew = true; grew;) {
    grew = false;
    for (const p of all) {
      if (!inTree.has(p.pid) && inTree.has(p.ppid)) {
        inTree.add(p.pid);
        grew = true;
      }
    }
  }
  const processes = all.filter((p) => inTree.has(p.pid));
  if (!processes.some((p) => p.pid === root)) {
    throw new Error(`Cannot read the RSS of process ${root}: ps does not list it`);
  }
  return { totalKiB: processes.reduce((n, p) => n + p.rssKiB, 0), processes };
}

/** The permissions a bench subprocess runs with (`deno run` flags; the host's own minus the network). */
export const HOST_FLAGS: readonly string[] = [
  "--no-prompt",
  "--allow-read",
  "--allow-write",
  "--allow-run",
  "--allow-env",
  "--allow-ffi",
];

/** Runs `deno run` on a bench script with the usual permissions; returns its last JSON line. */
export async function runHost<T>(
  script: string,
  args: string[],
  options: { gc?: boolean } = {},
): Promise<T> {
  const flags = [...HOST_FLAGS];
  if (options.gc) flags.push("--v8-flags=--expose-gc");
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", ...flags, script, ...args],
    stdin: "null",
  }).output();
  const stdout = new TextDecoder().decode(output.stdout);
  if (output.code !== 0) {
    const stderr = new TextDecoder().decode(output.stderr);
    throw new Error(`Cannot run bench host "${script}": exit ${output.code}\n${stdout}${stderr}`);
  }
  return JSON.parse(stdout.trim().split("\n").at(-1)!) as T;
}
