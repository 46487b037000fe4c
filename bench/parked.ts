/**
 * Parked-process density and wake-up time. A parked process (blocked on
 * `time.sleep` or `event.wait`) holds no cell; it is a process record, a
 * journal `wait` record and an index key in the KV file.
 *
 * Parking 10,000 processes through real cells takes far longer than this
 * benchmark may (each needs a cell start; the rate is measured on a real
 * sample first). The rest are made by running each process's first
 * syscall straight through `Broker.dispatch`, exactly as an `Execution`
 * would relay it from a cell: `Kernel.spawn`, the `running` transition,
 * then the real `time.sleep` / `event.wait` handler, which parks it with
 * the real `Waits.park`. Only the cell is skipped. The benchmark checks
 * that a real and a made parked process leave the same keys and record
 * fields, and that made ones wake and replay to the right result.
 *
 * The host that is measured is a subprocess (this module run with
 * `host DIR`): it opens a kernel over the store, recovers, and reports its
 * RSS after a full collection; a host over a store with few parked
 * processes gives the baseline.
 *
 * @module
 */

import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { PARKED } from "../broker/broker.ts";
import { Kernel } from "../runtime/kernel.ts";
import {
  type BenchOptions,
  collectedMemory,
  openBenchKernel,
  round,
  type Row,
  runHost,
  type Section,
} from "./_common.ts";

/** Sleeps an hour, or waits for its topic; an interrupt ends either. */
export const PARKER = `export default async function main(sys, input) {
  try {
    if (input && input.topic) return { got: (await sys.event.wait(input.topic)).data };
    await sys.time.sleep(3_600_000);
    return "slept";
  } catch (error) {
    if (error.code === "EINTR") return "interrupted";
    throw error;
  }
}`;

/** The image the parked processes run. */
export const PARKER_IMAGE = { capabilities: ["time:sleep:*", "event:wait:**"] };

/** The topic of the `i`-th event waiter. */
export const topicOf = (i: number): string => `bench.wake.${i}`;

/**
 * Parks `count` new processes of image `tag` without cells: spawn, mark
 * running, and relay the program's first syscall through the broker as
 * its cell would. Every `eventEvery`-th one waits on its own topic
 * (`topicOf(i)`) instead of sleeping. Returns the pids, the `i`-th at `i`.
 */
export async function synthesizeParked(
  kernel: Kernel,
  target: { tag: string; workspace: string },
  options: { count: number; eventEvery?: number; concurrency?: number },
): Promise<number[]> {
  const pids: number[] = [];
  const one = async (i: number) => {
    const topic = options.eventEvery && i % options.eventEvery === 0 ? topicOf(i) : undefined;
    const spawned = await kernel.spawn({
      image: target.tag,
      workspace: target.workspace,
      input: topic ? { topic } : null,
    });
    const record = await kernel.processes.transition(spawned.pid, "running", {
      patch: { startedAt: kernel.now() },
    });
    const request = topic
      ? { id: 1, name: "event.wait", args: { topic } }
      : { id: 1, name: "time.sleep", args: { ms: 3_600_000 } };
    const reply = await kernel.broker.dispatch({
      pid: record.pid,
      image: record.image,
      workspace: record.workspace,
      policy: record.policy,
      seq: 1,
    }, request as never);
    if (reply !== PARKED) {
      throw new Error(`Cannot park process ${record.pid}: ${JSON.stringify(reply)}`);
    }
    pids[i] = record.pid;
  };
  const concurrency = options.concurrency ?? 32;
  for (let i = 0; i < options.count; i += concurrency) {
    const batch = [];
    for (let j = i; j < Math.min(options.count, i + concurrency); j++) batch.push(one(j));
    await Promise.all(batch);
  }
  return pids;
}

/** The shape of what a process leaves in KV: key paths with its pid replaced, and record fields. */
async function footprint(kernel: Kernel, pid: number): Promise<string[]> {
  const out = new Set<string>();
  for await (const entry of kernel.store.kv.list({ prefix: [] })) {
    const [prefix, first, second] = entry.key;
    if (first !== pid && !(prefix === "timer" && second === pid)) continue;
    const owner = prefix === "timer" ? 2 : 1;
    const shape = entry.key.map((part, index) =>
      index === owner
        ? "PID"
        : typeof part === "number" || /^[0-9a-f-]{16,}$/.test(String(part))
        ? "N"
        : part
    );
    const value = entry.value as Record<string, unknown> | null;
    const fields = value && typeof value === "object"
      ? Object.keys(value).filter((k) => !["at", "createdAt", "updatedAt", "startedAt"].includes(k))
        .sort().join(",")
      : typeof value;
    out.add(`${JSON.stringify(shape)} {${fields}}`);
  }
  const record = await kernel.processes.require(pid);
  out.add(`state=${record.state} waitingOn=${record.waitingOn} waitSeq=${record.waitSeq}`);
  return [...out].sort();
}

