/**
 * The floor's far end: a zero-permission subprocess that echoes every NDJSON
 * line it reads. Its one argument picks the shape:
 *
 * - none: the subprocess echoes each line itself;
 * - `worker`: each line goes through a Worker inside the subprocess and
 *   back, the path a cell relays a syscall on, minus the runtime;
 * - `workers`: a cell hosting many zero-permission Workers, each in a
 *   slot. `{"t":"start","slot":N}` starts the Worker of slot N and answers
 *   `{"t":"started","slot":N}` once that Worker's first message arrives;
 *   `{"t":"echo","slot":N,…}` goes to Worker N and back as it is;
 *   `{"t":"stop","slot":N}` terminates Worker N (no answer).
 *
 * @module
 */

const encoder = new TextEncoder();
const stdout = Deno.stdout.writable.getWriter();
let writing: Promise<void> = Promise.resolve();

function reply(line: string): void {
  writing = writing.then(() => stdout.write(encoder.encode(line + "\n")));
}

const ECHO_SOURCE = "self.onmessage = (event) => self.postMessage(event.data);";
const mode = Deno.args[0];

function echoWorker(prelude = "", options: Record<string, unknown> = {}): Worker {
  return new Worker(
    URL.createObjectURL(
      new Blob([prelude + ECHO_SOURCE], { type: "application/javascript" }),
    ),
    { type: "module", ...options } as WorkerOptions,
  );
}

/** The Workers of a `workers` cell, by slot. */
const slots = new Map<number, Worker>();

function startSlot(slot: number): void {
  // The Worker says it is up with its first message, as a cell's Worker does.
  const worker = echoWorker('self.postMessage({ t: "up" });\n', {
    deno: { permissions: "none" },
  });
  worker.onmessage = (event: MessageEvent<{ t?: string }>) => {
    if (event.data?.t === "up") reply(JSON.stringify({ t: "started", slot }));
    else reply(JSON.stringify(event.data));
  };
  slots.get(slot)?.terminate();
  slots.set(slot, worker);
}

function route(message: { t: string; slot: number }): void {
  if (message.t === "start") startSlot(message.slot);
  else if (message.t === "stop") {
    slots.get(message.slot)?.terminate();
    slots.delete(message.slot);
  } else slots.get(message.slot)?.postMessage(message);
}

let worker: Worker | undefined;
if (mode === "worker") {
  worker = echoWorker();
  worker.onmessage = (event: MessageEvent<unknown>) => reply(JSON.stringify(event.data));
}

const decoder = new TextDecoder();
let buffer = "";
reply(JSON.stringify({ t: "ready" }));
for await (const chunk of Deno.stdin.readable) {
  buffer += decoder.decode(chunk, { stream: true });
  let newline: number;
  while ((newline = buffer.indexOf("\n")) >= 0) {
    const line = buffer.slice(0, newline);
    buffer = buffer.slice(newline + 1);
    if (!line) continue;
    if (mode === "workers") route(JSON.parse(line));
    else if (worker) worker.postMessage(JSON.parse(line));
    else reply(line);
  }
}
worker?.terminate();
for (const slotWorker of slots.values()) slotWorker.terminate();
