/**
 * Process spawn to first syscall. Cold: the runtime spawns a fresh cell
 * (a `deno run` subprocess, then a Worker in it) per process; there are no
 * pre-started cells yet. Measured one at a time (latency) and many at once
 * (spawns per second, under the kernel's default of 16 cells at once).
 *
 * What warm cells would give is measured, not guessed: cells are started
 * ahead with `Cell.spawn` (untimed), then the timed part is only what a
 * warm cell would still do: the kernel's bookkeeping for a spawn (timed
 * separately) and the Worker start, module load and first syscall inside
 * the already running subprocess.
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
import { Cell } from "../runtime/cell.ts";
import type { CellToHost } from "../runtime/cell_protocol.ts";

const FIRST = `export default async function main(sys) {
  await sys.time.now();
  return 1;
}`;

/** Starts `count` cells ahead of time; resolves with them and a first-syscall hook. */
async function warmCells(count: number): Promise<{
  cells: Cell[];
  firstSyscall: Promise<void>[];
}> {
  const cells: Cell[] = [];
  const firstSyscall: Promise<void>[] = [];
  for (let i = 0; i < count; i++) {
    let resolve!: () => void;
    firstSyscall.push(new Promise<void>((r) => resolve = r));
    cells.push(
      await Cell.spawn((m: CellToHost) => {
        if (m.t === "syscall") resolve();
      }),
    );
  }
  return { cells, firstSyscall };
}

function startMessage(pid: number) {
  return {
    t: "start" as const,
    pid,
    entry: { kind: "module" as const, source: FIRST },
    input: null,
    seed: 1,
    epoch: Date.now(),
  };
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

  // Cold, one at a time.
  const cold: number[] = [];
  const bookkeeping: number[] = [];
  let concurrentRate = NaN;
  let concurrentMs = NaN;
  {
    const bench = await openBenchKernel();
    const probe = probeDispatch(bench.kernel);
    try {
      const tag = await bench.program("first", FIRST);
      for (let i = 0; i < sequential + 1; i++) {
        const t0 = performance.now();
        const proc = await bench.kernel.spawn({ image: tag, workspace: bench.workspace });
        bookkeeping.push(performance.now() - t0);
        bench.kernel.start(proc.pid);
        await probe.until(proc.pid, 1);
        if (i > 0) cold.push(probe.arrivals.get(proc.pid)![0].at - t0); // the first is warm-up
        await bench.kernel.waitFor(proc.pid);
      }
      options.log(`  cold spawn to first syscall: median ${median(cold).toFixed(0)} ms`);

      // Cold, many at once (the kernel runs at most 16 cells at once).
      const t0 = performance.now();
      const pids: number[] = [];
      for (let i = 0; i < concurrent; i++) {
        const proc = await bench.kernel.spawn({ image: tag, workspace: bench.workspace });
        bench.kernel.start(proc.pid);
        pids.push(proc.pid);
      }
      await Promise.all(pids.map((pid) => probe.until(pid, 1)));
      concurrentMs = performance.now() - t0;
      concurrentRate = concurrent / concurrentMs * 1000;
      await Promise.all(pids.map((pid) => bench.kernel.waitFor(pid)));
      options.log(`  ${concurrent} concurrent cold spawns: ${concurrentRate.toFixed(1)} spawns/s`);
    } finally {
      probe.stop();
      await bench.close();
    }
  }

  // Warm cells: subprocesses already running; time start message → first syscall.
  const warm: number[] = [];
  for (let i = 0; i < (options.quick ? 4 : 8); i++) {
    const { cells, firstSyscall } = await warmCells(1);
    const t0 = performance.now();
    await cells[0].send(startMessage(1));
    await firstSyscall[0];
    warm.push(performance.now() - t0);
    cells[0].kill("done");
    await cells[0].exited;
  }
  const batch = options.quick ? 16 : 32;
  const pool = await warmCells(batch);
  const t0 = performance.now();
  await Promise.all(pool.cells.map((c, i) => c.send(startMessage(i + 1))));
  await Promise.all(pool.firstSyscall);
  const warmBatchMs = performance.now() - t0;
  for (const c of pool.cells) c.kill("done");
  await Promise.all(pool.cells.map((c) => c.exited));
  const book = median(bookkeeping);
  // Warm spawns per second: the Worker starts run in parallel on the cores;
  // the kernel's bookkeeping is serial on the host's event loop.
  const warmRate = 1000 / (warmBatchMs / batch + book);
  options.log(
    `  warm cell start→first syscall ${median(warm).toFixed(1)} ms; est. ${
      warmRate.toFixed(0)
    } spawns/s`,
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
      value: median(cold),
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
      name: "spawn.warm_cell_to_first_syscall",
      value: median(warm),
      unit: "ms",
      floor: median(floors.worker),
      floorName: "worker_start",
      note: "start message to a pre-started cell → first syscall (Worker start + module load)",
    }),
    against({
      name: "spawn.warm_rate_estimate",
      value: warmRate,
      unit: "spawns/s",
      target: ">= 100 spawns/s (with warm cells)",
      met: warmRate >= 100,
      note: `${batch} pre-started cells started at once + serial kernel bookkeeping`,
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
      cold,
      warm,
      bookkeeping,
      floors,
    },
  };
}