/** Resolves once every pid is blocked; rejects when one ends. */
function allBlocked(kernel: Kernel, pids: readonly number[]): Promise<void> {
  const pending = new Set(pids);
  return new Promise((resolve, reject) => {
    const stop = kernel.processes.subscribe((record, event) => {
      if (!pending.has(record.pid)) return;
      if (event.to === "blocked") pending.delete(record.pid);
      else if (["exited", "failed", "killed"].includes(event.to)) {
        stop();
        reject(new Error(`Process ${record.pid} ${event.to} instead of parking: ${event.reason}`));
      }
      if (pending.size === 0) {
        stop();
        resolve();
      }
    });
  });
}

/** What a measuring host reports. */
interface HostReport {
  openMs: number;
  recoverMs: number;
  rss: number;
  heapUsed: number;
  blocked: number;
  interrupt: { toRunnableMs: number; toExitMs: number; result: unknown };
  event?: { toRunnableMs: number; toExitMs: number; result: unknown };
}

/** The measuring host: recovers the store in `dir`, measures, wakes one by interrupt and one by event. */
async function host(dir: string, wake: { sleeper: number; waiter?: number; topic?: string }) {
  const t0 = performance.now();
  const kernel = await Kernel.open({ store: join(dir, "libos.db") });
  const t1 = performance.now();
  await kernel.recover();
  const t2 = performance.now();
  try {
    const memory = collectedMemory();
    const blocked = (await kernel.processes.list()).filter((p) => p.state === "blocked").length;
    const timeWake = async (pid: number, wakeIt: () => Promise<unknown>) => {
      let runnableAt = NaN;
      const stop = kernel.processes.subscribe((record, event) => {
        if (record.pid === pid && event.to === "runnable" && Number.isNaN(runnableAt)) {
          runnableAt = performance.now();
        }
      });
      const started = performance.now();
      await wakeIt();
      const end = await kernel.waitFor(pid, { timeoutMs: 60_000 });
      const exitAt = performance.now();
      stop();
      return {
        toRunnableMs: runnableAt - started,
        toExitMs: exitAt - started,
        result: end.result ?? end.error,
      };
    };
    const report: HostReport = {
      openMs: t1 - t0,
      recoverMs: t2 - t1,
      rss: memory.rss,
      heapUsed: memory.heapUsed,
      blocked,
      interrupt: await timeWake(wake.sleeper, () => kernel.signal(wake.sleeper, "interrupt")),
    };
    if (wake.waiter !== undefined) {
      report.event = await timeWake(wake.waiter, () => kernel.postEvent(wake.topic!, "hello"));
    }
    return report;
  } finally {
    await kernel.close();
  }
}

/** Builds a store in a temp dir with `count` parked processes; returns the dir and whom to wake. */
async function buildStore(
  count: number,
  options: BenchOptions & { realSample: number },
): Promise<{
  dir: string;
  wake: { sleeper: number; waiter: number; topic: string };
  realParkRate: number;
  synthRate: number;
  sameFootprint: boolean;
}> {
  const bench = await openBenchKernel({ maxCells: 16 });
  try {
    const tag = await bench.program("parker", PARKER, PARKER_IMAGE);
    // A real sample through cells: the rate, and a footprint to compare with.
    const real: number[] = [];
    for (let i = 0; i < options.realSample; i++) {
      real.push((await bench.kernel.spawn({ image: tag, workspace: bench.workspace })).pid);
    }
    const blocked = allBlocked(bench.kernel, real);
    const t0 = performance.now();
    for (const pid of real) bench.kernel.start(pid);
    await blocked;
    for (const pid of real) {
      for (let e = bench.kernel.executionOf(pid); e; e = bench.kernel.executionOf(pid)) {
        await e.settled();
      }
    }
    const realParkRate = real.length / (performance.now() - t0) * 1000;
    const [made] = await synthesizeParked(bench.kernel, { tag, workspace: bench.workspace }, {
      count: 1,
    });
    const a = await footprint(bench.kernel, real[0]);
    const b = await footprint(bench.kernel, made);
    const sameFootprint = JSON.stringify(a) === JSON.stringify(b);
    if (!sameFootprint) {
      const only = (x: string[], y: string[]) => x.filter((line) => !y.includes(line)).join("; ");
      options.log(`  footprints differ: real only: ${only(a, b)} | made only: ${only(b, a)}`);
    }
    const rest = Math.max(0, count - real.length - 1);
    const t1 = performance.now();
    const pids = await synthesizeParked(bench.kernel, { tag, workspace: bench.workspace }, {
      count: rest,
      eventEvery: 100,
    });
    const synthRate = rest / (performance.now() - t1) * 1000;
    await bench.kernel.journal.flush();
    return {
      dir: bench.dir,
      wake: { sleeper: pids.at(-1) ?? made, waiter: pids[0], topic: topicOf(0) },
      realParkRate,
      synthRate,
      sameFootprint,
    };
  } finally {
    await bench.kernel.close(); // keep the directory for the measuring host
  }
}

