/**
 * Durable syscalls per second with many processes at once. Each process
 * loops `obj.put` (a change of the store alone: the object, its journal
 * record and its audit record are one commit to the KV file) for a few
 * seconds of its own clock. The rate
 * is counted on the host over the window in which every process was
 * running: from the last process's first call to the first process's last
 * call. The journal's group-commit counters tell how calls were batched.
 * When the cells start so slowly that this window is shorter than half the
 * loop (a loaded machine), the run is repeated once with each process
 * looping longer by that start-up spread.
 *
 * Its floor is a ceiling: as many bare cells (a zero-permission subprocess
 * with an echoing Worker) looping one message each, with no runtime at all,
 * measured just before. No runtime whose programs live in cells can pass
 * that rate on this machine. A second floor is one multi-Worker cell (one
 * subprocess hosting as many Workers as there are processes, routed by
 * slot) with one caller per Worker: the ceiling of a runtime whose
 * processes share a cell.
 *
 * @module
 */

import { cellsThroughput, workerCellThroughput } from "./_floors.ts";
import {
  type BenchOptions,
  openBenchKernel,
  probeDispatch,
  round,
  type Row,
  type Section,
} from "./_common.ts";

const LOOP = `export default async function main(sys, input) {
  await sys.obj.put("self", "k", 0);
  const end = Date.now() + input.ms;
  let i = 1;
  while (Date.now() < end) {
    await sys.obj.put("self", "k" + (i % 16), i);
    i++;
  }
  return i;
}`;

const TARGET = 10_000;

/** Share of the multi-Worker cell's echo rate the durable rate should reach at 64 processes. */
const CELL_SHARE = 0.6;

/** Runs `count` looping processes at once; returns the steady-state rate and journal counters. */
async function runMany(
  count: number,
  ms: number,
): Promise<Record<string, number>> {
  const bench = await openBenchKernel({ maxCells: count });
  const probe = probeDispatch(bench.kernel);
  try {
    const tag = await bench.program("put", LOOP);
    const before = { ...bench.kernel.journal.stats };
    const pids: number[] = [];
    for (let i = 0; i < count; i++) {
      pids.push(
        (await bench.kernel.spawn({ image: tag, workspace: bench.workspace, input: { ms } }))
          .pid,
      );
    }
    const started = performance.now();
    for (const pid of pids) bench.kernel.start(pid);
    const ends = await Promise.all(pids.map((pid) => bench.kernel.waitFor(pid)));
    const wall = performance.now() - started;
    const failed = ends.filter((e) => e.state !== "exited");
    if (failed.length) {
      throw new Error(
        `Cannot measure throughput: ${failed.length} processes ${failed[0].state}: ${
          failed[0].error?.message
        }`,
      );
    }
    await bench.kernel.journal.flush();
    const after = bench.kernel.journal.stats;
    const series = pids.map((pid) =>
      (probe.arrivals.get(pid) ?? []).filter((a) => a.name === "obj.put").map((a) => a.at)
    );
    const from = Math.max(...series.map((s) => s[0]));
    const to = Math.min(...series.map((s) => s.at(-1)!));
    let inWindow = 0;
    for (const s of series) for (const t of s) if (t >= from && t <= to) inWindow++;
    const total = series.reduce((n, s) => n + s.length, 0);
    const commits = after.commits - before.commits;
    const writes = after.writes - before.writes;
    return {
      processes: count,
      durableCallsPerSecond: to > from ? (inWindow / (to - from)) * 1000 : NaN,
      windowMs: to - from,
      startSpreadMs: from - Math.min(...series.map((s) => s[0])),
      totalCalls: total,
      wallMs: wall,
      overallCallsPerSecond: (total / wall) * 1000,
      commits,
      writes,
      writesPerCommit: writes / Math.max(1, commits),
      largestBatch: after.largestBatch,
    };
  } finally {
    probe.stop();
    await bench.close();
  }
}

/**
 * {@link runMany}, run again once with each process looping longer by the
 * time its cells took to start when they started too slowly for every
 * process to run at once for half of `ms` (a loaded machine).
 */
async function steadyRun(
  count: number,
  ms: number,
  options: BenchOptions,
): Promise<Record<string, number>> {
  const run = await runMany(count, ms);
  if (run.windowMs >= ms / 2) return run;
  options.log(
    `  ${count} processes were all running for ${Math.max(0, run.windowMs).toFixed(0)} ms only ` +
      `(cells took ${(run.startSpreadMs / 1000).toFixed(1)} s to start); again, longer`,
  );
  return { ...await runMany(count, ms + 1.5 * run.startSpreadMs), retried: 1 };
}

/**
 * Measures durable syscalls per second across 8, 32 and 64 processes.
 *
 * @example
 * ```ts ignore
 * const section = await benchThroughput({ quick: true, log: console.log });
 * ```
 */
export async function benchThroughput(options: BenchOptions): Promise<Section> {
  const counts = [8, 32, 64];
  const ms = options.quick ? 3000 : 6000;
  const runs: Record<string, number>[] = [];
  for (const count of counts) {
    const floor = await cellsThroughput(count, options.quick ? 2000 : 3000);
    const cellFloor = await workerCellThroughput(count, options.quick ? 2000 : 3000);
    const run: Record<string, number> = {
      ...await steadyRun(count, ms + (count >= 32 ? 2000 : 0), options),
      floor,
      cellFloor,
    };
    runs.push(run);
    options.log(
      `  ${count} bare cells echo ${floor.toFixed(0)} round trips/s, one cell with ${count} ` +
        `Workers ${cellFloor.toFixed(0)}; ` +
        `${count} processes: ${run.durableCallsPerSecond.toFixed(0)} durable calls/s ` +
        `(window ${(run.windowMs / 1000).toFixed(1)} s), ${
          run.writesPerCommit.toFixed(1)
        } writes/commit, ` +
        `largest batch ${run.largestBatch}`,
    );
  }
  const rows: Row[] = runs.flatMap((run) => [
    {
      name: `throughput.obj_put.${run.processes}_procs`,
      value: Math.round(run.durableCallsPerSecond),
      unit: "calls/s",
      floor: Math.round(run.floor),
      floorName: `${run.processes} bare cells' echo round trips/s`,
      ratio: round(run.durableCallsPerSecond / run.floor, 2),
      target: `>= ${TARGET} durable calls/s`,
      met: run.durableCallsPerSecond >= TARGET,
      note: `window ${round(run.windowMs / 1000, 1)} s; the floor is a ceiling here`,
    },
    {
      name: `throughput.obj_put.${run.processes}_procs.vs_worker_cell`,
      value: Math.round(run.durableCallsPerSecond),
      unit: "calls/s",
      floor: Math.round(run.cellFloor),
      floorName: `one cell with ${run.processes} Workers: echo round trips/s`,
      ratio: round(run.durableCallsPerSecond / run.cellFloor, 2),
      target: run.processes === 64
        ? `>= ${CELL_SHARE * 100}% of multi-Worker cell echo`
        : undefined,
      met: run.processes === 64
        ? run.durableCallsPerSecond >= CELL_SHARE * run.cellFloor
        : undefined,
    },
    {
      name: `throughput.obj_put.${run.processes}_procs.writes_per_commit`,
      value: round(run.writesPerCommit, 1),
      unit: "writes",
      note: `${run.commits} commits, largest batch ${run.largestBatch}`,
    },
  ]);
  return { section: "throughput", rows, details: { runs, secondsPerProcess: ms / 1000 } };
}
