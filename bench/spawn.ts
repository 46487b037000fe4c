/**
 * Process spawn to first syscall. Cold: the runtime spawns a fresh cell
 * (a `deno run` subprocess, then a Worker in it) per process. Measured one at a time (latency) and many at once
 * (spawns per second, under the kernel's default of 16 cells at once).
 *
 * Warm: the kernel keeps cells started ahead of need (`warmCells`, Worker
 * up and libc loaded), so a spawn is the kernel's bookkeeping, the program's
 * import in the warm cell, and its first syscall. Measured one at a time
 * and as a burst as large as the pool (every process of the burst must find
 * a warm cell, or the run fails); past the pool, spawns fall back to the
 * cold rate while the pool refills.
 *
 * Sustained: spawns for 10 s with 16 in flight, each process exiting at
 * once, three ways. Independent roots under the default per-tree sharing
 * each need a cell of their own, so cell starts bound them; roots of one
 * principal with `cellSharing: "principal"` share cells; and the children
 * of one root (the default sharing: a tree's processes share its cells).
 * The last two are bound by Worker starts and held to 80% of the rate
 * Workers start at inside one running cell.
 *
 * @module
 */

import {
  against,
  type BenchOptions,
  median,
  openBenchKernel,
  probeDispatch,
  type Row,
  type Section,
} from "./_common.ts";
import { START_IN_FLIGHT, subprocessStart, workerCellStartRate, workerStart } from "./_floors.ts";
import { prepareSyscallLoop, syscallGaps } from "./syscall_rtt.ts";

/** Most a warm spawn → first syscall may take, in syscall round trips. */
const WARM_RTTS = 10;
/** Share of the Worker-start rate the sustained spawn rate should reach. */
const SUSTAINED_SHARE = 0.8;

const FIRST = `export default async function main(sys) {
  await sys.time.now();
  return 1;
}`;

/** Keeps `input.inFlight` children of `input.child` running: waits for the oldest, spawns the next, until `input.ms` pass. */
const TREE = `export default async function main(sys, input) {
  const end = Date.now() + input.ms;
  const spawn = async () => (await sys.proc.spawn({ image: input.child })).pid;
  const running = [];
  for (let i = 0; i < input.inFlight; i++) running.push(await spawn());
  let n = 0;
  while (running.length) {
    const { state } = await sys.proc.wait(running.shift());
    if (state !== "exited") throw new Error("a child " + state);
    n++;
    if (Date.now() < end) running.push(await spawn());
  }
  return n;
}`;

/** What {@link spawnRuns} measured. */
interface SpawnRuns {
  /** Spawn → first syscall, one at a time (after one warm-up), in ms. */
  latency: number[];
  /** `Kernel.spawn` alone, one at a time, in ms. */
  bookkeeping: number[];
  /** Spawn of the first of the burst → first syscall of the last, in ms. */
  burstMs: number;
  /** How many processes of the burst took a warm cell. */
  burstWarm: number;
}

/**
 * On a kernel with `warmCells`, spawns `sequential` processes one at a
 * time (each waiting for a full pool), then `burst` at once.
 */
async function spawnRuns(
  options: { warmCells: number; maxCells: number; sequential: number; burst: number },
): Promise<SpawnRuns> {
  const bench = await openBenchKernel({
    warmCells: options.warmCells,
    maxCells: options.maxCells,
  });
  const probe = probeDispatch(bench.kernel);
  const cells = bench.kernel.cells;
  try {
    const tag = await bench.program("first", FIRST);
    const latency: number[] = [];
    const bookkeeping: number[] = [];
    for (let i = 0; i < options.sequential + 1; i++) {
      await cells.full();
      const t0 = performance.now();
      // As `Kernel.run` and `POST /v1/processes` do: made and started in one step.
      const proc = await bench.kernel.spawn({ image: tag, workspace: bench.workspace }, {
        start: true,
      });
      bookkeeping.push(performance.now() - t0);
      await probe.until(proc.pid, 1);
      if (i > 0) latency.push(probe.arrivals.get(proc.pid)![0].at - t0); // the first is warm-up
      await bench.kernel.waitFor(proc.pid);
    }
    await cells.full();
    const taken = cells.taken;
    const t0 = performance.now();
    const pids: number[] = [];
    for (let i = 0; i < options.burst; i++) {
      const proc = await bench.kernel.spawn({ image: tag, workspace: bench.workspace }, {
        start: true,
      });
      pids.push(proc.pid);
    }
    await Promise.all(pids.map((pid) => probe.until(pid, 1)));
    const burstMs = performance.now() - t0;
    await Promise.all(pids.map((pid) => bench.kernel.waitFor(pid)));
    return { latency, bookkeeping, burstMs, burstWarm: cells.taken - taken };
  } finally {
    probe.stop();
    await bench.close();
  }
}

/**
 * Spawns for `ms`, `inFlight` callers each running one process (a root of
 * its own) to its end and then the next, on a kernel with `inFlight` warm
 * cells; returns the processes ended per second. With the default sharing
 * each root gets a cell of its own, so the rate is bound by cell starts;
 * with `cellSharing: "principal"` the roots share cells and it is bound by
 * Worker starts.
 */
