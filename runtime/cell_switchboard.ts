/**
 * The cell's switchboard: the Worker inside a cell that speaks with the
 * host and relays every program message (SPEC section 8). The cell's main
 * thread only makes and ends Workers (`cell_main.ts`): `new Worker()`
 * holds its caller's thread for as long as the new isolate takes to come
 * up (about 15 ms), and nothing on a message's path waits for that.
 *
 * Each Worker has a slot, a number the host picks when it opens one. Every
 * program Worker speaks only on its own `MessagePort`, whose other end the
 * switchboard holds, so every message the cell relays carries the slot of
 * the port it came from: a program can neither choose nor forge it. A slot
 * runs one program, ever. The cell starts with `warmWorkers` Workers
 * loaded, so its first `open` is answered at once, and keeps that many
 * spare Workers loaded once its group starts programs (a second slot
 * opened, or a program's call that makes a process: a spawn, a fork, a JIT
 * tool's registration or call), up to `maxWorkers` in all; a group that
 * calls JIT tools keeps {@link TOOL_CALL_SPARES} more, and replaces the
 * spare a slot took once that slot ends (see {@link drain}). A Worker is
 * spare until a slot takes it; one that ran a program is never given to
 * another slot. An `open` may carry its program's start, which the cell
 * passes on as soon as the slot has its Worker.
 *
 * Ending a Worker is cooperative first: the switchboard asks it to close,
 * and a Worker whose event loop is free acknowledges and closes itself.
 * One that does not acknowledge within {@link CLOSE_WAIT_MS} may be running
 * code that `terminate()` cannot stop (a busy loop keeps its thread); the
 * cell reports it unclean, and only the end of the cell stops it.
 *
 * Memory: V8 limits each Worker's heap (`--max-old-space-size`, set by the
 * host); running out of it ends the whole cell. The switchboard also
 * watches the cell's resident memory: more than the memory limits of its
 * running programs together above what the idle cell used ends the cell
 * with the memory reason, naming the program when only one runs. Workers
 * beyond the idle cell's that run no program (spares, Workers loading or
 * closing) are allowed what a loaded Worker was measured to cost at start,
 * at least {@link MIN_WORKER_RSS}, so a group opening many slots at once
 * does not look like a program over its limit. It is checked every
 * {@link MEMORY_CHECK_MS} ms and before a failure of a program is relayed.
 * The host caps the cell's writable memory in the kernel (`RLIMIT_DATA`,
 * see `cell.ts`), so a burst between two checks cannot go far.
 *
 * This module is bundled into `_worker_bundle.ts` (`deno task bundle`): a
 * zero-permission cell cannot read module files, so it starts this Worker
 * from that text.
 *
 * @module
 */

import type {
  CellHello,
  CellToHost,
  HostToCell,
  MakerToSwitchboard,
  StartProgram,
  SwitchboardToMaker,
  WorkerControl,
  WorkerToCell,
} from "./guest/cell_protocol.ts";

/** How often a cell with running programs checks its memory, in ms. */
const MEMORY_CHECK_MS = 50;
/** Least a loaded Worker with no program is taken to add to the cell's memory, in bytes. */
const MIN_WORKER_RSS = 8 * 1024 * 1024;
/** How long a Worker asked to close has to acknowledge, in ms. */
const CLOSE_WAIT_MS = 1_000;
/** Calls that make a process: a group making one keeps spare Workers loaded. */
const SPAWNING_CALLS = new Set(["proc.spawn", "proc.fork", "tool.register", "tool.call"]);
/** Spare Workers a group that calls JIT tools keeps beyond `warmWorkers`. */
const TOOL_CALL_SPARES = 1;

/** One Worker of the cell. */
interface Slot {
  /** The switchboard's end of the Worker's port: the only way its program speaks. */
  port: MessagePort;
  /** The Worker's number at the maker (`cell_main.ts`). */
  id: number;
  /** Its number, once the host opened it (0 while warm). */
  slot: number;
  /** Its program has started. */
  started: boolean;
  /** Its program's memory limit, in MiB, and largest message, in bytes. */
  memoryMb: number;
  maxMessageBytes: number;
  /** Its Worker said `loaded`. */
  loaded: boolean;
  /** Nothing more of its program is relayed (it failed, or is closing). */
  done: boolean;
  /** The host asked it to close. */
  closing: boolean;
  /** Settles the close wait when the Worker acknowledges. */
  acknowledged?: () => void;
  /** The name Deno gives its OS thread: `worker-N`, N counting the cell's Workers from 1. */
  thread: string;
  /** It took a spare that is replaced once it ends (see {@link drain}). */
  replacedAtEnd?: boolean;
}

