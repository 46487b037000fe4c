/**
 * Memory per running process: the RSS of the host and of every OS process
 * under it (its cells) with 100 processes running, in two shapes: one
 * tree (a root that spawns 99 children) and 100 independent roots. Each
 * process then waits in `exec.run` of `sleep` (the kernel runs commands
 * with `execSandbox: "none"` here), so it stays `running`, its program up
 * and waiting for the reply, without using the CPU: 100 processes looping
 * a syscall would take both cores of this machine and starve the cells
 * still starting. Only Deno processes are summed (the host and its
 * cells), not the `sleep` commands.
 *
 * The measured host is a subprocess (this module run with `host SHAPE N`):
 * it opens a kernel with room for every process to run at once, reports
 * when idle, spawns on request, and reports again once every process has
 * made its `exec.run`. This side reads the RSS of the host and all its
 * descendants with `ps` at both points (the idle host is the baseline),
 * then tells the host to stop.
 *
 * @module
 */

import { fileURLToPath } from "node:url";
import {
  against,
  type BenchOptions,
  HOST_FLAGS,
  median,
  openBenchKernel,
  round,
  type Row,
  type Section,
  treeRss,
} from "./_common.ts";
import { readLines } from "../cli/lines.ts";

/** Most RSS a running process may cost at 100 processes, in MB. */
const TARGET_MB = 12;

/** Waits in `exec.run`; a root first spawns `input.children` processes of its own image. */
const WAITER = `export default async function main(sys, input) {
  if (input.children) {
    const self = await sys.proc.self();
    for (let i = 0; i < input.children; i++) {
      await sys.proc.spawn({ image: self.image, input: { children: 0 } });
    }
  }
  for (;;) await sys.exec.run(["sleep", "120"], { timeoutMs: 130000 });
}`;

/** One tree; independent roots (one cell each, the default); roots of one principal sharing cells. */
type Shape = "tree" | "roots" | "principal_roots";

/** The host side: runs `count` looping processes in `shape` and answers on stdout. */
async function host(shape: Shape, count: number): Promise<void> {
  const bench = await openBenchKernel({
    maxCells: count + 8,
    warmCells: 0,
    execSandbox: "none",
    cellSharing: shape === "principal_roots" ? "principal" : "tree",
  });
  const lines = readLines(Deno.stdin.readable);
  const say = (message: Record<string, unknown>) => console.log(JSON.stringify(message));
  const waiting = new Set<number>();
  let allUp!: () => void;
  const everyoneUp = new Promise<void>((resolve) => allUp = resolve);
  const broker = bench.kernel.broker;
  const dispatch = broker.dispatch;
  broker.dispatch = function (ctx, request) {
    if (request.name === "exec.run" && !waiting.has(ctx.pid)) {
      waiting.add(ctx.pid);
      if (waiting.size === count) allUp();
    }
    return dispatch.call(broker, ctx, request);
  };
  try {
    const tag = await bench.program("waiter", WAITER, {
      capabilities: ["proc:spawn:*", "fs:read:**", "exec:run:sleep"],
      budget: { children: count },
    });
    say({ t: "idle", pid: Deno.pid });
    await lines.next();
    const started = performance.now();
    const roots = shape === "tree" ? 1 : count;
    const input = { children: shape === "tree" ? count - 1 : 0 };
    for (let i = 0; i < roots; i++) {
      const proc = await bench.kernel.spawn({ image: tag, workspace: bench.workspace, input });
      bench.kernel.start(proc.pid);
    }
    await everyoneUp;
    const upMs = performance.now() - started;
    const running = (await bench.kernel.processes.list()).filter((p) => p.state === "running");
    say({ t: "up", upMs, running: running.length });
    await lines.next();
  } finally {
    broker.dispatch = dispatch;
    await bench.close();
  }
}

/** What one host run measured, RSS in KiB. */
interface HostRun {
  shape: Shape;
  idleKiB: number;
  runningKiB: number;
  osProcesses: number;
  running: number;
  upMs: number;
  /** Processes under the host that are not Deno (the `sleep` commands): not summed. */
  others: number;
}