/**
 * Measures memory per parked process at 10,000 (quick: 2,000) and wake time.
 *
 * @example
 * ```ts ignore
 * const section = await benchParked({ quick: true, log: console.log });
 * ```
 */
export async function benchParked(options: BenchOptions): Promise<Section> {
  const total = options.quick ? 2_000 : 10_000;
  const base = 50;
  const self = fileURLToPath(import.meta.url);
  const small = await buildStore(base, { ...options, realSample: 16 });
  const big = await buildStore(total, { ...options, realSample: 32 });
  options.log(
    `  real parking through cells: ${big.realParkRate.toFixed(1)}/s ` +
      `(${(total / big.realParkRate / 60).toFixed(1)} min for ${total}); made directly: ${
        big.synthRate.toFixed(0)
      }/s`,
  );
  try {
    const baseline = await runHost<HostReport>(self, [
      "host",
      small.dir,
      JSON.stringify(small.wake),
    ], {
      gc: true,
    });
    const parked = await runHost<HostReport>(self, ["host", big.dir, JSON.stringify(big.wake)], {
      gc: true,
    });
    const perProcess = (parked.rss - baseline.rss) / (total - base);
    const mb = parked.rss / (1 << 20);
    options.log(
      `  host RSS ${(baseline.rss / (1 << 20)).toFixed(1)} MB with ${base}, ${
        mb.toFixed(1)
      } MB with ${total}; ` +
        `wake by interrupt ${parked.interrupt.toRunnableMs.toFixed(1)} ms to runnable`,
    );
    const rows: Row[] = [
      {
        name: `parked.host_rss_at_${total}`,
        value: round(mb, 1),
        unit: "MB",
        target: total === 10_000
          ? "< 300 MB at 10,000 parked"
          : "< 300 MB at 10,000 parked (quick: fewer)",
        met: mb < 300,
        note: `baseline ${round(baseline.rss / (1 << 20), 1)} MB with ${base} parked`,
      },
      {
        name: "parked.rss_per_process",
        value: round(perProcess / 1024, 2),
        unit: "KiB",
        note: `heap in use ${round(baseline.heapUsed / (1 << 20), 1)} → ${
          round(parked.heapUsed / (1 << 20), 1)
        } MB`,
      },
      {
        name: "parked.wake_interrupt_to_runnable",
        value: round(parked.interrupt.toRunnableMs),
        unit: "ms",
        target: "< 20 ms",
        met: parked.interrupt.toRunnableMs < 20,
        note: "signal → wait completed and process runnable (durable)",
      },
      {
        name: "parked.wake_interrupt_to_exit",
        value: round(parked.interrupt.toExitMs),
        unit: "ms",
        note: `includes a cold cell and replay; result ${JSON.stringify(parked.interrupt.result)}`,
      },
      {
        name: "parked.wake_event_to_runnable",
        value: round(parked.event?.toRunnableMs ?? NaN),
        unit: "ms",
        target: "< 20 ms",
        met: (parked.event?.toRunnableMs ?? Infinity) < 20,
        note: "event post → waiter runnable (durable)",
      },
      {
        name: "parked.wake_event_to_exit",
        value: round(parked.event?.toExitMs ?? NaN),
        unit: "ms",
        note: `includes a cold cell and replay; result ${JSON.stringify(parked.event?.result)}`,
      },
      {
        name: `parked.recover_${total}_parked`,
        value: round(parked.openMs + parked.recoverMs, 1),
        unit: "ms",
        note: "Kernel.open + recover() re-arming every wait",
      },
    ];
    return {
      section: "parked",
      rows,
      details: {
        total,
        baselineCount: base,
        realParkRatePerSecond: big.realParkRate,
        synthesizedPerSecond: big.synthRate,
        sameFootprintAsReal: big.sameFootprint && small.sameFootprint,
        method: "synthesized through Broker.dispatch without cells, except a real sample",
        baseline,
        parked,
      },
    };
  } finally {
    await Deno.remove(small.dir, { recursive: true }).catch(() => {});
    await Deno.remove(big.dir, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main && Deno.args[0] === "host") {
  console.log(JSON.stringify(await host(Deno.args[1], JSON.parse(Deno.args[2]))));
}
