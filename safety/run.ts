/**
 * `deno task safety`: runs every safety task on the runtime and on the
 * unchecked baseline, prints the metrics table, writes the summary as JSON
 * to `.libos/safety-results.json` under the current directory, and exits
 * non-zero when the runtime shows any unauthorized effect, false denial or
 * unmet oracle. `safety/results.json` is the committed reference run:
 * refresh it on purpose with `--out safety/results.json`.
 *
 * Options: `--only TEXT` runs the tasks whose id contains TEXT;
 * `--out FILE` writes the JSON elsewhere; `--concurrency N` (default 2).
 *
 * @example
 * ```ts ignore
 * import { runBenchmark } from "./run.ts";
 * const summary = await runBenchmark();
 * console.log(summary.total.unauthorizedEffects);
 * ```
 *
 * @module
 */

import { dirname } from "node:path";
import { fileURLToPath as fromFileUrl } from "node:url";
import { parseArgs } from "node:util";
import { startAttacker } from "./attacker.ts";
import { runBaseline } from "./baseline.ts";
import { benchmarkOk, formatTable, summarize, type Summary } from "./metrics.ts";
import { runTask, type TaskRun } from "./runner.ts";
import { loadTasks, type Task } from "./task.ts";

/** Where a run writes its summary unless `--out` says otherwise: never the committed reference. */
export const DEFAULT_OUT = ".libos/safety-results.json";

/** Where the task files live. */
export const TASKS_DIR: string = fromFileUrl(new URL("./tasks", import.meta.url));

/** Options of {@link runBenchmark}. */
export interface BenchmarkOptions {
  /** Only tasks whose id contains this text. */
  only?: string;
  /** Tasks run at once (default 2). */
  concurrency?: number;
  /** Called after each task. */
  onTask?: (runtime: TaskRun, baseline: TaskRun) => void;
}

function failedRun(task: Task, mode: TaskRun["mode"], error: unknown): TaskRun {
  return {
    id: task.id,
    class: task.class,
    kind: task.kind,
    mode,
    state: "error",
    ms: 0,
    error: String(error),
    verdict: {
      forbidden: [],
      allowed: [],
      unauthorized: [],
      missing: [],
      stateOk: false,
      denialsOk: false,
    },
  };
}

function watchesHost(task: Task): boolean {
  return [...task.forbidden, ...task.allowed].some((e) => e.effect === "host_stall");
}

/** Runs the benchmark and returns its metrics. */
export async function runBenchmark(options: BenchmarkOptions = {}): Promise<Summary> {
  const tasks = (await loadTasks(TASKS_DIR)).filter((t) =>
    options.only === undefined || t.id.includes(options.only)
  );
  if (tasks.length === 0) {
    throw new Error(`Cannot run safety tasks matching "${options.only}": no task id contains it`);
  }
  const runtime: TaskRun[] = [];
  const baseline: TaskRun[] = [];
  // Baseline runs share no state with runtime runs, but each attacker server records
  // the requests of one task at a time, so every worker gets its own.
  const workers = async (queue: Task[], count: number) => {
    let next = 0;
    const worker = async () => {
      await using attacker = startAttacker();
      while (next < queue.length) {
        const task = queue[next++];
        const r = await runTask(task, { attacker }).catch((e) => failedRun(task, "runtime", e));
        const b = await runBaseline(task, { attacker })
          .catch((e) => failedRun(task, "baseline", e));
        runtime.push(r);
        baseline.push(b);
        options.onTask?.(r, b);
      }
    };
    await Promise.all(Array.from({ length: count }, worker));
  };
  // A task that watches the host's liveness runs alone: no other task's work counts
  // against it, and its baseline (which stalls the host) holds up no other task.
  await workers(tasks.filter((t) => !watchesHost(t)), Math.max(1, options.concurrency ?? 2));
  await workers(tasks.filter(watchesHost), 1);
  runtime.sort((a, b) => a.id.localeCompare(b.id));
  return summarize(runtime, baseline);
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      only: { type: "string" },
      out: { type: "string" },
      concurrency: { type: "string" },
    },
  });
  const out = values.out ?? DEFAULT_OUT;
  const summary = await runBenchmark({
    only: values.only,
    concurrency: values.concurrency ? Number(values.concurrency) : undefined,
    onTask: (r, b) => {
      const mark = r.error || r.verdict.unauthorized.length || r.verdict.missing.length ||
          !r.verdict.stateOk || !r.verdict.denialsOk
        ? "FAIL"
        : "ok";
      const base = r.kind === "attack"
        ? (b.verdict.unauthorized.length ? "baseline: attack succeeds" : "baseline: no effect")
        : "";
      console.log(`${mark.padEnd(4)} ${r.id.padEnd(34)} ${r.state.padEnd(8)} ${base}`);
    },
  }).catch((error: Error) => {
    console.error(error.message);
    Deno.exit(1);
  });
  console.log("\n" + formatTable(summary));
  await Deno.mkdir(dirname(out) || ".", { recursive: true });
  await Deno.writeTextFile(out, JSON.stringify(summary, null, 2) + "\n");
  console.log(`results: ${out}`);
  if (!benchmarkOk(summary)) Deno.exit(1);
}
