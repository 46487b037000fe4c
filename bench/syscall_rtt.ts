/**
 * Syscall round trip, program → cell → broker → capability check → journal
 * and audit → reply, against two floors measured in the same run: a raw
 * postMessage round trip to a Worker, and a raw NDJSON round trip to a
 * zero-permission subprocess (alone, with a Worker inside, which is the
 * cell's shape without the runtime, and with 8 Workers inside routed by
 * slot, a multi-Worker cell; the target is at most 1.3x that one).
 *
 * A program loops one syscall; the host timestamps each arrival at the
 * broker, and one gap between arrivals is one round trip (see `_common.ts`).
 * `time.now` is a pure call (its journal record is buffered), `fs.stat` is
 * authorized against an `fs:read` grant; `fs.write` (idempotent) has its
 * intent committed to the KV file before it runs, and `obj.put` (a change of
 * the store alone) commits the object with its journal and audit records,
 * in one commit.
 *
 * @module
 */

import {
  against,
  type BenchKernel,
  type BenchOptions,
  type DispatchProbe,
  gaps,
  median,
  openBenchKernel,
  percentile,
  probeDispatch,
  type Row,
  type Section,
} from "./_common.ts";
import { ndjsonRtt, workerCellRtt, workerRtt } from "./_floors.ts";

/** Workers up in the multi-Worker cell whose echo is the floor of the round trip. */
const CELL_WORKERS = 8;

/** A program that loops the syscall `input.kind` `input.n` times. */
const LOOP = `export default async function main(sys, input) {
  for (let i = 0; i < input.n; i++) {
    if (input.kind === "time.now") await sys.time.now();
    else if (input.kind === "fs.stat") await sys.fs.stat("probe.txt");
    else if (input.kind === "fs.write") await sys.fs.write("out/w.txt", "x" + i);
    else await sys.obj.put("self", "k" + (i % 16), i);
  }
  return input.n;
}`;

const KINDS = ["time.now", "fs.stat", "fs.write", "obj.put"] as const;
const DURABLE = new Set<string>(["fs.write", "obj.put"]);

/** A syscall the loop program can repeat. */
export type LoopKind = typeof KINDS[number];

/**
 * Registers the loop program on `bench` (with the file and directory its
 * calls use); returns its tag for {@link syscallGaps}.
 */
export async function prepareSyscallLoop(bench: BenchKernel): Promise<string> {
  await Deno.writeTextFile(`${bench.workspace}/probe.txt`, "probe");
  await Deno.mkdir(`${bench.workspace}/out`, { recursive: true });
  return await bench.program("rtt", LOOP, { capabilities: ["fs:read:**", "fs:write:out/**"] });
}

/**
 * Runs the loop program `tag` for `n` calls of `kind` and returns the
 * gaps (ms) between consecutive arrivals of those calls at the broker:
 * one round trip each.
 */
export async function syscallGaps(
  bench: BenchKernel,
  probe: DispatchProbe,
  tag: string,
  kind: LoopKind,
  n: number,
): Promise<number[]> {
  const proc = await bench.kernel.run({
    image: tag,
    workspace: bench.workspace,
    input: { kind, n },
  });
  if (proc.state !== "exited") {
    throw new Error(`Cannot measure ${kind}: the program ${proc.state}: ${proc.error?.message}`);
  }
  const times = (probe.arrivals.get(proc.pid) ?? []).filter((a) => a.name === kind)
    .map((a) => a.at);
  probe.arrivals.delete(proc.pid);
  return gaps(times);
}

/** p50 and p99 of one sample set. */
function summary(samples: readonly number[]): { p50: number; p99: number } {
  return { p50: percentile(samples, 50), p99: percentile(samples, 99) };
}

/**
 * Measures the syscall round trip and its floors.
 *
 * @example
 * ```ts ignore
 * const section = await benchSyscallRtt({ quick: true, log: console.log });
 * ```
 */
