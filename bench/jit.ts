/**
 * JIT tool call overhead against a built-in call. `tool.call` runs the
 * tool as a child process in its own cell and parks the caller until the
 * child ends; the caller then resumes in a new cell and replays its
 * journal up to the call. `fs.read` is answered in place.
 *
 * A program registers a trivial tool, then calls it N times, then reads a
 * file N times; the host times the gaps between consecutive arrivals of
 * the same call at the broker (see `_common.ts`).
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
  const bench = await openBenchKernel();
  const probe = probeDispatch(bench.kernel);
  try {
    await Deno.writeTextFile(`${bench.workspace}/probe.txt`, "probe");
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
    const toolGaps = gaps(of("tool.call")).slice(1); // the first call warms the cache
    const readGaps = gaps(of("fs.read")).slice(20);
    const tool = median(toolGaps);
    const read = median(readGaps);
    options.log(`  tool.call ${tool.toFixed(1)} ms, fs.read ${read.toFixed(3)} ms`);
    const rows: Row[] = [
      against({ name: "jit.builtin_fs_read.p50", value: read, unit: "ms" }),
      against({
        name: "jit.tool_call.p50",
        value: tool,
        unit: "ms",
        floor: read,
        floorName: "builtin_fs_read",
        note: "child cell + caller parks, restarts in a new cell and replays",
      }),
      against({
        name: "jit.tool_call.p99",
        value: percentile(toolGaps, 99),
        unit: "ms",
      }),
      against({
        name: "jit.tool_call_overhead",
        value: tool - read,
        unit: "ms",
      }),
    ];
    return {
      section: "jit",
      rows,
      details: { tools, reads, toolGaps, readP99: percentile(readGaps, 99) },
    };
  } finally {
    probe.stop();
    await bench.close();
  }
}
