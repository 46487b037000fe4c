/**
 * Floors: what the same trips cost with none of the runtime in the way.
 * A postMessage round trip to a Worker in the host, an NDJSON round trip
 * over pipes to a zero-permission `deno run` subprocess (alone, and with a
 * Worker inside it, the shape of a cell), and how long such a subprocess
 * and such a Worker take to start.
 *
 * A multi-Worker cell is one zero-permission subprocess hosting many
 * zero-permission Workers, each in a slot; NDJSON lines carry a slot and
 * go to that Worker and back. Its floors: round trips with many Workers
 * up, a Worker started inside the running subprocess, and the subprocess's
 * RSS per idle Worker.
 *
 * @module
 */

import { fileURLToPath } from "node:url";
import { readLines } from "../cli/lines.ts";
import { CELL_RUN_FLAGS } from "../runtime/cell.ts";
import { treeRss } from "./_common.ts";

const ECHO = fileURLToPath(new URL("./_echo.ts", import.meta.url));
const MESSAGE = { t: "syscall", id: 0, name: "time.now", args: {} };

/** Round-trip times (ms) of `count` sequential postMessage pings to a Worker in this process. */
export async function workerRtt(count: number): Promise<number[]> {
  const source = "self.onmessage = (event) => self.postMessage(event.data);";
  const worker = new Worker(
    URL.createObjectURL(new Blob([source], { type: "application/javascript" })),
    { type: "module" },
  );
  try {
    const samples: number[] = [];
    let resolve!: () => void;
    worker.onmessage = () => resolve();
    for (let i = 0; i < count; i++) {
      const reply = new Promise<void>((r) => resolve = r);
      const started = performance.now();
      worker.postMessage({ ...MESSAGE, id: i });
      await reply;
      samples.push(performance.now() - started);
    }
    return samples;
  } finally {
    worker.terminate();
  }
}

/** How an echo subprocess answers: itself, through one Worker, or through the Worker of a slot. */
type EchoMode = "plain" | "worker" | "workers";

/** A zero-permission echo subprocess, started the way a cell is. */
class EchoProcess {
  #child: Deno.ChildProcess;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #lines: AsyncGenerator<string>;
  #encoder = new TextEncoder();

  constructor(mode: EchoMode) {
    this.#child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        ...CELL_RUN_FLAGS,
        ECHO,
        ...(mode === "plain" ? [] : [mode]),
      ],
      stdin: "piped",
      stdout: "piped",
      stderr: "null",
    }).spawn();
    this.#writer = this.#child.stdin.getWriter();
    this.#lines = readLines(this.#child.stdout);
  }

  /** The subprocess's OS pid. */
  get pid(): number {
    return this.#child.pid;
  }

  async line(): Promise<string> {
    const next = await this.#lines.next();
    if (next.done) throw new Error("Cannot read from the echo subprocess: it ended");
    return next.value;
  }

  async send(message: unknown): Promise<void> {
    await this.#writer.write(this.#encoder.encode(JSON.stringify(message) + "\n"));
  }

  async close(): Promise<void> {
    await this.#writer.close().catch(() => {});
    await this.#child.status;
  }
}

/**
 * Round-trip times (ms) of `count` sequential NDJSON lines to a
 * zero-permission subprocess; with `viaWorker`, through a Worker inside it.
 */
export async function ndjsonRtt(
  count: number,
  options: { viaWorker?: boolean } = {},
): Promise<number[]> {
  const echo = new EchoProcess(options.viaWorker ? "worker" : "plain");
  try {
    await echo.line(); // ready
    const samples: number[] = [];
    for (let i = 0; i < count; i++) {
      const started = performance.now();
      await echo.send({ ...MESSAGE, id: i });
      await echo.line();
      samples.push(performance.now() - started);
    }
    return samples;
  } finally {
    await echo.close();
  }
}

/** Time (ms) from spawning a zero-permission subprocess until its first line arrives. */
export async function subprocessStart(options: { viaWorker?: boolean } = {}): Promise<number> {
  const started = performance.now();
  const echo = new EchoProcess(options.viaWorker ? "worker" : "plain");
  await echo.line();
  if (options.viaWorker) {
    // The Worker is up once it has echoed something.
    await echo.send(MESSAGE);
    await echo.line();
  }
  const elapsed = performance.now() - started;
  await echo.close();
  return elapsed;
}