/** Runs a host subprocess with `count` processes in `shape`; reads its tree's RSS idle and running. */
async function measure(shape: Shape, count: number): Promise<HostRun> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      ...HOST_FLAGS,
      fileURLToPath(import.meta.url),
      "host",
      shape,
      String(count),
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  const lines = readLines(child.stdout);
  const stderr = new Response(child.stderr).text();
  const next = async (t: string) => {
    const line = await lines.next();
    if (line.done) throw new Error(`Cannot measure memory: the host ended:\n${await stderr}`);
    const message = JSON.parse(line.value) as Record<string, number> & { t: string };
    if (message.t !== t) throw new Error(`Cannot measure memory: the host said ${line.value}`);
    return message;
  };
  const proceed = () => writer.write(new TextEncoder().encode("go\n"));
  // The host and its cells are Deno; the commands they run are not counted.
  const denoTree = async (pid: number) => {
    const all = (await treeRss(pid)).processes;
    const deno = all.filter((p) => p.command === all.find((q) => q.pid === pid)!.command);
    return {
      kib: deno.reduce((n, p) => n + p.rssKiB, 0),
      count: deno.length,
      others: all.length - deno.length,
    };
  };
  try {
    const idle = await next("idle");
    const idleKiB = (await denoTree(idle.pid)).kib;
    await proceed();
    const up = await next("up");
    const samples = [];
    for (let i = 0; i < 3; i++) samples.push(await denoTree(idle.pid));
    await proceed();
    return {
      shape,
      idleKiB,
      runningKiB: median(samples.map((s) => s.kib)),
      osProcesses: samples[0].count,
      running: up.running,
      upMs: up.upMs,
      others: samples[0].others,
    };
  } finally {
    await writer.close().catch(() => {});
    await child.status;
  }
}

/**
 * Measures the RSS per running process at 100 processes, as one tree and
 * as independent roots.
 *
 * @example
 * ```ts ignore
 * const section = await benchMemory({ quick: true, log: console.log });
 * ```
 */
export async function benchMemory(options: BenchOptions): Promise<Section> {
  const count = 100;
  const runs: HostRun[] = [];
  const rows: Row[] = [];
  for (const shape of ["tree", "roots", "principal_roots"] as const) {
    const run = await measure(shape, count);
    runs.push(run);
    const perMb = run.runningKiB / 1024 / count;
    options.log(
      `  ${shape}: ${run.running} running after ${(run.upMs / 1000).toFixed(1)} s; RSS ${
        (run.runningKiB / 1024).toFixed(0)
      } MB over ${run.osProcesses} OS processes (idle host ${
        (run.idleKiB / 1024).toFixed(0)
      } MB): ${perMb.toFixed(1)} MB per process`,
    );
    rows.push(
      against({
        name: `memory.${count}_running.${shape}.rss_per_process`,
        value: perMb,
        unit: "MB",
        target: `<= ${TARGET_MB} MB per running process`,
        met: perMb <= TARGET_MB,
        note: `(host + every OS process under it) / ${count}; ${
          shape === "tree"
            ? "one root with 99 children"
            : shape === "roots"
            ? "100 independent roots, a cell per tree (the default)"
            : "100 independent roots of one principal, cellSharing: principal"
        }`,
      }),
      against({
        name: `memory.${count}_running.${shape}.rss_total`,
        value: run.runningKiB / 1024,
        unit: "MB",
        floor: run.idleKiB / 1024,
        floorName: "the idle host",
        note: `${run.osProcesses} Deno processes (${run.others} commands not counted)`,
      }),
    );
  }
  return {
    section: "memory",
    rows,
    details: {
      count,
      runs: runs.map((r) => ({ ...r, upMs: round(r.upMs, 1) })),
      method:
        "ps -e (pid, ppid, rss, comm): the host subprocess and its Deno descendants; median of 3",
    },
  };
}

if (import.meta.main && Deno.args[0] === "host") {
  await host(Deno.args[1] as Shape, Number(Deno.args[2]));
}
