/**
 * Agent step growth: the built-in agent loop (`libos:agent`) driven by the
 * scripted model for 1,000 model turns (quick: 200). Every turn but the
 * last calls the built-in `read_file` tool on a small file, so a step is a
 * model turn (`model.complete` with a reference to the transcript so far
 * and the tool result after it), one `fs.read` and the loop's checkpoint
 * (`ckpt.save` of that reference); the last turn answers and the process
 * exits. The transcript grows by one step's messages every step; what a
 * step sends and writes does not.
 *
 * A step is timed on the host: the gap between two consecutive arrivals of
 * `model.complete` at the broker (see `_common.ts`), so the last turn,
 * which has no tool call, is not a step. The floor is the round trip of a
 * durable syscall (`obj.put`, its intent committed first) on the same
 * kernel. The image's storage and journal quotas are raised out of the
 * way: every checkpoint is kept and charged, and the default 64 MiB would
 * stop the run early (`details.storageBytesCharged` says how much they
 * take).
 *
 * @module
 */

import { join } from "node:path";
import { ScriptedModel } from "../mod.ts";
import {
  against,
  type BenchOptions,
  gaps,
  median,
  openBenchKernel,
  probeDispatch,
  round,
  type Row,
  type Section,
} from "./_common.ts";
import { prepareSyscallLoop, syscallGaps } from "./syscall_rtt.ts";

/** Most a step may cost, in durable syscall round trips. */
const STEP_RTTS = 4;
/** Most the mean of the last steps may be, as a multiple of the mean of the first. */
const GROWTH = 1.2;
/** Quotas far above what the run stores. */
const ROOMY = 2 ** 40;

/** The mean of `values`. */
function mean(values: readonly number[]): number {
  return values.reduce((a, b) => a + b, 0) / values.length;
}

/** Bytes of the store's files (`libos.db` and its SQLite companions) in `dir`. */
async function storeBytes(dir: string): Promise<number> {
  let bytes = 0;
  for await (const entry of Deno.readDir(dir)) {
    if (entry.isFile && entry.name.startsWith("libos.db")) {
      bytes += (await Deno.stat(join(dir, entry.name))).size;
    }
  }
  return bytes;
}

/**
 * Measures how an agent's step time grows with its transcript.
 *
 * @example
 * ```ts ignore
 * const section = await benchAgent({ quick: true, log: console.log });
 * ```
 */
export async function benchAgent(options: BenchOptions): Promise<Section> {
  const turns = options.quick ? 200 : 1_000;
  const edge = options.quick ? 20 : 50;
  const script = {
    turns: [
      ...Array.from({ length: turns - 1 }, () => ({
        tool_calls: [{ name: "read_file", arguments: { path: "small.txt" } }],
      })),
      { content: "done", exit: true },
    ],
  };
  const bench = await openBenchKernel({ model: new ScriptedModel(script) });
  const probe = probeDispatch(bench.kernel);
  let closed = false;
  try {
    await Deno.writeTextFile(join(bench.workspace, "small.txt"), "a small file\n".repeat(4));
    const loop = await prepareSyscallLoop(bench);
    const durable = median((await syscallGaps(bench, probe, loop, "obj.put", 350)).slice(50));
    const { tag: image } = await bench.kernel.images.register({
      name: "stepper",
      version: "1.0.0",
      entry: "libos:agent",
      tools: ["read_file"],
      capabilities: ["fs:read:**"],
      policy: {},
      budget: { storageBytes: ROOMY, journalBytes: ROOMY },
    });
    const started = performance.now();
    const end = await bench.kernel.run({ image, workspace: bench.workspace, input: "Read it." });
    const wallMs = performance.now() - started;
    if (end.state !== "exited") {
      throw new Error(`Cannot measure agent steps: the agent ${end.state}: ${end.error?.message}`);
    }
    const arrivals = probe.arrivals.get(end.pid) ?? [];
    const at = (name: string) => arrivals.filter((a) => a.name === name).map((a) => a.at);
    const completes = at("model.complete");
    const reads = at("fs.read");
    const saves = at("ckpt.save");
    const steps = gaps(completes);
    if (steps.length !== turns - 1 || reads.length !== steps.length) {
      throw new Error(
        `Cannot measure agent steps: expected ${
          turns - 1
        } steps, saw ${steps.length} (${reads.length} reads)`,
      );
    }
    // Where a step's time goes: model turn (complete → read), tool (read → save), checkpoint (save → next complete).
    const parts = steps.map((_, i) => ({
      model: reads[i] - completes[i],
      tool: saves[i] - reads[i],
      checkpoint: completes[i + 1] - saves[i],
    }));
    const first = steps.slice(0, edge);
    const last = steps.slice(-edge);
    const partMeans = (slice: typeof parts) => ({
      model: round(mean(slice.map((p) => p.model))),
      tool: round(mean(slice.map((p) => p.tool))),
      checkpoint: round(mean(slice.map((p) => p.checkpoint))),
    });
    const transcript = (await bench.kernel.transcript(end.pid)).length;
    const charged = await bench.kernel.quotas.usage(end.pid);
    await bench.kernel.close();
    closed = true;
    const bytes = await storeBytes(bench.dir);
    options.log(
      `  ${steps.length} steps in ${(wallMs / 1000).toFixed(1)} s: first ${edge} ${
        mean(first).toFixed(2)
      } ms, last ${edge} ${mean(last).toFixed(2)} ms, median ${median(steps).toFixed(2)} ms; ` +
        `obj.put ${durable.toFixed(2)} ms; store ${(bytes / 2 ** 20).toFixed(1)} MiB`,
    );
    const lastSteps = `${turns - edge}-${turns - 1}`;
    const rows: Row[] = [
      against({
        name: "agent.step.median",
        value: median(steps),
        unit: "ms",
        floor: durable,
        floorName: "syscall_rtt.obj.put.p50 (same kernel)",
        target: `<= ${STEP_RTTS}x durable syscall RTT p50`,
        met: median(steps) <= STEP_RTTS * durable,
        note: "model turn + read_file (fs.read) + checkpoint, gap between model.complete arrivals",
      }),
      against({ name: `agent.step.mean_first_${edge}`, value: mean(first), unit: "ms" }),
      against({
        name: `agent.step.mean_last_${edge}`,
        value: mean(last),
        unit: "ms",
        floor: mean(first),
        floorName: `agent.step.mean_first_${edge}`,
        target: `<= ${GROWTH}x the mean of the first ${edge}`,
        met: mean(last) <= GROWTH * mean(first),
        note: `steps ${lastSteps} of ${turns - 1}`,
      }),
      against({ name: "agent.store_bytes", value: bytes / 2 ** 20, unit: "MiB" }),
    ];
    return {
      section: "agent",
      rows,
      details: {
        turns,
        steps: steps.length,
        wallMs,
        durableRttP50: durable,
        firstParts: partMeans(parts.slice(0, edge)),
        lastParts: partMeans(parts.slice(-edge)),
        transcriptMessages: transcript,
        storageBytesCharged: charged.storageBytes,
        journalBytesCharged: charged.journalBytes,
        storeBytes: bytes,
        stepMs: steps.map((s) => round(s, 2)),
      },
    };
  } finally {
    probe.stop();
    if (closed) await Deno.remove(bench.dir, { recursive: true }).catch(() => {});
    else await bench.close();
  }
}
