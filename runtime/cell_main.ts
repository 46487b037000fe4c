/**
 * The cell: a `deno run` subprocess with no permissions at all that hosts
 * the Workers of the programs the host gives it and relays their messages
 * to the host broker over stdin/stdout (SPEC section 8). It never holds
 * authority; the host can kill it at any time.
 *
 * The cell has two kinds of thread. Its switchboard, a Worker
 * (`cell_switchboard.ts`), speaks with the host and relays every program
 * message. This main thread is the maker: it makes and ends Workers when
 * the switchboard asks, and nothing else. `new Worker()` holds its caller's
 * thread until the new isolate is up (about 15 ms), so a spare Worker being
 * made never holds up a message: the switchboard's thread is not the one
 * waiting.
 *
 * A program Worker's first message gives it a `MessagePort` whose other
 * end goes to the switchboard; the program speaks only on it. Anything the
 * program sends on its Worker object instead, or an uncaught error, the
 * maker passes to the switchboard by the Worker's number, which the maker
 * chose: the program has no say in it.
 *
 * @module
 */

import { SWITCHBOARD_SOURCE, WORKER_SOURCE } from "./_worker_bundle.ts";
import type { MakerToSwitchboard, SwitchboardToMaker, WorkerPort } from "./guest/cell_protocol.ts";

/** Program Workers by number: Deno numbers a process's Workers from 1 and names their threads `worker-N`. */
const workers = new Map<number, Worker>();
let created = 0;

/** A zero-permission Worker running `source`. */
function workerOf(source: string): Worker {
  const url = URL.createObjectURL(new Blob([source], { type: "application/javascript" }));
  try {
    created++;
    return new Worker(url, { type: "module", deno: { permissions: "none" } } as WorkerOptions);
  } finally {
    URL.revokeObjectURL(url);
  }
}

const switchboard = workerOf(SWITCHBOARD_SOURCE);
const tell = (message: MakerToSwitchboard, transfer: Transferable[] = []) =>
  switchboard.postMessage(message, transfer);

/** Makes a program Worker and hands its port to the switchboard. */
function make(): void {
  const worker = workerOf(WORKER_SOURCE);
  const id = created;
  workers.set(id, worker);
  const { port1, port2 } = new MessageChannel();
  worker.postMessage({ t: "port" } satisfies WorkerPort, [port1]);
  tell({ t: "made", id }, [port2]);
  worker.onmessage = () => tell({ t: "stray", id });
  worker.onmessageerror = () => tell({ t: "stray", id });
  worker.onerror = (event) => {
    event.preventDefault();
    tell({ t: "error", id, message: event.message });
  };
}

function halt(): void {
  for (const worker of workers.values()) worker.terminate();
  workers.clear();
}

switchboard.onmessage = (event: MessageEvent<SwitchboardToMaker>) => {
  const message = event.data;
  if (message.t === "make") return make();
  if (message.t === "end") {
    workers.get(message.id)?.terminate();
    workers.delete(message.id);
  } else if (message.t === "halt") halt();
  else if (message.t === "exit") {
    halt();
    Deno.exit(message.code);
  }
};
// A fault of the switchboard itself ends the cell: the host sees it die.
switchboard.onerror = (event) => {
  event.preventDefault();
  halt();
  Deno.exit(70);
};