declare const self: {
  postMessage(message: SwitchboardToMaker): void;
  onmessage: ((event: MessageEvent<MakerToSwitchboard>) => void) | null;
};

const encoder = new TextEncoder();
const stdout = Deno.stdout.writable.getWriter();
let hello: CellHello | undefined;
/** Resident memory of the cell before its first Worker, in bytes. */
let baseRss = 0;
/** Resident memory of the idle cell, warm Workers up, in bytes. */
let idleRss = 0;
/** Workers loaded when {@link idleRss} was measured. */
let idleWorkers = 0;
/** What one loaded Worker with no program adds to the cell's resident memory, in bytes. */
let workerRss = MIN_WORKER_RSS;
/** Slots by number; the warm Workers wait in {@link warm}. */
const slots = new Map<number, Slot>();
/** Every Worker the maker made and has not ended, by its number. */
const byId = new Map<number, Slot>();
const warm: Slot[] = [];
/** Slots the host asked for before a warm Worker was loaded. */
const waiting: Extract<HostToCell, { t: "open" }>[] = [];
let starting = 0;
let ready = false;
/** A program has been started in the cell (its memory is checked from then on). */
let started = false;
/** Lines for the host not yet handed to stdout; one write takes them all. */
let outbox: string[] = [];
let writing: Promise<void> | undefined;
let crashed = false;
/** Slots opened in all. */
let opened = 0;
/** The group has run a second program here, or asked for a process to be made. */
let spawns = false;
/** The group calls JIT tools: it keeps {@link TOOL_CALL_SPARES} more spares. */
let toolCalls = false;
/** Slots whose spare is replaced once they end. */
let replacedAtEnd = 0;

function send(message: CellToHost): void {
  sendText(JSON.stringify(message));
}

/** Sends a message already in JSON text. */
function sendText(text: string): void {
  outbox.push(`${hello!.token} ${text}\n`);
  writing ??= flush();
}

/**
 * Relays a program's message with its slot. `text` is the message's JSON:
 * the slot goes last, so it is the one the host reads whatever slot the
 * program wrote into its message.
 */
function relay(message: WorkerToCell, text: string, slot: number): void {
  if (text.length > 2 && text.startsWith("{")) sendText(`${text.slice(0, -1)},"slot":${slot}}`);
  else send({ ...message, slot });
}

/**
 * Writes the outbox. The first write waits for the lines sent in the same
 * turn of the event loop (the replies of several Workers that arrived
 * together), and lines sent while a write is in flight go out together in
 * the next: each write costs the host a read and a wake-up.
 */
async function flush(): Promise<void> {
  try {
    // Lets the rest of this turn's lines join the first write.
    await null;
    while (outbox.length) {
      const text = outbox.join("");
      outbox = [];
      await stdout.write(encoder.encode(text));
    }
  } finally {
    writing = undefined;
  }
}

/**
 * Reports a fatal problem to the host and ends the cell once it is written;
 * `memory`: the program of `slot` went over its memory limit.
 */
function crash(message: string, slot?: number, memory?: true): void {
  if (crashed) return;
  crashed = true;
  self.postMessage({ t: "halt" });
  send({ t: "crash", message, ...(slot === undefined ? {} : { slot }), ...(memory && { memory }) });
  (writing ?? Promise.resolve()).finally(() => self.postMessage({ t: "exit", code: 70 }));
}

/** The slots whose programs run (started and not closing). */
function running(): [number, Slot][] {
  return [...slots].filter(([, s]) => s.started && !s.done);
}

/** Ends the cell with the memory reason when it is over its limit; true if it did. */
function checkMemory(): boolean {
  if (!started) return false;
  const programs = running();
  const limitMb = programs.reduce((sum, [, s]) => sum + s.memoryMb, 0) || hello!.memoryMb;
  // Workers beyond those of the idle cell (spares, Workers loading, ones
  // closing) are allowed what a loaded Worker costs, not charged to programs.
  const workers = slots.size + warm.length + starting;
  const allowance = Math.max(0, workers - idleWorkers) * workerRss;
  if (Deno.memoryUsage().rss - idleRss - allowance <= limitMb * 1024 * 1024) return false;
  if (programs.length === 1) {
    const [slot, s] = programs[0];
    crash(`A program exceeded its memory limit of ${s.memoryMb} MB`, slot, true);
  } else {
    crash(`The cell's ${programs.length} programs exceeded their memory limit together`);
  }
  return true;
}

