/**
 * The floor's far end: a zero-permission subprocess that echoes every NDJSON
 * line it reads. With the argument `worker`, each line goes through a
 * Worker inside the subprocess and back, the path a cell relays a syscall
 * on, minus everything the runtime does.
 *
 * @module
 */

const encoder = new TextEncoder();
const stdout = Deno.stdout.writable.getWriter();
let writing: Promise<void> = Promise.resolve();

function reply(line: string): void {
  writing = writing.then(() => stdout.write(encoder.encode(line + "\n")));
}

const viaWorker = Deno.args[0] === "worker";
let worker: Worker | undefined;
if (viaWorker) {
  const source = "self.onmessage = (event) => self.postMessage(event.data);";
  worker = new Worker(
    URL.createObjectURL(new Blob([source], { type: "application/javascript" })),
    { type: "module" },
  );
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
    if (worker) worker.postMessage(JSON.parse(line));
    else reply(line);
  }
}
worker?.terminate();
