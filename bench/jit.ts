/**
 * JIT tool call overhead against a built-in call. `tool.call` runs the
 * tool as a child process in its own cell and parks the caller until the
 * child ends; the caller then resumes in a new cell and replays its
 * journal up to the call. `fs.read` is answered in place.
 *
 * A program registers a trivial tool, then calls it N times, then reads a
 * file N times; the host times each call from its arrival at the broker to
 * the arrival of the caller's next syscall (see `_common.ts`). Calls are
 * measured back to back (each waits for its cell to load a fresh Worker: a
 * used Worker is never reused) and spaced: the program makes enough cheap
 * `fs.read` calls between two tool calls (as many as twice the Worker-start
 * floor of the same run takes) that a spare Worker is loaded when the next
 * call comes. Targets: spaced (warm cells), at most 5x `fs.read`; cold, at
 * most 1.5x the floor of a Worker started inside a running cell
 * (`_floors.ts`) plus one `fs.read`.
 *
 * @module
 */

import {
  against,
  type BenchOptions,
  gaps,
  median,
  openBenchKernel,
  percentile,
  probeDispatch,
  type Row,
  type Section,
} from "./_common.ts";
import { workerCellStarts } from "./_floors.ts";

/** Most a warm `tool.call` may cost, in `fs.read` round trips. */
const WARM_READS = 5;
/** Most a cold `tool.call` may cost, as a multiple of a Worker start plus one `fs.read`. */
const COLD_STARTS = 1.5;

const CALLER = `export default async function main(sys, input) {
  await sys.tool.register({
    name: "echo",
    description: "returns its input",
    input: { type: "object", properties: { n: { type: "number" } }, required: ["n"] },
    manifest: { capabilities: [] },
    source: "export function run(args: { n: number }) { return args.n; }",
  });
  for (let i = 0; i < input.tools; i++) {
    await sys.tool.call("echo", { n: i });
    for (let j = 0; j < input.between; j++) await sys.fs.read("probe.txt");
  }
  for (let i = 0; i < input.reads; i++) await sys.fs.read("probe.txt");
  return "done";
}`;

/**
 * Measures a JIT tool call and a built-in call.
 *
 * @example
 * ```ts ignore
 * const section = await benchJit({ quick: true, log: console.log });
 * ```
 */
export async function benchJit(options: BenchOptions): Promise<Section> {
  const tools = options.quick ? 6 : 16;
  const reads = 300;
  const workerStart = median(await workerCellStarts(options.quick ? 10 : 30));
  const cold = await measure({ tools, reads, warmCells: 0, between: 0 });
  const warm = await measure({ tools, reads, warmCells: 2, between: 0 });
  const read = median(warm.readGaps);
  // Enough reads between two calls for a spare Worker to load meanwhile.
  const between = Math.ceil((2 * workerStart) / Math.max(read, 0.05));
  const spaced = await measure({ tools, reads, warmCells: 2, between });
  const tool = {
    cold: median(cold.toolGaps),
    warm: median(warm.toolGaps),
    spaced: median(spaced.toolGaps),
  };
  options.log(
    `  tool.call ${tool.cold.toFixed(1)} ms cold, ${tool.warm.toFixed(1)} ms back to back, ` +
      `${tool.spaced.toFixed(1)} ms with a spare Worker ready; fs.read ${read.toFixed(3)} ms`,
  );
  const notes = {
    cold: "the first call after a cold cell start",
    warm: "back to back: each call waits for its cell to load a fresh Worker (2 warm cells)",
    spaced: `${between} fs.read between calls, so a spare Worker is ready (2 warm cells)`,
  };
  const rows: Row[] = [
    against({ name: "jit.builtin_fs_read.p50", value: read, unit: "ms" }),
    ...(["cold", "warm", "spaced"] as const).flatMap((kind) => {
      const gaps = { cold, warm, spaced }[kind].toolGaps;
      return [
        against({
          name: `jit.tool_call.${kind}.p50`,
          value: tool[kind],
          unit: "ms",
          floor: read,
          floorName: "builtin_fs_read",
          note: notes[kind],
          target: kind === "spaced" ? `<= ${WARM_READS}x fs.read` : undefined,
          met: kind === "spaced" ? tool.spaced <= WARM_READS * read : undefined,
        }),
        against({ name: `jit.tool_call.${kind}.p99`, value: percentile(gaps, 99), unit: "ms" }),
      ];
    }),
    against({
      name: "jit.tool_call.cold.p50.vs_worker_start",
      value: tool.cold,
      unit: "ms",
      floor: workerStart + read,
      floorName: "worker_cell.worker_start.p50 + builtin_fs_read",
      target: `<= ${COLD_STARTS}x (Worker start in a running cell + fs.read)`,
      met: tool.cold <= COLD_STARTS * (workerStart + read),
    }),
    against({ name: "jit.tool_call_overhead.warm", value: tool.warm - read, unit: "ms" }),
    against({ name: "jit.tool_call_overhead.spaced", value: tool.spaced - read, unit: "ms" }),
    against({
      name: "jit.tool_call.last_vs_first",
      value: last(warm.toolGaps) / warm.toolGaps[0],
      unit: "x",
      note: "back to back: the last call's time over the first measured one",
    }),
    against({
      name: "floor.worker_cell.worker_start.p50",
      value: workerStart,
      unit: "ms",
      note: "host asks a running multi-Worker cell for a Worker → its first message",
    }),
  ];
  return {
    section: "jit",
    rows,
    details: {
      tools,
      reads,
      between,
      coldToolGaps: cold.toolGaps,
      warmToolGaps: warm.toolGaps,
      spacedToolGaps: spaced.toolGaps,
      readP99: percentile(warm.readGaps, 99),
    },
  };
}

function last(values: number[]): number {
  return values[values.length - 1];
}

/**
 * Runs the caller once on a kernel with `warmCells`; returns how long each
 * tool call took (its arrival to the caller's next syscall) and the gaps of
 * its reads.
 */
async function measure(
  { tools, reads, warmCells, between }: {
    tools: number;
    reads: number;
    warmCells: number;
    between: number;
  },
): Promise<{ toolGaps: number[]; readGaps: number[] }> {
  const bench = await openBenchKernel({ warmCells });
  const probe = probeDispatch(bench.kernel);
  try {
    await Deno.writeTextFile(`${bench.workspace}/probe.txt`, "probe");
    await bench.kernel.cells.full();
    const end = await bench.kernel.run({
      image: await bench.program("jit", CALLER, {
        capabilities: ["tool:register:*", "fs:read:**"],
      }),
      workspace: bench.workspace,
      input: { tools: tools + 1, reads: reads + 20, between },
    });
    if (end.state !== "exited") {
      throw new Error(`Cannot measure JIT calls: the caller ${end.state}: ${end.error?.message}`);
    }
    const arrivals = probe.arrivals.get(end.pid) ?? [];
    const toolGaps = arrivals.flatMap((a, i) =>
      a.name === "tool.call" && i + 1 < arrivals.length ? [arrivals[i + 1].at - a.at] : []
    );
    const readAt = arrivals.filter((a) => a.name === "fs.read").map((a) => a.at);
    return {
      toolGaps: toolGaps.slice(1), // the first call warms the cache
      readGaps: gaps(readAt.slice(readAt.length - reads - 20)).slice(20),
    };
  } finally {
    probe.stop();
    await bench.close();
  }
}
