/**
 * The cell: a `deno run` subprocess with no permissions at all that hosts
 * one process's Worker and relays its messages to the host broker over
 * stdin/stdout (SPEC section 8). It never holds authority; the host can kill
 * it at any time.
 *
 * The Worker starts as soon as the host's `hello` arrives, before any
 * process is assigned, so a warm cell only has to import the program when
 * its `start` comes. One cell runs at most one process, ever.
 *
 * @module
 */

import { WORKER_SOURCE } from "./_worker_bundle.ts";
import type {
  CellHello,
  CellToHost,
  CellToWorker,
  WorkerLoaded,
  WorkerToCell,
} from "./cell_protocol.ts";

const encoder = new TextEncoder();
const stdout = Deno.stdout.writable.getWriter();
let token = "";
let maxMessageBytes = 1 << 20;
let worker: Worker | undefined;
let started = false;
let loaded = false;
let writing: Promise<void> = Promise.resolve();

function send(message: CellToHost): void {
  const line = `${token} ${JSON.stringify(message)}\n`;
  writing = writing.then(() => stdout.write(encoder.encode(line)));
}

let crashed = false;

/** Reports a fatal problem to the host and ends the cell once it is written. */
function crash(message: string): void {
  if (crashed) return;
  crashed = true;
  worker?.terminate();
  send({ t: "crash", message });
  writing.finally(() => Deno.exit(70));
}

/** Why a Worker message may not be relayed, or undefined when it may. */
function problemWith(message: WorkerToCell): string | undefined {
  let size: number;
  try {
    size = JSON.stringify(message).length;
  } catch {
    return "The program sent a message that is not JSON";
  }
  if (size > maxMessageBytes) {
    return `The program sent a message of ${size} bytes, over the ${maxMessageBytes}-byte limit`;
  }
  if (message?.t !== "syscall" && message?.t !== "fail") {
    return "The program sent a message that is not a syscall";
  }
  return undefined;
}

function startWorker(): Worker {
  const url = URL.createObjectURL(
    new Blob([WORKER_SOURCE], { type: "application/javascript" }),
  );
  const w = new Worker(url, {
    type: "module",
    deno: { permissions: "none" },
  } as WorkerOptions);
  w.onmessage = (event: MessageEvent<WorkerToCell | WorkerLoaded>) => {
    if (crashed) return;
    if (!loaded && event.data?.t === "loaded") {
      loaded = true;
      return send({ t: "ready" });
    }
    const problem = problemWith(event.data as WorkerToCell);
    if (problem) crash(problem);
    else send(event.data);
  };
  w.onerror = (event) => {
    event.preventDefault();
    if (!loaded) return crash(`The cell's Worker failed to start: ${event.message}`);
    send({ t: "fail", message: `Uncaught error: ${event.message}` });
  };
  w.onmessageerror = () => crash("The program sent a message that cannot be read");
  return w;
}

function handle(line: string): void {
  if (!token) {
    const hello = JSON.parse(line) as CellHello;
    token = hello.token;
    maxMessageBytes = hello.maxMessageBytes;
    worker = startWorker(); // it says "loaded" when it is up; then the cell is ready
    return;
  }
  const message = JSON.parse(line) as CellToWorker;
  if (message.t === "start") {
    if (started) return crash("This cell already runs a process");
    started = true;
  }
  if (!crashed && started) worker?.postMessage(message);
}

const decoder = new TextDecoder();
let buffer = "";
for await (const chunk of Deno.stdin.readable) {
  buffer += decoder.decode(chunk, { stream: true });
  let newline: number;
  while ((newline = buffer.indexOf("\n")) >= 0) {
    const line = buffer.slice(0, newline);
    buffer = buffer.slice(newline + 1);
    if (line) handle(line);
  }
}
Deno.exit(0);
