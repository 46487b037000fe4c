/**
 * The cell: a `deno run` subprocess with no permissions at all that hosts
 * one process's Worker and relays its messages to the host broker over
 * stdin/stdout (SPEC section 8). It never holds authority; the host can kill
 * it at any time.
 *
 * @module
 */

import { WORKER_SOURCE } from "./_worker_bundle.ts";
import type {
  CellHello,
  CellToHost,
  CellToWorker,
  WorkerToCell,
} from "./cell_protocol.ts";

const encoder = new TextEncoder();
const stdout = Deno.stdout.writable.getWriter();
let token = "";
let maxMessageBytes = 1 << 20;
let worker: Worker | undefined;
let writing: Promise<void> = Promise.resolve();

function send(message: CellToHost): void {
  const line = `${token} ${JSON.stringify(message)}\n`;
  writing = writing.then(() => stdout.write(encoder.encode(line)));
}

function crash(message: string): never {
  send({ t: "crash", message });
  writing.finally(() => Deno.exit(70));
  throw new Error(message);
}

function startWorker(): Worker {
  const url = URL.createObjectURL(
    new Blob([WORKER_SOURCE], { type: "application/javascript" }),
  );
  const w = new Worker(url, {
    type: "module",
    deno: { permissions: "none" },
  } as WorkerOptions);
  w.onmessage = (event: MessageEvent<WorkerToCell>) => {
    const message = event.data;
    let size: number;
    try {
      size = JSON.stringify(message).length;
    } catch {
      crash("The program sent a message that is not JSON");
    }
    if (size > maxMessageBytes) {
      crash(
        `The program sent a message of ${size} bytes, over the ${maxMessageBytes}-byte limit`,
      );
    }
    if (message?.t !== "syscall" && message?.t !== "fail") {
      crash("The program sent a message that is not a syscall");
    }
    send(message);
  };
  w.onerror = (event) => {
    event.preventDefault();
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
    send({ t: "ready" });
    return;
  }
  const message = JSON.parse(line) as CellToWorker;
  if (message.t === "start") {
    if (worker) crash("This cell already runs a process");
    worker = startWorker();
  }
  worker?.postMessage(message);
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
