/**
 * Floors of a multi-Worker cell: one zero-permission `deno run` subprocess
 * hosting many zero-permission Workers, with none of the runtime (see
 * `_echo.ts`, mode `workers`). What a runtime whose processes are Workers
 * in a shared cell can at best reach on this machine:
 *
 * - round trips: NDJSON lines carrying a slot, routed to that Worker and
 *   back, with 8, 32 and 64 Workers up: the round-trip time of one
 *   sequential caller (to each slot in turn), and the echoes per second of
 *   as many callers as Workers, each looping one message at a time;
 * - Worker start: from the host asking the running subprocess to start a
 *   Worker to that Worker's first message back, one at a time (latency),
 *   and sustained with 16 starts in flight (rate), each Worker terminated
 *   once up;
 * - memory: the subprocess's RSS (`ps`, from the host) with 1 and with 32
 *   idle Workers, and so the RSS one idle Worker adds.
 *
 * @module
 */

import {
  against,
  type BenchOptions,
  median,
  percentile,
  type Row,
  type Section,
} from "./_common.ts";
import {
  START_IN_FLIGHT,
  workerCellRss,
  workerCellRtt,
  workerCellStartRate,
  workerCellStarts,
  workerCellThroughput,
} from "./_floors.ts";

/** Worker counts the round trips are measured at. */
export const CELL_WORKERS = [8, 32, 64] as const;

/**
 * Measures the multi-Worker cell floors.
 *
 * @example
 * ```ts ignore
 * const section = await benchCells({ quick: true, log: console.log });
 * ```
 */
export async function benchCells(options: BenchOptions): Promise<Section> {
  const rounds = options.quick ? 1 : 3;
  const calls = options.quick ? 400 : 1500;
  const warm = 50;
  const echoMs = options.quick ? 1500 : 3000;
  const per: Record<string, number[]> = {};
  const add = (key: string, value: number) => (per[key] ??= []).push(value);
  for (let round = 0; round < rounds; round++) {
    for (const workers of CELL_WORKERS) {
      const rtt = (await workerCellRtt(workers, calls + warm)).slice(warm);
      add(`${workers}.p50`, percentile(rtt, 50));
      add(`${workers}.p99`, percentile(rtt, 99));
      add(`${workers}.echo`, await workerCellThroughput(workers, echoMs));
      options.log(
        `  round ${round + 1}/${rounds}, ${workers} Workers: RTT p50 ${
          per[`${workers}.p50`].at(-1)!.toFixed(3)
        } ms, ${per[`${workers}.echo`].at(-1)!.toFixed(0)} echoes/s`,
      );
    }
    add("rss.1", await workerCellRss(1));
    add("rss.32", await workerCellRss(32));
  }
  const starts = await workerCellStarts(options.quick ? 20 : 60);
  const rateMs = options.quick ? 3000 : 10_000;
  const rate = await workerCellStartRate(rateMs, START_IN_FLIGHT);
  const rss1 = median(per["rss.1"]) / 1024;
  const rss32 = median(per["rss.32"]) / 1024;
  options.log(
    `  Worker start p50 ${median(starts).toFixed(1)} ms, ${rate.toFixed(0)}/s sustained; RSS ${
      rss1.toFixed(1)
    } MB with 1 Worker, ${rss32.toFixed(1)} MB with 32`,
  );
  const rows: Row[] = CELL_WORKERS.flatMap((workers) => [
    against({
      name: `floor.worker_cell.${workers}_workers.rtt.p50`,
      value: median(per[`${workers}.p50`]),
      unit: "ms",
      note: `one sequential caller, each slot in turn, ${workers} Workers up`,
    }),
    against({
      name: `floor.worker_cell.${workers}_workers.rtt.p99`,
      value: median(per[`${workers}.p99`]),
      unit: "ms",
    }),
    against({
      name: `floor.worker_cell.${workers}_workers.echoes_per_second`,
      value: Math.round(median(per[`${workers}.echo`])),
      unit: "echoes/s",
      note: `${workers} callers, one per Worker, each one message at a time`,
    }),
  ]);
  rows.push(
    against({
      name: "floor.worker_cell.worker_start.p50",
      value: median(starts),
      unit: "ms",
      note: "host asks the running cell for a Worker → its first message, one at a time",
    }),
    against({
      name: "floor.worker_cell.worker_start.p99",
      value: percentile(starts, 99),
      unit: "ms",
    }),
    against({
      name: "floor.worker_cell.worker_start_rate",
      value: rate,
      unit: "Workers/s",
      note: `${START_IN_FLIGHT} starts in flight for ${rateMs / 1000} s, each Worker ended once up`,
    }),
    against({ name: "floor.worker_cell.rss.1_worker", value: rss1, unit: "MB" }),
    against({ name: "floor.worker_cell.rss.32_workers", value: rss32, unit: "MB" }),
    against({
      name: "floor.worker_cell.rss.per_idle_worker",
      value: (rss32 - rss1) / 31,
      unit: "MB",
      note: "(RSS with 32 idle Workers − RSS with 1) / 31, read with ps from the host",
    }),
  );
  return {
    section: "cells",
    rows,
    details: { rounds, callsPerRound: calls, echoMs, perRound: per, starts, rateMs },
  };
}