/** A Worker message's JSON text, or why it may not be relayed. */
function relayable(
  message: WorkerToCell,
  maxMessageBytes: number,
): { text: string } | { problem: string } {
  let text: string | undefined;
  try {
    text = JSON.stringify(message);
  } catch {
    return { problem: "The program sent a message that is not JSON" };
  }
  if (text === undefined) return { problem: "The program sent a message that is not JSON" };
  if (text.length > maxMessageBytes) {
    return {
      problem:
        `The program sent a message of ${text.length} bytes, over the ${maxMessageBytes}-byte limit`,
    };
  }
  if (message?.t !== "syscall" && message?.t !== "fail") {
    return { problem: "The program sent a message that is not a syscall" };
  }
  return { text };
}

/** Asks the maker for a Worker; it joins the warm ones once loaded. */
function startWorker(): void {
  starting++;
  self.postMessage({ t: "make" });
}

/** The maker made Worker `id`: its messages come on `port`. */
function made(id: number, port: MessagePort): void {
  const s: Slot = {
    port,
    id,
    slot: 0,
    started: false,
    memoryMb: hello!.memoryMb,
    maxMessageBytes: hello!.maxMessageBytes,
    loaded: false,
    done: false,
    closing: false,
    thread: `worker-${id}`,
  };
  byId.set(id, s);
  port.onmessage = (event: MessageEvent<WorkerToCell | WorkerControl>) => {
    if (crashed) return;
    if (event.ports.length) return crash("A program sent a port", s.slot || undefined);
    const data = event.data;
    if (!s.loaded) {
      if (data?.t !== "loaded") return crash("A Worker spoke before it was loaded");
      s.loaded = true;
      starting--;
      return loaded(s);
    }
    if (s.closing && data?.t === "closing") return s.acknowledged?.();
    if (s.done) return;
    if (!s.started) return crash("A Worker spoke before its program started", s.slot || undefined);
    if (!spawns && data?.t === "syscall" && SPAWNING_CALLS.has(data.name)) {
      spawns = true;
      drain();
    }
    if (!toolCalls && data?.t === "syscall" && data.name === "tool.call") {
      toolCalls = true;
      drain();
    }
    if ((data as WorkerToCell)?.t === "fail" && checkMemory()) return;
    const checked = relayable(data as WorkerToCell, s.maxMessageBytes);
    if ("problem" in checked) return crash(checked.problem, s.slot);
    if (data.t === "fail") s.done = true;
    relay(data as WorkerToCell, checked.text, s.slot);
  };
  port.onmessageerror = () =>
    crash("A program sent a message that cannot be read", s.slot || undefined);
}

/** What the maker reports about Worker `s` outside its port. */
function fromMaker(s: Slot, message: Exclude<MakerToSwitchboard, { t: "made" }>): void {
  if (crashed) return;
  if (message.t === "stray") {
    // A program spoke on its Worker object instead of its port.
    return crash("A program sent a message outside its port", s.slot || undefined);
  }
  if (!s.loaded) return crash(`A Worker failed to start: ${message.message}`);
  if (s.done || !s.started) return;
  if (checkMemory()) return;
  s.done = true;
  send({ t: "fail", message: `Uncaught error: ${message.message}`, slot: s.slot });
}

/** Ends Worker `s` at the maker. */
function end(s: Slot): void {
  s.port.close();
  byId.delete(s.id);
  self.postMessage({ t: "end", id: s.id });
}

/** A Worker is up: it waits warm, or takes a waiting slot. */
function loaded(s: Slot): void {
  warm.push(s);
  if (!ready && warm.length >= Math.max(1, hello!.warmWorkers)) {
    ready = true;
    idleRss = Deno.memoryUsage().rss;
    idleWorkers = warm.length;
    workerRss = Math.max(MIN_WORKER_RSS, (idleRss - baseRss) / idleWorkers);
    // Started now rather than with the first program: Deno 2.9 holds up the
    // first message to a Worker by 10 to 20 ms when the process's first
    // interval is created just before it.
    setInterval(checkMemory, MEMORY_CHECK_MS);
    send({ t: "ready", pid: Deno.pid });
  }
  drain();
}

