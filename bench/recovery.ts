/**
 * Recovery: time from host start (`Kernel.open` + `recover()`) until every
 * live process of the store is resumed. A parked process counts as resumed
 * once `recover()` has re-armed its wait; a runnable one once its cell has
 * started and its first syscall reached the broker.
 *
 * Two stores of 1,000 live processes each (quick: fewer): all parked
 * (made as in `parked.ts`), and all runnable (spawned, never started; each
 * parks on its first syscall once resumed), admitted through the run queue.
 * Under the default per-tree sharing each independent root needs a fresh
 * cell of its own, so the rate bare cells start at on this machine,
 * measured after, bounds how fast they can resume; the runnable store is
 * recovered a second time with `cellSharing: "principal"`, where the roots
 * share cells and Worker starts bound it. A runnable one is past
 * its next syscall once that call has been handled and it is `blocked`
 * again; its target is against the rate Workers start at inside one
 * running cell (`_floors.ts`): 1,000 of them within 1.2x the time that
 * rate allows.
 *
 * @module
 */

import { join } from "node:path";
import { type CellSharing, Kernel } from "../runtime/kernel.ts";
import {
  type BenchOptions,
  openBenchKernel,
  probeDispatch,
  round,
  type Row,
  type Section,
} from "./_common.ts";
import { cellStartRate, START_IN_FLIGHT, workerCellStartRate } from "./_floors.ts";
import { PARKER, PARKER_IMAGE, synthesizeParked } from "./parked.ts";

const TARGET_MS = 2_000;

/** States a process ends in: one of them before blocking means it did not resume. */
const ENDED = new Set(["exited", "failed", "killed"]);

/** Most the runnable ones may take, as a multiple of the time Worker starts alone take. */
const WORKER_START_SLACK = 1.2;

/** Builds a store with `count` processes, parked or runnable; returns its dir and pids. */
async function build(
  count: number,
  kind: "parked" | "runnable",
): Promise<{ dir: string; pids: number[] }> {
  const bench = await openBenchKernel();
  const tag = await bench.program("parker", PARKER, PARKER_IMAGE);
  let pids: number[];
  if (kind === "parked") {
    pids = await synthesizeParked(bench.kernel, { tag, workspace: bench.workspace }, { count });
  } else {
    pids = [];
    for (let i = 0; i < count; i++) {
      pids.push((await bench.kernel.spawn({ image: tag, workspace: bench.workspace })).pid);
    }
  }
  await bench.kernel.close();
  return { dir: bench.dir, pids };
}

/** Opens a host over `dir` and times it until every pid is resumed. */
async function recoverAll(
  dir: string,
  pids: readonly number[],
  kind: "parked" | "runnable",
  cellSharing: CellSharing = "tree",
): Promise<{ openMs: number; recoverMs: number; resumedMs: number; pastSyscallMs?: number }> {
  const t0 = performance.now();
  const kernel = await Kernel.open({ store: join(dir, "libos.db"), cellSharing });
  const t1 = performance.now();
  const probe = probeDispatch(kernel);
  // A runnable process is past its next syscall once it is blocked on it again.
  const waiting = new Set(pids);
  let pastAll!: () => void;
  let failed!: (error: Error) => void;
  const past = new Promise<number>((resolve, reject) => {
    pastAll = () => resolve(performance.now());
    failed = reject;
  });
  past.catch(() => {}); // awaited below; a failure before then is not unhandled
  const unsubscribe = kernel.processes.subscribe((record, event) => {
    if (event.to === "blocked" && waiting.delete(record.pid) && waiting.size === 0) pastAll();
    else if (ENDED.has(event.to) && waiting.has(record.pid)) {
      failed(new Error(`Cannot recover process ${record.pid}: it ${event.to} (${event.reason})`));
    }
  });
  try {
    await kernel.recover();
    const t2 = performance.now();
    if (kind === "parked") return { openMs: t1 - t0, recoverMs: t2 - t1, resumedMs: t2 - t0 };
    await Promise.all(pids.map((pid) => probe.until(pid, 1)));
    const t3 = performance.now();
    const t4 = await past;
    return { openMs: t1 - t0, recoverMs: t2 - t1, resumedMs: t3 - t0, pastSyscallMs: t4 - t0 };
  } finally {
    unsubscribe();
    probe.stop();
    await kernel.close();
  }
}