export async function benchSyscallRtt(options: BenchOptions): Promise<Section> {
  const rounds = options.quick ? 3 : 5;
  const calls = options.quick ? 400 : 1500;
  const warm = 50;
  const bench = await openBenchKernel();
  const probe = probeDispatch(bench.kernel);
  const per: Record<string, { p50: number[]; p99: number[] }> = {};
  const add = (key: string, s: { p50: number; p99: number }) => {
    per[key] ??= { p50: [], p99: [] };
    per[key].p50.push(s.p50);
    per[key].p99.push(s.p99);
  };
  try {
    const tag = await prepareSyscallLoop(bench);
    for (let round = 0; round < rounds; round++) {
      // Floors and the real thing take turns, so noise hits them alike.
      add("worker", summary((await workerRtt(calls + warm)).slice(warm)));
      add("ndjson", summary((await ndjsonRtt(calls + warm)).slice(warm)));
      add(
        "ndjson+worker",
        summary((await ndjsonRtt(calls + warm, { viaWorker: true })).slice(warm)),
      );
      add("worker_cell", summary((await workerCellRtt(CELL_WORKERS, calls + warm)).slice(warm)));
      for (const kind of KINDS) {
        const n = DURABLE.has(kind) ? Math.min(calls, 600) + warm : calls + warm;
        add(kind, summary((await syscallGaps(bench, probe, tag, kind, n)).slice(warm)));
      }
      options.log(
        `  round ${round + 1}/${rounds}: worker ${per.worker.p50.at(-1)!.toFixed(3)} ms, ` +
          `ndjson ${per.ndjson.p50.at(-1)!.toFixed(3)} ms, time.now ${
            per["time.now"].p50.at(-1)!.toFixed(3)
          } ms`,
      );
    }
  } finally {
    probe.stop();
    await bench.close();
  }
  const med = (key: string, p: "p50" | "p99") => median(per[key][p]);
  const rows: Row[] = [
    against({ name: "floor.worker_postmessage.p50", value: med("worker", "p50"), unit: "ms" }),
    against({ name: "floor.worker_postmessage.p99", value: med("worker", "p99"), unit: "ms" }),
    against({ name: "floor.ndjson_subprocess.p50", value: med("ndjson", "p50"), unit: "ms" }),
    against({ name: "floor.ndjson_subprocess.p99", value: med("ndjson", "p99"), unit: "ms" }),
    against({
      name: "floor.ndjson_subprocess_worker.p50",
      value: med("ndjson+worker", "p50"),
      unit: "ms",
      note: "pipe to a subprocess and postMessage to a Worker in it: a cell with no runtime",
    }),
    against({
      name: "floor.ndjson_subprocess_worker.p99",
      value: med("ndjson+worker", "p99"),
      unit: "ms",
    }),
    against({
      name: "floor.worker_cell.p50",
      value: med("worker_cell", "p50"),
      unit: "ms",
      note:
        `pipe to a subprocess hosting ${CELL_WORKERS} Workers, routed by slot: a multi-Worker cell with no runtime`,
    }),
    against({ name: "floor.worker_cell.p99", value: med("worker_cell", "p99"), unit: "ms" }),
  ];
  for (const kind of KINDS) {
    for (const p of ["p50", "p99"] as const) {
      rows.push(against({
        name: `syscall_rtt.${kind}.${p}`,
        value: med(kind, p),
        unit: "ms",
        floor: med("worker", p),
        floorName: "worker_postmessage",
        target: kind === "time.now" && p === "p50" ? "<= 2x worker postMessage RTT" : undefined,
        met: kind === "time.now" && p === "p50" ? med(kind, p) <= 2 * med("worker", p) : undefined,
      }));
      rows.push(against({
        name: `syscall_rtt.${kind}.${p}.vs_ndjson`,
        value: med(kind, p),
        unit: "ms",
        floor: med("ndjson", p),
        floorName: "ndjson_subprocess",
      }));
      rows.push(against({
        name: `syscall_rtt.${kind}.${p}.vs_cell`,
        value: med(kind, p),
        unit: "ms",
        floor: med("ndjson+worker", p),
        floorName: "ndjson_subprocess_worker",
      }));
      const targeted = kind === "time.now" && p === "p50";
      rows.push(against({
        name: `syscall_rtt.${kind}.${p}.vs_worker_cell`,
        value: med(kind, p),
        unit: "ms",
        floor: med("worker_cell", p),
        floorName: "worker_cell",
        target: targeted ? "<= 1.3x multi-Worker cell echo" : undefined,
        met: targeted ? med(kind, p) <= 1.3 * med("worker_cell", p) : undefined,
      }));
    }
  }
  return {
    section: "syscall_rtt",
    rows,
    details: {
      rounds,
      callsPerRound: calls,
      warmUpCalls: warm,
      perRound: per,
      method: "host-side gaps between consecutive arrivals at Broker.dispatch; medians over rounds",
    },
  };
}
