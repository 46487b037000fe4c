/**
 * The benchmark entry: runs every benchmark (or those named with
 * `--only=a,b`), prints a table and writes the results as JSON to
 * `.libos/bench-results.json` under the current directory (or `--out=FILE`).
 * `bench/results.json` is the committed reference run: refresh it on purpose
 * with `--out=bench/results.json`.
 *
 * ```sh
 * deno task bench            # full run, under ~10 minutes on 2 cores
 * deno task bench --quick    # smaller counts, a minute or two
 * ```
 *
 * @module
 */

import { dirname } from "node:path";
import { type BenchOptions, loadAverage, machine, type Row, type Section } from "./_common.ts";
import { benchSyscallRtt } from "./syscall_rtt.ts";
import { benchThroughput } from "./throughput.ts";
import { benchSpawn } from "./spawn.ts";
import { benchParked } from "./parked.ts";
import { benchRecovery } from "./recovery.ts";
import { benchJit } from "./jit.ts";
import { benchExec } from "./exec.ts";
import { benchCells } from "./cells.ts";
import { benchAgent } from "./agent.ts";
import { benchMemory } from "./memory.ts";
import { benchApi } from "./api.ts";

/** Where a run writes its results unless `--out` says otherwise: never the committed reference. */
export const DEFAULT_OUT = ".libos/bench-results.json";

const BENCHES: Record<string, (options: BenchOptions) => Promise<Section>> = {
  syscall_rtt: benchSyscallRtt,
  throughput: benchThroughput,
  spawn: benchSpawn,
  parked: benchParked,
  recovery: benchRecovery,
  jit: benchJit,
  exec: benchExec,
  cells: benchCells,
  agent: benchAgent,
  memory: benchMemory,
  api: benchApi,
};

function cell(value: unknown): string {
  if (value === undefined) return "";
  if (typeof value === "boolean") return value ? "yes" : "NO";
  return String(value);
}

/** Formats rows as a fixed-width table. */
function table(rows: readonly Row[]): string {
  const head = ["measurement", "value", "unit", "floor", "ratio", "target", "met"];
  const body = rows.map((r) => [
    r.name,
    cell(r.value),
    r.unit,
    cell(r.floor),
    r.ratio === undefined ? "" : `${r.ratio}x`,
    cell(r.target),
    cell(r.met),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i])).join("  ").trimEnd();
  return [line(head), line(widths.map((w) => "-".repeat(w))), ...body.map(line)].join("\n");
}

async function main(args: string[]): Promise<void> {
  const quick = args.includes("--quick");
  const only = args.find((a) => a.startsWith("--only="))?.slice("--only=".length).split(",");
  const out = args.find((a) => a.startsWith("--out="))?.slice("--out=".length) ??
    DEFAULT_OUT;
  const unknown = only?.filter((name) => !(name in BENCHES)) ?? [];
  if (unknown.length) {
    console.error(
      `Cannot run benchmark "${unknown[0]}": expected one of ${Object.keys(BENCHES).join(", ")}`,
    );
    Deno.exit(1);
  }
  const log = (line: string) => console.error(line);
  const started = performance.now();
  const sections: Section[] = [];
  for (const [name, bench] of Object.entries(BENCHES)) {
    if (only && !only.includes(name)) continue;
    log(`== ${name}`);
    const t0 = performance.now();
    const before = await loadAverage();
    let section: Section;
    try {
      section = await bench({ quick, log });
    } catch (error) {
      log(`  failed: ${(error as Error).stack ?? error}`);
      section = { section: name, rows: [], details: { error: String(error) } };
    }
    section.load = { before, after: await loadAverage() };
    sections.push(section);
    log(
      `  (${
        ((performance.now() - t0) / 1000).toFixed(1)
      } s, load average ${before} → ${section.load.after})`,
    );
  }
  const result = {
    date: new Date().toISOString(),
    mode: quick ? "quick" : "full",
    machine: await machine(),
    totalSeconds: Math.round((performance.now() - started) / 100) / 10,
    sections,
  };
  await Deno.mkdir(dirname(out) || ".", { recursive: true });
  await Deno.writeTextFile(out, JSON.stringify(result, null, 2) + "\n");
  const m = result.machine;
  console.log(
    `machine: ${m.cores} cores, ${m.memoryMb} MB, ${m.cpu}, Deno ${m.deno}; ${result.mode} run in ${result.totalSeconds} s`,
  );
  for (const section of sections) {
    console.log(`\n## ${section.section}\n${table(section.rows)}`);
  }
  console.log(`\nwrote ${out}`);
}

if (import.meta.main) await main(Deno.args);
