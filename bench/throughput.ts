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
 * Each rate is set against the floor of its own layout, measured in the
 * same run: the same cells and Workers echoing one message at a time each,
 * with no runtime at all, a ceiling no runtime whose programs live in cells
 * can pass on this machine. By default each root process has a cell of its
 * own, so N processes run in N cells, and the floor is N bare cells (a
 * zero-permission subprocess with an echoing Worker), measured just before.
 * At 64 processes the loop runs again with `cellSharing: "principal"` and
 * the kernel's default Workers per cell, so the roots share a few cells;
 * its floor is as many multi-Worker cells (one subprocess hosting a Worker
 * per slot, routed by slot) with as many Workers each as the host's cell
 * table showed while every process was running, measured just after.
 *
 * @module
 */

import { cellsThroughput, workerCellsThroughput } from "./_floors.ts";
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

/** Durable calls per second the runtime aims at on a quiet machine. */
const GOAL = 10_000;

/** Share of its layout's echo floor the durable rate should reach at 64 processes. */
const FLOOR_SHARE = 0.6;

/** How the processes of a run are placed in cells. */
type Layout = "tree" | "principal";

/** One run's steady-state rate and journal counters. */
interface Run {
  processes: number;
  durableCallsPerSecond: number;
  windowMs: number;
  startSpreadMs: number;
  totalCalls: number;
  wallMs: number;
  overallCallsPerSecond: number;
  commits: number;
  writes: number;
  writesPerCommit: number;
  largestBatch: number;
  /** The Workers of each cell serving the run once every process had made a call. */
  cells?: number[];
  /** 1 when the run was repeated, longer, because its cells started slowly. */
  retried?: number;
}

/**
 * Runs `count` looping processes at once; returns the steady-state rate and
 * journal counters. With layout `tree`, each root has a cell of its own;
 * with `principal`, the roots (all of the local operator) share cells of
 * the kernel's default Workers per cell.
 */
async function runMany(count: number, ms: number, layout: Layout): Promise<Run> {
  const bench = await openBenchKernel(
    layout === "tree" ? { maxCells: count } : { maxCells: count, cellSharing: "principal" },
  );
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
    const ending = Promise.all(pids.map((pid) => bench.kernel.waitFor(pid)));
    // The cells serving the run once every process has made its first call.
    const cells = await Promise.race([
      Promise.all(pids.map((pid) => probe.until(pid, 1))).then(() =>
        bench.kernel.cells.table().filter((row) => row.workers > 0).map((row) => row.workers)
      ),
      ending.then(() => undefined),
    ]);
    const ends = await ending;
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
      cells,
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
  layout: Layout,
  options: BenchOptions,
): Promise<Run> {
  const run = await runMany(count, ms, layout);
  if (run.windowMs >= ms / 2) return run;
  options.log(
    `  ${count} processes were all running for ${Math.max(0, run.windowMs).toFixed(0)} ms only ` +
      `(cells took ${(run.startSpreadMs / 1000).toFixed(1)} s to start); again, longer`,
  );
  return { ...await runMany(count, ms + 1.5 * run.startSpreadMs, layout), retried: 1 };
}

/**
 * Measures durable syscalls per second across 8, 32 and 64 processes, each
 * against the echo floor of its layout; at 64, also with processes sharing
 * cells.
 *
 * @example
 * ```ts ignore
 * const section = await benchThroughput({ quick: true, log: console.log });
 * ```
 */
export async function benchThroughput(options: BenchOptions): Promise<Section> {
  const counts = [8, 32, 64];
  const ms = options.quick ? 3000 : 6000;
  const floorMs = options.quick ? 2000 : 3000;
  const runs: (Run & { layout: Layout; floor: number })[] = [];
  const rows: Row[] = [];
  const rateRow = (
    name: string,
    run: Run,
    floor: number,
    floorName: string,
    note: string,
  ): Row => ({
    name,
    value: Math.round(run.durableCallsPerSecond),
    unit: "calls/s",
    floor: Math.round(floor),
    floorName,
    ratio: round(run.durableCallsPerSecond / floor, 2),
    target: run.processes === 64
      ? `>= ${FLOOR_SHARE * 100}% of the floor (goal ${GOAL} calls/s on a quiet machine)`
      : undefined,
    met: run.processes === 64 ? run.durableCallsPerSecond >= FLOOR_SHARE * floor : undefined,
    note: `${note}; window ${round(run.windowMs / 1000, 1)} s, ${
      round(run.writesPerCommit, 1)
    } writes/commit (${run.commits} commits, largest batch ${run.largestBatch})`,
  });
  for (const count of counts) {
    const floor = await cellsThroughput(count, floorMs);
    const run = await steadyRun(count, ms + (count >= 32 ? 2000 : 0), "tree", options);
    runs.push({ ...run, layout: "tree", floor });
    options.log(
      `  ${count} bare cells echo ${floor.toFixed(0)} round trips/s; ` +
        `${count} processes, a cell each: ${
          run.durableCallsPerSecond.toFixed(0)
        } durable calls/s ` +
        `(window ${(run.windowMs / 1000).toFixed(1)} s), ${
          run.writesPerCommit.toFixed(1)
        } writes/commit, largest batch ${run.largestBatch}`,
    );
    rows.push(
      rateRow(
        `throughput.obj_put.${count}_procs`,
        run,
        floor,
        `${count} bare cells' echo round trips/s`,
        "a cell per process tree (the default)",
      ),
      {
        name: `throughput.obj_put.${count}_procs.writes_per_commit`,
        value: round(run.writesPerCommit, 1),
        unit: "writes",
        note: `${run.commits} commits, largest batch ${run.largestBatch}`,
      },
    );
    if (count !== 64) continue;
    const shared = await steadyRun(count, ms + 2000, "principal", options);
    const layout = shared.cells ?? [];
    const sharedFloor = await workerCellsThroughput(layout, floorMs);
    runs.push({ ...shared, layout: "principal", floor: sharedFloor });
    const shape = `${layout.length} cells of ${layout.join("/")} Workers`;
    options.log(
      `  ${shape} echo ${sharedFloor.toFixed(0)} round trips/s; ${count} processes sharing ` +
        `them: ${shared.durableCallsPerSecond.toFixed(0)} durable calls/s (window ${
          (shared.windowMs / 1000).toFixed(1)
        } s), ${
          shared.writesPerCommit.toFixed(1)
        } writes/commit, largest batch ${shared.largestBatch}`,
    );
    rows.push(
      rateRow(
        `throughput.obj_put.${count}_procs.shared_cells`,
        shared,
        sharedFloor,
        `${shape}, a caller per Worker: echo round trips/s`,
        `roots of one principal sharing cells (cellSharing "principal"), ${shape}`,
      ),
    );
  }
  return { section: "throughput", rows, details: { runs, secondsPerProcess: ms / 1000 } };
}