async function sustainedSpawns(
  ms: number,
  inFlight: number,
  cellSharing: "tree" | "principal",
): Promise<{ rate: number; processes: number; elapsedMs: number }> {
  const bench = await openBenchKernel({
    warmCells: cellSharing === "tree" ? inFlight : 1,
    maxCells: inFlight,
    cellSharing,
  });
  try {
    const tag = await bench.program("first", FIRST);
    const runOne = async () => {
      const end = await bench.kernel.run({ image: tag, workspace: bench.workspace });
      if (end.state !== "exited") {
        throw new Error(`Cannot measure sustained spawns: a process ${end.state}`);
      }
    };
    await runOne(); // warm-up: the image and the first cells
    const started = performance.now();
    const until = started + ms;
    const counts = await Promise.all(Array.from({ length: inFlight }, async () => {
      let n = 0;
      for (; performance.now() < until; n++) await runOne();
      return n;
    }));
    const elapsedMs = performance.now() - started;
    const processes = counts.reduce((a, b) => a + b, 0);
    return { rate: processes / elapsedMs * 1000, processes, elapsedMs };
  } finally {
    await bench.close();
  }
}

/**
 * Spawns for `ms` inside one process tree, with the default sharing: a root
 * keeps `inFlight` children that exit at once in flight.
 * The tree's cells host them all, so Worker starts bound the rate.
 */
async function sustainedTreeSpawns(
  ms: number,
  inFlight: number,
): Promise<{ rate: number; processes: number; elapsedMs: number }> {
  const bench = await openBenchKernel({ warmCells: 1, maxCells: inFlight });
  try {
    const child = await bench.program("first", FIRST);
    const root = await bench.program("tree", TREE, {
      capabilities: [`proc:spawn:${child}`],
      budget: { children: 1_000_000 },
    });
    const run = (input: { ms: number; inFlight: number; child: string }) =>
      bench.kernel.run({ image: root, workspace: bench.workspace, input });
    await run({ ms: 0, inFlight, child }); // warm-up: the images and the first cell
    const started = performance.now();
    const end = await run({ ms, inFlight, child });
    const elapsedMs = performance.now() - started;
    if (end.state !== "exited" || typeof end.result !== "number") {
      throw new Error(`Cannot measure sustained spawns in one tree: the root ${end.state}`);
    }
    return { rate: end.result / elapsedMs * 1000, processes: end.result, elapsedMs };
  } finally {
    await bench.close();
  }
}

/** The median round trip (ms) of `time.now` on a fresh kernel, over `calls` calls. */
async function timeNowRtt(calls: number): Promise<number> {
  const bench = await openBenchKernel();
  const probe = probeDispatch(bench.kernel);
  try {
    const tag = await prepareSyscallLoop(bench);
    return median((await syscallGaps(bench, probe, tag, "time.now", calls + 50)).slice(50));
  } finally {
    probe.stop();
    await bench.close();
  }
}

/**
 * Measures spawn-to-first-syscall, cold and with warm cells.
 *
 * @example
 * ```ts ignore
 * const section = await benchSpawn({ quick: true, log: console.log });
 * ```
 */