/**
 * Measures recovery of a store with 1,000 live processes.
 *
 * @example
 * ```ts ignore
 * const section = await benchRecovery({ quick: true, log: console.log });
 * ```
 */
export async function benchRecovery(options: BenchOptions): Promise<Section> {
  const parkedCount = options.quick ? 300 : 1_000;
  const runnableCount = options.quick ? 100 : 1_000;
  const rows: Row[] = [];
  const details: Record<string, unknown> = {};
  for (const [kind, count] of [["parked", parkedCount], ["runnable", runnableCount]] as const) {
    const { dir, pids } = await build(count, kind);
    try {
      const result = await recoverAll(dir, pids, kind);
      details[kind] = { count, ...result };
      options.log(
        `  ${count} ${kind}: open ${result.openMs.toFixed(0)} ms, recover() ${
          result.recoverMs.toFixed(0)
        } ms, ` +
          `all resumed after ${result.resumedMs.toFixed(0)} ms`,
      );
      rows.push({
        name: `recovery.${count}_${kind}.all_resumed`,
        value: round(result.resumedMs, 1),
        unit: "ms",
        target: `1,000 live resumed < ${TARGET_MS} ms`,
        met: count >= 1_000 ? result.resumedMs < TARGET_MS : undefined,
        note: kind === "parked"
          ? "Kernel.open + recover() re-arming every wait"
          : "Kernel.open + recover() + a Worker and first syscall for each, through the run queue",
      });
      if (kind === "runnable") {
        const floor = await cellStartRate(options.quick ? 32 : 64, 16);
        details.cellStartsPerSecond = floor;
        options.log(`  bare cells start at ${floor.toFixed(0)}/s, 16 at once`);
        const workerRate = await workerCellStartRate(options.quick ? 2000 : 5000, START_IN_FLIGHT);
        details.workerStartsPerSecond = workerRate;
        const allowedMs = count / workerRate * 1000;
        options.log(
          `  all past their next syscall after ${result.pastSyscallMs!.toFixed(0)} ms; ` +
            `Workers start in a running cell at ${workerRate.toFixed(0)}/s: ${
              allowedMs.toFixed(0)
            } ms for ${count}`,
        );
        /** The row of `ms` until all were past their next syscall, against the Worker-start floor. */
        const pastSyscall = (name: string, ms: number, note: string): Row => ({
          name: `recovery.${count}_${name}.all_past_next_syscall`,
          value: round(ms, 1),
          unit: "ms",
          floor: round(allowedMs, 1),
          floorName:
            `${count} Worker starts at the rate of one running cell (${START_IN_FLIGHT} in flight)`,
          ratio: round(ms / allowedMs, 2),
          target: `<= ${WORKER_START_SLACK}x the Worker-start floor`,
          met: ms <= WORKER_START_SLACK * allowedMs,
          note,
        });
        rows.push(pastSyscall(
          "runnable",
          result.pastSyscallMs!,
          "default per-tree sharing: every independent root needs a cell of its own, so cell starts bound it",
        ));
        rows.push({
          name: `recovery.${count}_runnable.per_second`,
          value: round(count / result.resumedMs * 1000, 1),
          unit: "procs/s",
          floor: round(floor, 1),
          floorName: "bare cells started per second, 16 at once",
          ratio: round(count / result.resumedMs * 1000 / floor, 2),
          note: `the floor is a ceiling: ${count} fresh cells need ≥ ${
            round(count / floor, 1)
          } s here`,
        });
        // The same store shape with per-principal sharing: the roots share
        // cells, so Worker starts bound it rather than cell starts.
        const shared = await build(count, "runnable");
        try {
          const principal = await recoverAll(shared.dir, shared.pids, "runnable", "principal");
          details.principal = { count, ...principal };
          options.log(
            `  with cellSharing "principal": all past their next syscall after ${
              principal.pastSyscallMs!.toFixed(0)
            } ms`,
          );
          rows.push(pastSyscall(
            "runnable_principal",
            principal.pastSyscallMs!,
            'cellSharing "principal": the roots share cells, admitted through the run queue',
          ));
        } finally {
          await Deno.remove(shared.dir, { recursive: true }).catch(() => {});
        }
      }
    } finally {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  }
  return { section: "recovery", rows, details };
}
