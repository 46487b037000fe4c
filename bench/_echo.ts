/**
 * The floor's far end: a zero-permission subprocess that echoes every NDJSON
 * line it reads. Its one argument picks the shape:
 *
 * - none: the subprocess echoes each line itself;
 * - `worker`: each line goes through a Worker inside the subprocess and
 *   back, the path a cell relays a syscall on, minus the runtime;
 * - `workers`: a cell hosting many zero-permission Workers, each in a
 *   slot, laid out as a real cell is (`runtime/cell_main.ts`): a
 *   switchboard Worker reads and writes the pipes and speaks with each
 *   slot's Worker on a `MessagePort`; the main thread only makes and ends
 *   Workers. `{"t":"start","slot":N}` starts the Worker of slot N and
 *   answers `{"t":"started","slot":N}` once that Worker's first message
 *   arrives; `{"t":"echo","slot":N,…}` goes to Worker N and back as it is;
 *   `{"t":"stop","slot":N}` terminates Worker N (no answer).
 *
 * @module
 */

/**
 * Reads NDJSON lines from stdin and writes lines to stdout, as a cell
 * does: the first write takes every line queued in the same turn of the
 * event loop, and each next one every line queued while the one before was
 * in flight.
 * Runs as is on the main thread, and as the switchboard Worker's text.
 */
const PIPES_SOURCE = `
const encoder = new TextEncoder();
const stdout = Deno.stdout.writable.getWriter();
let outbox = [];
let writing;
function reply(line) {
  outbox.push(line + "\\n");
  writing ??= (async () => {
    await null;
    while (outbox.length) {
      const text = outbox.join("");
      outbox = [];
      await stdout.write(encoder.encode(text));
    }
    writing = undefined;
  })();
}
async function readLines(onLine) {
  const decoder = new TextDecoder();
  let buffer = "";
  for await (const chunk of Deno.stdin.readable) {
    buffer += decoder.decode(chunk, { stream: true });
    let newline;
    while ((newline = buffer.indexOf("\\n")) >= 0) {
      const line = buffer.slice(0, newline);
      buffer = buffer.slice(newline + 1);
      if (line) onLine(line);
    }
  }
}
`;

/** The switchboard of a `workers` cell: it asks the main thread for each slot's Worker. */
const SWITCHBOARD_SOURCE = PIPES_SOURCE + `
const ports = new Map();
self.onmessage = (event) => {
  const { slot } = event.data;
  const port = event.ports[0];
  ports.set(slot, port);
  port.onmessage = (message) => {
    if (message.data?.t === "up") reply(JSON.stringify({ t: "started", slot }));
    else reply(JSON.stringify(message.data));
  };
};
reply(JSON.stringify({ t: "ready" }));
await readLines((line) => {
  const message = JSON.parse(line);
  if (message.t === "start") self.postMessage({ t: "start", slot: message.slot });
  else if (message.t === "stop") {
    ports.get(message.slot)?.close();
    ports.delete(message.slot);
    self.postMessage({ t: "stop", slot: message.slot });
  } else ports.get(message.slot)?.postMessage(message);
});
self.postMessage({ t: "exit" });
`;

/** A slot's Worker: it echoes on the port its first message brings. */
const PORT_ECHO_SOURCE = `self.onmessage = (event) => {
  const port = event.ports[0];
  self.onmessage = null;
  port.onmessage = (message) => port.postMessage(message.data);
  port.postMessage({ t: "up" });
};`;

/** Echoes every message it gets. */
const ECHO_SOURCE = "self.onmessage = (event) => self.postMessage(event.data);";

function workerOf(source: string): Worker {
  return new Worker(
    URL.createObjectURL(new Blob([source], { type: "application/javascript" })),
    { type: "module", deno: { permissions: "none" } } as WorkerOptions,
  );
}

/** Runs a `workers` cell: this thread makes and ends the slots' Workers. */
function workersCell(): void {
  const slots = new Map<number, Worker>();
  const switchboard = workerOf(SWITCHBOARD_SOURCE);
  switchboard.onmessage = (event: MessageEvent<{ t: string; slot: number }>) => {
    const { t, slot } = event.data;
    if (t === "exit") {
      for (const slotWorker of slots.values()) slotWorker.terminate();
      Deno.exit(0);
    }
    slots.get(slot)?.terminate();
    slots.delete(slot);
    if (t !== "start") return;
    const worker = workerOf(PORT_ECHO_SOURCE);
    const { port1, port2 } = new MessageChannel();
    worker.postMessage(null, [port1]);
    switchboard.postMessage({ slot }, [port2]);
    slots.set(slot, worker);
  };
}

/** Runs the one-thread shapes: echo each line here, or through one Worker. */
async function pipesCell(throughWorker: boolean): Promise<void> {
  const pipes = new Function(`${PIPES_SOURCE}; return { reply, readLines };`)() as {
    reply(line: string): void;
    readLines(onLine: (line: string) => void): Promise<void>;
  };
  const worker = throughWorker ? workerOf(ECHO_SOURCE) : undefined;
  if (worker) {
    worker.onmessage = (event: MessageEvent<unknown>) => pipes.reply(JSON.stringify(event.data));
  }
  pipes.reply(JSON.stringify({ t: "ready" }));
  await pipes.readLines((line) =>
    worker ? worker.postMessage(JSON.parse(line)) : pipes.reply(line)
  );
  worker?.terminate();
}

const mode = Deno.args[0];
if (mode === "workers") workersCell();
else await pipesCell(mode === "worker");
