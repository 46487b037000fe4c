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
import { subprocessStart, workerStart } from "./_floors.ts";

const FIRST = `export default async function main(sys) {
  await sys.time.now();
  return 1;
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
      const proc = await bench.kernel.spawn({ image: tag, workspace: bench.workspace });
      bookkeeping.push(performance.now() - t0);
      bench.kernel.start(proc.pid);
      await probe.until(proc.pid, 1);
      if (i > 0) latency.push(probe.arrivals.get(proc.pid)![0].at - t0); // the first is warm-up
      await bench.kernel.waitFor(proc.pid);
    }
    await cells.full();
    const taken = cells.taken;
    const t0 = performance.now();
    const pids: number[] = [];
    for (let i = 0; i < options.burst; i++) {
      const proc = await bench.kernel.spawn({ image: tag, workspace: bench.workspace });
      bench.kernel.start(proc.pid);
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
    },
  };
}