/** Gives warm Workers to waiting slots and keeps the warm count up. */
function drain(): void {
  while (ready && waiting.length && warm.length) {
    const s = warm.shift()!;
    const open = waiting.shift()!;
    s.slot = open.slot;
    s.memoryMb = Math.min(open.memoryMb, hello!.memoryMb);
    s.maxMessageBytes = Math.min(open.maxMessageBytes, hello!.maxMessageBytes);
    slots.set(s.slot, s);
    if (++opened >= 2) spawns = true;
    // In a group that calls JIT tools (short programs, mostly), while
    // another spare is loaded or loading, the spare a slot takes is replaced
    // once that slot ends: the replacement's start (some 10 ms of CPU) does
    // not compete with the call it was taken for. A slot that runs long
    // leaves the group `warmWorkers` spares meanwhile, as any group has.
    if (toolCalls && warm.length + starting > 0) {
      s.replacedAtEnd = true;
      replacedAtEnd++;
    }
    send({ t: "opened", slot: s.slot });
    if (open.start) startProgram(s, open.start);
  }
  // Once the group starts programs (a second slot, or a call that makes a
  // process), spare Workers stay loaded, so its next spawn or tool call does
  // not wait for a Worker to start. A cell of a lone program loads no spare.
  // The second spare of a group that calls tools is kept only while no slot
  // waits for a Worker: more Workers starting at once would slow each.
  const extra = toolCalls && waiting.length === 0 ? TOOL_CALL_SPARES : 0;
  const spares = Math.max(hello!.warmWorkers, hello!.warmWorkers + extra - replacedAtEnd);
  const want = (spawns ? spares : 0) + waiting.length;
  while (
    !crashed && warm.length + starting < want &&
    slots.size + warm.length + starting < hello!.maxWorkers
  ) startWorker();
}

function open(message: Extract<HostToCell, { t: "open" }>): void {
  const { slot } = message;
  if (
    !Number.isSafeInteger(slot) || slot <= 0 || slots.has(slot) ||
    waiting.some((w) => w.slot === slot)
  ) {
    return crash(`The host opened slot ${slot} twice`);
  }
  if (slots.size + waiting.length >= hello!.maxWorkers) {
    return crash(`The host opened more than ${hello!.maxWorkers} Workers`);
  }
  waiting.push(message);
  drain();
}

function close(slot: number): void {
  const at = waiting.findIndex((w) => w.slot === slot);
  if (at >= 0) {
    waiting.splice(at, 1);
    return send({ t: "closed", slot, clean: true });
  }
  const s = slots.get(slot);
  if (!s) return send({ t: "closed", slot, clean: true });
  if (s.closing) return;
  s.closing = s.done = true;
  const acknowledged = new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), CLOSE_WAIT_MS);
    s.acknowledged = () => {
      clearTimeout(timer);
      resolve(true);
    };
  });
  s.port.postMessage({ t: "close" });
  acknowledged.then((clean) => {
    end(s);
    slots.delete(slot);
    if (s.replacedAtEnd) {
      s.replacedAtEnd = false;
      replacedAtEnd--;
    }
    if (crashed) return;
    send({ t: "closed", slot, clean, thread: s.thread });
    drain();
  });
}

function handle(line: string): void {
  if (!hello) {
    hello = JSON.parse(line) as CellHello;
    baseRss = Deno.memoryUsage().rss;
    for (let i = 0; i < Math.max(1, hello.warmWorkers); i++) startWorker();
    return;
  }
  const message = JSON.parse(line) as HostToCell;
  if (message.t === "open") return open(message);
  if (message.t === "close") return close(message.slot);
  const s = slots.get(message.slot);
  if (!s || s.done || crashed) return;
  const { slot: _slot, ...forWorker } = message;
  if (forWorker.t === "start") return startProgram(s, forWorker);
  if (!s.started) return;
  s.port.postMessage(forWorker);
}

/** Starts a program in the Worker of slot `s`: once, ever. */
function startProgram(s: Slot, start: StartProgram): void {
  if (s.done || crashed) return;
  if (s.started) return crash("This Worker already runs a process", s.slot);
  s.started = true;
  started = true;
  s.port.postMessage(start);
}

self.onmessage = (event) => {
  const message = event.data;
  if (message.t === "made") return made(message.id, event.ports[0]);
  const s = byId.get(message.id);
  if (s) fromMaker(s, message);
};

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
// The host closed the cell's stdin: the cell ends.
self.postMessage({ t: "exit", code: 0 });
