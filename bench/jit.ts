/**
 * JIT tool call overhead against a built-in call. `tool.call` runs the
 * tool as a child process in its own cell and parks the caller until the
 * child ends; the caller then resumes in a new cell and replays its
 * journal up to the call. `fs.read` is answered in place.
 *
 * A program registers a trivial tool, then calls it N times, then reads a
 * file N times; the host times the gaps between consecutive arrivals of
 * the same call at the broker (see `_common.ts`). Targets: warm, at most
 * 5x `fs.read`; cold, at most 1.5x the floor of a Worker started inside a
 * running cell (`_floors.ts`) plus one `fs.read`.
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
  for (let i = 0; i < input.tools; i++) await sys.tool.call("echo", { n: i });
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
  const cold = await measure(tools, reads, 0);
  const warm = await measure(tools, reads, 2);
  const read = median(warm.readGaps);
  const tool = { cold: median(cold.toolGaps), warm: median(warm.toolGaps) };
  const workerStart = median(await workerCellStarts(options.quick ? 10 : 30));
  options.log(
    `  tool.call ${tool.cold.toFixed(1)} ms cold, ${tool.warm.toFixed(1)} ms with warm cells; ` +
      `fs.read ${read.toFixed(3)} ms`,
  );
  const rows: Row[] = [
    against({ name: "jit.builtin_fs_read.p50", value: read, unit: "ms" }),
    ...(["cold", "warm"] as const).flatMap((kind) => {
      const gaps = kind === "cold" ? cold.toolGaps : warm.toolGaps;
      return [
        against({
          name: `jit.tool_call.${kind}.p50`,
          value: tool[kind],
          unit: "ms",
          floor: read,
          floorName: "builtin_fs_read",
          note: kind === "cold"
            ? "child in a cold cell; the caller parks, restarts in a cold cell and replays"
            : "the same, both cells taken warm (2 warm cells, as `libos serve`)",
          target: kind === "warm" ? `<= ${WARM_READS}x fs.read` : undefined,
          met: kind === "warm" ? tool.warm <= WARM_READS * read : undefined,
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
      coldToolGaps: cold.toolGaps,
      warmToolGaps: warm.toolGaps,
      readP99: percentile(warm.readGaps, 99),
    },
  };
}

/** Runs the caller once on a kernel with `warmCells`; returns the gaps of its calls. */
async function measure(
  tools: number,
  reads: number,
  warmCells: number,
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
      input: { tools: tools + 1, reads: reads + 20 },
    });
    if (end.state !== "exited") {
      throw new Error(`Cannot measure JIT calls: the caller ${end.state}: ${end.error?.message}`);
    }
    const arrivals = probe.arrivals.get(end.pid) ?? [];
    const of = (name: string) => arrivals.filter((a) => a.name === name).map((a) => a.at);
    return {
      toolGaps: gaps(of("tool.call")).slice(1), // the first call warms the cache
      readGaps: gaps(of("fs.read")).slice(20),
    };
  } finally {
    probe.stop();
    await bench.close();
  }
}