/** Time (ms) from `new Worker` in this process until its first echo. */
export async function workerStart(): Promise<number> {
  const source = "self.onmessage = (event) => self.postMessage(event.data);";
  const url = URL.createObjectURL(new Blob([source], { type: "application/javascript" }));
  const started = performance.now();
  const worker = new Worker(url, { type: "module" });
  await new Promise<void>((resolve) => {
    worker.onmessage = () => resolve();
    worker.postMessage(MESSAGE);
  });
  const elapsed = performance.now() - started;
  worker.terminate();
  return elapsed;
}

/**
 * Round trips per second that `cells` bare cells (a zero-permission
 * subprocess with a Worker inside, echoing) sustain together for `ms`,
 * each looping one message at a time: the ceiling the cell architecture
 * sets on syscalls per second on this machine, before any runtime work.
 */
export async function cellsThroughput(cells: number, ms: number): Promise<number> {
  const echoes = Array.from({ length: cells }, () => new EchoProcess("worker"));
  try {
    await Promise.all(echoes.map(async (echo) => {
      await echo.line(); // ready
      await echo.send(MESSAGE); // the Worker is up once it has echoed
      await echo.line();
    }));
    const end = performance.now() + ms;
    const counts = await Promise.all(echoes.map(async (echo) => {
      let n = 0;
      for (; performance.now() < end; n++) {
        await echo.send({ ...MESSAGE, id: n });
        await echo.line();
      }
      return n;
    }));
    return counts.reduce((a, b) => a + b, 0) / (ms / 1000);
  } finally {
    await Promise.all(echoes.map((echo) => echo.close()));
  }
}

/**
 * Bare cells (a zero-permission subprocess plus a Worker, to its first
 * echo) started per second when `count` are started `concurrency` at a
 * time: the ceiling on how fast processes that each need a fresh cell can
 * be resumed on this machine.
 */
export async function cellStartRate(count: number, concurrency: number): Promise<number> {
  const started = performance.now();
  let next = 0;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < count) {
      next++;
      await subprocessStart({ viaWorker: true });
    }
  }));
  return count / (performance.now() - started) * 1000;
}

/** Starts in flight for the sustained Worker-start rate (the kernel's default cell count). */
export const START_IN_FLIGHT = 16;

/** A multi-Worker cell: one zero-permission subprocess, a zero-permission Worker per slot. */
export class WorkerCell {
  #echo = new EchoProcess("workers");
  #waiting = new Map<number, { resolve: () => void; reject: (error: Error) => void }>();
  #ready: Promise<void>;
  #reading: Promise<void>;
  #ended: Error | undefined;

  private constructor() {
    let ready!: () => void;
    this.#ready = new Promise((resolve) => ready = resolve);
    this.#reading = this.#route(ready);
  }

