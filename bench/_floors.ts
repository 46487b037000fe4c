/**
 * Floors: what the same trips cost with none of the runtime in the way.
 * A postMessage round trip to a Worker in the host, an NDJSON round trip
 * over pipes to a zero-permission `deno run` subprocess (alone, and with a
 * Worker inside it, the shape of a cell), and how long such a subprocess
 * and such a Worker take to start.
 *
 * @module
 */

import { fileURLToPath } from "node:url";

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

/** A zero-permission echo subprocess, started the way a cell is. */
class EchoProcess {
  #child: Deno.ChildProcess;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #lines: AsyncGenerator<string>;
  #encoder = new TextEncoder();

  constructor(viaWorker: boolean) {
    this.#child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--no-prompt",
        "--no-remote",
        "--no-npm",
        "--no-config",
        "--no-lock",
        ECHO,
        ...(viaWorker ? ["worker"] : []),
      ],
      stdin: "piped",
      stdout: "piped",
      stderr: "null",
    }).spawn();
    this.#writer = this.#child.stdin.getWriter();
    this.#lines = EchoProcess.#read(this.#child.stdout);
  }

  static async *#read(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
    const decoder = new TextDecoder();
    let buffer = "";
    for await (const chunk of stream) {
      buffer += decoder.decode(chunk, { stream: true });
      let newline: number;
      while ((newline = buffer.indexOf("\n")) >= 0) {
        yield buffer.slice(0, newline);
        buffer = buffer.slice(newline + 1);
      }
    }
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
  const echo = new EchoProcess(options.viaWorker ?? false);
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
  const echo = new EchoProcess(options.viaWorker ?? false);
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
  const echoes = Array.from({ length: cells }, () => new EchoProcess(true));
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
