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
 * The cell watches its own memory: once its process runs, resident memory
 * more than `memoryMb` above what the idle cell used (measured when the
 * Worker is up) ends the cell with the memory reason. It is checked every
 * {@link MEMORY_CHECK_MS} ms and before a failure of the program is
 * relayed, so a program that dies of a refused allocation while over its
 * limit fails with the memory reason. The host caps the cell's writable
 * memory in the kernel at the idle cell's plus twice `memoryMb`
 * (`RLIMIT_DATA`, see `cell.ts`), so a burst between two checks cannot go
 * further.
 *
 * @module
 */

import { WORKER_SOURCE } from "./_worker_bundle.ts";
import {
  type CellHello,
  type CellToHost,
  type CellToWorker,
  memoryLimitReason,
  type WorkerLoaded,
  type WorkerToCell,
} from "./guest/cell_protocol.ts";

/** How often a running cell checks its memory, in ms. */
const MEMORY_CHECK_MS = 50;

const encoder = new TextEncoder();
const stdout = Deno.stdout.writable.getWriter();
let token = "";
let maxMessageBytes = 1 << 20;
let memoryMb = 256;
/** Resident memory of the idle cell, Worker up, in bytes. */
let idleRss = 0;
/** The pid of the process the cell runs, once started. */
let pid = 0;
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

/** True when the cell holds more than `memoryMb` above its idle size. */
function overMemory(): boolean {
  return Deno.memoryUsage().rss - idleRss > memoryMb * 1024 * 1024;
}

/** Ends the cell with the memory reason when it is over its limit; true if it did. */
function checkMemory(): boolean {
  if (!overMemory()) return false;
  crash(memoryLimitReason(pid, memoryMb));
  return true;
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
      idleRss = Deno.memoryUsage().rss;
      return send({ t: "ready", pid: Deno.pid });
    }
    const message = event.data as WorkerToCell;
    if (message?.t === "fail" && checkMemory()) return;
    const problem = problemWith(message);
    if (problem) crash(problem);
    else send(message);
  };
  w.onerror = (event) => {
    event.preventDefault();
    if (!loaded) return crash(`The cell's Worker failed to start: ${event.message}`);
    if (checkMemory()) return;
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
    memoryMb = hello.memoryMb;
    worker = startWorker(); // it says "loaded" when it is up; then the cell is ready
    return;
  }
  const message = JSON.parse(line) as CellToWorker;
  if (message.t === "start") {
    if (started) return crash("This cell already runs a process");
    started = true;
    pid = message.pid;
    setInterval(checkMemory, MEMORY_CHECK_MS);
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