  /** Starts the subprocess, then the Workers of slots `0 .. workers - 1`, each up. */
  static async open(workers: number): Promise<WorkerCell> {
    const cell = new WorkerCell();
    await Promise.race([cell.#ready, cell.#reading]);
    if (cell.#ended) throw cell.#ended;
    await Promise.all(Array.from({ length: workers }, (_, slot) => cell.start(slot)));
    return cell;
  }

  /** Reads every line and hands it to whoever waits on its slot. */
  async #route(ready: () => void): Promise<void> {
    try {
      for (;;) {
        const message = JSON.parse(await this.#echo.line()) as { t: string; slot: number };
        if (message.t === "ready") ready();
        else {
          const waiter = this.#waiting.get(message.slot);
          this.#waiting.delete(message.slot);
          waiter?.resolve();
        }
      }
    } catch (error) {
      this.#ended = new Error(`Cannot use the multi-Worker cell: ${(error as Error).message}`);
      for (const waiter of this.#waiting.values()) waiter.reject(this.#ended);
      this.#waiting.clear();
    }
  }

  #ask(slot: number, message: Record<string, unknown>): Promise<void> {
    if (this.#ended) return Promise.reject(this.#ended);
    const answered = new Promise<void>((resolve, reject) =>
      this.#waiting.set(slot, { resolve, reject })
    );
    return this.#echo.send({ ...message, slot }).then(() => answered);
  }

  /** The subprocess's OS pid. */
  get pid(): number {
    return this.#echo.pid;
  }

  /** Starts the Worker of `slot`; resolves at its first message. */
  start(slot: number): Promise<void> {
    return this.#ask(slot, { t: "start" });
  }

  /** One round trip to the Worker of `slot`. */
  echo(slot: number, id: number): Promise<void> {
    return this.#ask(slot, { ...MESSAGE, id, t: "echo" });
  }

  /** Terminates the Worker of `slot`. */
  stop(slot: number): Promise<void> {
    return this.#echo.send({ t: "stop", slot });
  }

  /** Ends the subprocess. */
  async close(): Promise<void> {
    await this.#echo.close();
    await this.#reading;
  }
}

/** Runs `use` on a fresh multi-Worker cell with `workers` Workers up, then closes it. */
async function withWorkerCell<T>(
  workers: number,
  use: (cell: WorkerCell) => Promise<T>,
): Promise<T> {
  const cell = await WorkerCell.open(workers);
  try {
    return await use(cell);
  } finally {
    await cell.close();
  }
}

/**
 * Round-trip times (ms) of `count` sequential echoes through a cell with
 * `workers` Workers up, to each slot in turn: one caller.
 */
export function workerCellRtt(workers: number, count: number): Promise<number[]> {
  return withWorkerCell(workers, async (cell) => {
    const samples: number[] = [];
    for (let i = 0; i < count; i++) {
      const started = performance.now();
      await cell.echo(i % workers, i);
      samples.push(performance.now() - started);
    }
    return samples;
  });
}

/**
 * Echo round trips per second through a cell with `workers` Workers, one
 * caller per Worker, each looping one message at a time for `ms`.
 */
export function workerCellThroughput(workers: number, ms: number): Promise<number> {
  return workerCellsThroughput([workers], ms);
}

/**
 * Echo round trips per second through several multi-Worker cells at once,
 * cell `i` with `layout[i]` Workers, one caller per Worker, each looping one
 * message at a time for `ms`: the ceiling of a runtime whose processes are
 * spread over cells that way.
 */
export async function workerCellsThroughput(
  layout: readonly number[],
  ms: number,
): Promise<number> {
  const cells = await Promise.all(layout.map((workers) => WorkerCell.open(workers)));
  try {
    const started = performance.now();
    const end = started + ms;
    const counts = await Promise.all(
      cells.flatMap((cell, i) =>
        Array.from({ length: layout[i] }, async (_, slot) => {
          let n = 0;
          for (; performance.now() < end; n++) await cell.echo(slot, n);
          return n;
        })
      ),
    );
    return counts.reduce((a, b) => a + b, 0) / ((performance.now() - started) / 1000);
  } finally {
    await Promise.all(cells.map((cell) => cell.close()));
  }
}

/**
 * Times (ms) from asking a running cell (one Worker already up) to start
 * a Worker until that Worker's first message arrives, `count` one at a
 * time; each is terminated once up.
 */
export function workerCellStarts(count: number): Promise<number[]> {
  return withWorkerCell(1, async (cell) => {
    const samples: number[] = [];
    for (let i = 0; i < count; i++) {
      const started = performance.now();
      await cell.start(1);
      samples.push(performance.now() - started);
      await cell.stop(1);
    }
    return samples;
  });
}

/**
 * Workers started per second inside one running cell over `ms`,
 * `inFlight` starts at a time; each is terminated once up, as a process
 * that ends gives its Worker back.
 */
export function workerCellStartRate(ms: number, inFlight: number): Promise<number> {
  return withWorkerCell(0, async (cell) => {
    const started = performance.now();
    const end = started + ms;
    const counts = await Promise.all(Array.from({ length: inFlight }, async (_, slot) => {
      let n = 0;
      for (; performance.now() < end; n++) {
        await cell.start(slot);
        await cell.stop(slot);
      }
      return n;
    }));
    return counts.reduce((a, b) => a + b, 0) / ((performance.now() - started) / 1000);
  });
}

/** RSS (KiB) of a cell with `workers` idle Workers, each having echoed once. */
export function workerCellRss(workers: number): Promise<number> {
  return withWorkerCell(workers, async (cell) => {
    for (let slot = 0; slot < workers; slot++) await cell.echo(slot, slot);
    return (await treeRss(cell.pid)).totalKiB;
  });
}
