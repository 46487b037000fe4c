/**
 * SPEC section 3: blocked processes hold no Worker. A process parked on
 * `time.sleep` lives in the KV store only: no cell, no Worker, and almost
 * nothing in the host's memory. The store is a KV file, so parked processes
 * cost disk, not the host's heap.
 *
 * The host is this module run as a program (`deno run parked_memory_test.ts
 * DIR`): `deno test` runs test modules in parallel inside one OS process, so
 * its memory would measure other things. The host prints what it measured as
 * one JSON line, and the test asserts on it.
 *
 * Only what a loaded machine cannot change is asserted: no parked process
 * holds a cell, and the JS heap in use after a full collection (not RSS,
 * which depends on allocator and GC timing) grows by no more than a small
 * record's worth per parked process, and no faster between 200 and 1,000
 * parked processes than between 20 and 200. The host's RSS against a floor
 * is measured in `bench/parked.ts`.
 */

import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { Kernel } from "../runtime/kernel.ts";
import { END_STATES } from "../runtime/process_table.ts";
import { HOST_PERMISSIONS } from "./_host_permissions.ts";

const TOTAL = 1_000;
const WARM_UP = 20;
const MIDDLE = 200;
/**
 * Heap a parked process may keep in the host, at most: a small record's
 * worth. A Worker, a cell handle or a kept program would cost far more.
 */
const MAX_HEAP_PER_PARKED = 8 * 1024;

/** Sleeps for an hour; an interrupt ends it. */
const SLEEPER = `export default async function main(sys) {
  try {
    await sys.time.sleep(3_600_000);
    return "slept";
  } catch (error) {
    if (error.code === "EINTR") return "interrupted";
    throw error;
  }
}`;

/** What the host measured and saw. */
interface Report {
  /** Heap in use after a full collection with {@link WARM_UP}, {@link MIDDLE} and {@link TOTAL} parked. */
  heap: [number, number, number];
  parkMs: number;
  /** Processes that are not blocked on `sleep`, or still have a cell. */
  notParked: string[];
  /** The interrupted process's end. */
  woken: { state: string; result?: unknown; error?: unknown };
  /** Its neighbour's state afterwards, and whether it has a cell. */
  neighbour: { state: string; cell: boolean };
}

/**
 * Counts processes that reached `blocked`; `until(n)` resolves once `n`
 * have, and rejects as soon as any process ends instead.
 */
function blockedCounter(kernel: Kernel) {
  const blocked = new Set<number>();
  let wanted = Infinity;
  let settle: { resolve: () => void; reject: (error: Error) => void } | undefined;
  const unsubscribe = kernel.processes.subscribe((record, event) => {
    if (event.to === "blocked") blocked.add(record.pid);
    if (END_STATES.has(event.to)) {
      settle?.reject(
        new Error(`Process ${record.pid} ${event.to} instead of parking: ${event.reason}`),
      );
    } else if (blocked.size >= wanted) settle?.resolve();
  });
  return {
    until(count: number): Promise<void> {
      wanted = count;
      return new Promise((resolve, reject) => {
        settle = { resolve, reject };
        if (blocked.size >= count) resolve();
      });
    },
    stop: unsubscribe,
  };
}

/** Resolves once none of `pids` has an execution (cell) left in the host. */
async function cellsGone(kernel: Kernel, pids: readonly number[]): Promise<void> {
  for (const pid of pids) {
    for (let e = kernel.executionOf(pid); e; e = kernel.executionOf(pid)) await e.settled();
  }
}

/** Memory after a full collection (when the host runs with `--expose-gc`). */
function memory(): Deno.MemoryUsage {
  (globalThis as { gc?: () => void }).gc?.();
  return Deno.memoryUsage();
}