export async function benchSpawn(options: BenchOptions): Promise<Section> {
  const sequential = options.quick ? 6 : 15;
  const concurrent = options.quick ? 48 : 160;
  const floors = {
    subprocess: [] as number[],
    subprocessWorker: [] as number[],
    worker: [] as number[],
  };
  for (let i = 0; i < (options.quick ? 4 : 8); i++) {
    floors.subprocess.push(await subprocessStart());
    floors.subprocessWorker.push(await subprocessStart({ viaWorker: true }));
    floors.worker.push(await workerStart());
  }

  const cold = await spawnRuns({ warmCells: 0, maxCells: 16, sequential, burst: concurrent });
  const concurrentMs = cold.burstMs;
  const concurrentRate = concurrent / concurrentMs * 1000;
  options.log(`  cold spawn to first syscall: median ${median(cold.latency).toFixed(0)} ms`);
  options.log(`  ${concurrent} concurrent cold spawns: ${concurrentRate.toFixed(1)} spawns/s`);
  // Warm cells: the kernel keeps cells started (Worker up) ahead of need.
  const batch = options.quick ? 16 : 32;
  const warm = await spawnRuns({ warmCells: batch, maxCells: batch, sequential, burst: batch });
  if (warm.burstWarm < batch) {
    throw new Error("Cannot measure warm spawns: some processes of the burst started a cold cell");
  }
  const warmBatchMs = warm.burstMs;
  const warmRate = batch / warmBatchMs * 1000;
  options.log(
    `  warm spawn to first syscall: median ${
      median(warm.latency).toFixed(1)
    } ms; ${batch} at once: ${warmRate.toFixed(0)} spawns/s`,
  );
  const book = median(cold.bookkeeping);
  const rtt = await timeNowRtt(options.quick ? 300 : 1000);
  const sustainedMs = options.quick ? 3000 : 10_000;
  const startRate = await workerCellStartRate(sustainedMs, START_IN_FLIGHT);
  const sustained = await sustainedSpawns(sustainedMs, START_IN_FLIGHT, "tree");
  const shared = await sustainedSpawns(sustainedMs, START_IN_FLIGHT, "principal");
  // The root and its children fill one cell of the default size.
  const tree = await sustainedTreeSpawns(sustainedMs, START_IN_FLIGHT - 1);
  options.log(
    `  sustained: ${sustained.rate.toFixed(1)} spawns/s over ${
      (sustained.elapsedMs / 1000).toFixed(1)
    } s (a cell per root), ${shared.rate.toFixed(1)} spawns/s (roots sharing cells), ${
      tree.rate.toFixed(1)
    } spawns/s (children of one root); Workers start in a running cell at ${
      startRate.toFixed(1)
    }/s`,
  );

  const rows: Row[] = [
    against({
      name: "floor.subprocess_start",
      value: median(floors.subprocess),
      unit: "ms",
      note: "zero-permission deno run to its first line",
    }),
    against({
      name: "floor.subprocess_worker_start",
      value: median(floors.subprocessWorker),
      unit: "ms",
      note: "the same plus a Worker's first echo: a bare cell",
    }),
    against({
      name: "floor.worker_start",
      value: median(floors.worker),
      unit: "ms",
      note: "new Worker in the host to its first echo",
    }),
    against({
      name: "spawn.kernel_bookkeeping",
      value: book,
      unit: "ms",
      note: "Kernel.spawn: image, grants, process record",
    }),
    against({
      name: "spawn.cold_to_first_syscall",
      value: median(cold.latency),
      unit: "ms",
      floor: median(floors.subprocessWorker),
      floorName: "subprocess_worker_start",
    }),
    against({
      name: "spawn.cold_concurrent_rate",
      value: concurrentRate,
      unit: "spawns/s",
      target: ">= 100 spawns/s (with warm cells)",
      met: concurrentRate >= 100,
      note: `${concurrent} spawned at once, 16 cells at once`,
    }),
    against({
      name: "spawn.warm_to_first_syscall",
      value: median(warm.latency),
      unit: "ms",
      floor: median(floors.worker),
      floorName: "worker_start",
      note: "Kernel.spawn + start in a warm cell (Worker up) → first syscall",
    }),
    against({
      name: "spawn.warm_concurrent_rate",
      value: warmRate,
      unit: "spawns/s",
      target: ">= 100 spawns/s (with warm cells)",
      met: warmRate >= 100,
      note: `${batch} spawned at once with ${batch} warm cells; past the pool, the cold rate`,
    }),
    against({
      name: "spawn.warm_to_first_syscall.vs_syscall_rtt",
      value: median(warm.latency),
      unit: "ms",
      floor: rtt,
      floorName: "syscall_rtt.time.now.p50 (same run)",
      target: `<= ${WARM_RTTS}x syscall RTT p50`,
      met: median(warm.latency) <= WARM_RTTS * rtt,
    }),
    against({
      name: "spawn.sustained_rate",
      value: sustained.rate,
      unit: "spawns/s",
      floor: startRate,
      floorName: "worker_cell.worker_start_rate",
      target: `>= ${SUSTAINED_SHARE * 100}% of the Worker-start rate`,
      met: sustained.rate >= SUSTAINED_SHARE * startRate,
      note: `${START_IN_FLIGHT} callers, each spawn → exit → next, ${START_IN_FLIGHT} warm cells, ${
        sustainedMs / 1000
      } s; every root needs a cell of its own (default sharing), so cell starts bound it`,
    }),
    against({
      name: "spawn.sustained_rate.shared_cells",
      value: shared.rate,
      unit: "spawns/s",
      floor: startRate,
      floorName: "worker_cell.worker_start_rate",
      target: `>= ${SUSTAINED_SHARE * 100}% of the Worker-start rate`,
      met: shared.rate >= SUSTAINED_SHARE * startRate,
      note:
        `the same with cellSharing "principal": the roots share cells, so Worker starts bound it`,
    }),
    against({
      name: "spawn.sustained_rate.one_tree",
      value: tree.rate,
      unit: "spawns/s",
      floor: startRate,
      floorName: "worker_cell.worker_start_rate",
      target: `>= ${SUSTAINED_SHARE * 100}% of the Worker-start rate`,
      met: tree.rate >= SUSTAINED_SHARE * startRate,
      note: `default sharing: one root keeps ${
        START_IN_FLIGHT - 1
      } children that exit at once in flight (waits for the oldest, spawns the next); the tree's cells host them`,
    }),
  ];
  return {
    section: "spawn",
    rows,
    details: {
      sequential,
      concurrent,
      concurrentMs,
      warmBatch: batch,
      warmBatchMs,
      cold: cold.latency,
      warm: warm.latency,
      bookkeeping: cold.bookkeeping,
      floors,
      timeNowRtt: rtt,
      sustained,
      sustainedSharedCells: shared,
      sustainedOneTree: tree,
      workerStartRate: startRate,
    },
  };
}