/** The host: parks {@link TOTAL} sleepers over a KV file in `dir`, then wakes one. */
async function parkAndMeasure(dir: string): Promise<Report> {
  const workspace = join(dir, "ws");
  await Deno.mkdir(workspace);
  const kernel = await Kernel.open({ store: join(dir, "libos.db"), maxCells: 16 });
  const counter = blockedCounter(kernel);
  try {
    const { tag } = await kernel.images.register({
      name: "sleeper",
      version: "1.0.0",
      entry: "./sleeper.ts",
      tools: [],
      capabilities: ["time:sleep:*"],
      policy: {},
    }, { entrySource: SLEEPER });
    const pids: number[] = [];
    const spawnUpTo = async (count: number) => {
      while (pids.length < count) {
        const proc = await kernel.spawn({ image: tag, workspace });
        pids.push(proc.pid);
        kernel.start(proc.pid);
      }
    };

    const parkUpTo = async (count: number) => {
      await Promise.all([spawnUpTo(count), counter.until(count)]);
      await cellsGone(kernel, pids);
      return memory().heapUsed;
    };
    const baseline = await parkUpTo(WARM_UP);
    const started = performance.now();
    const middle = await parkUpTo(MIDDLE);
    const parked = await parkUpTo(TOTAL);
    const parkMs = performance.now() - started;
    counter.stop();

    const notParked: string[] = [];
    for (const record of await kernel.processes.list()) {
      const cell = kernel.executionOf(record.pid) !== undefined;
      if (record.state !== "blocked" || record.waitingOn !== "sleep" || cell) {
        notParked.push(`${record.pid} ${record.state} ${record.waitingOn}${cell ? " cell" : ""}`);
      }
    }

    // A parked process still answers a signal: it runs again, sees EINTR and returns.
    const [woken, neighbour] = [pids[TOTAL - 1], pids[TOTAL - 2]];
    await kernel.signal(woken, "interrupt");
    const end = await kernel.waitFor(woken, { timeoutMs: 30_000 });
    return {
      heap: [baseline, middle, parked],
      parkMs,
      notParked,
      woken: { state: end.state, result: end.result, error: end.error },
      neighbour: {
        state: (await kernel.processes.require(neighbour)).state,
        cell: kernel.executionOf(neighbour) !== undefined,
      },
    };
  } finally {
    counter.stop();
    await kernel.close();
  }
}

const mb = (bytes: number) => `${(bytes / (1 << 20)).toFixed(1)} MB`;

Deno.test("1,000 processes parked on time.sleep hold no cell and keep almost nothing in the host's heap", async () => {
  const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "libos-parked-" }));
  try {
    const self = fileURLToPath(import.meta.url);
    const output = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        ...HOST_PERMISSIONS,
        "--v8-flags=--expose-gc",
        self,
        dir,
      ],
      cwd: dirname(dirname(self)),
      stdin: "null",
    }).output();
    const stdout = new TextDecoder().decode(output.stdout);
    const stderr = new TextDecoder().decode(output.stderr);
    assert.equal(output.code, 0, `The host failed:\n${stdout}\n${stderr}`);
    const report: Report = JSON.parse(stdout.trim().split("\n").at(-1)!);
    const [baseline, middle, parked] = report.heap;
    const early = Math.max(0, middle - baseline) / (MIDDLE - WARM_UP);
    const late = Math.max(0, parked - middle) / (TOTAL - MIDDLE);
    console.log(
      `parked ${TOTAL - WARM_UP} more processes in ${(report.parkMs / 1000).toFixed(1)} s; ` +
        `heap in use ${mb(baseline)} / ${mb(middle)} / ${mb(parked)} with ` +
        `${WARM_UP} / ${MIDDLE} / ${TOTAL} parked (${early.toFixed(0)} then ${late.toFixed(0)} ` +
        `bytes per process)`,
    );
    assert.deepEqual(report.notParked, [], "processes not parked on sleep, or holding a cell");
    assert.ok(
      late <= MAX_HEAP_PER_PARKED,
      `the heap grew by ${late.toFixed(0)} bytes per parked process between ${MIDDLE} and ${TOTAL}`,
    );
    assert.ok(
      late <= Math.max(early, MAX_HEAP_PER_PARKED / 4) * 2,
      `the heap grew faster per parked process after ${MIDDLE} (${late.toFixed(0)} B) than ` +
        `before (${early.toFixed(0)} B)`,
    );
    assert.equal(report.woken.state, "exited", JSON.stringify(report.woken.error));
    assert.equal(report.woken.result, "interrupted");
    assert.deepEqual(report.neighbour, { state: "blocked", cell: false });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

if (import.meta.main) {
  console.log(JSON.stringify(await parkAndMeasure(Deno.args[0])));
}
