/**
 * The host side of a cell: spawns the zero-permission `deno run`
 * subprocess (`cell_main.ts`), speaks NDJSON with it, and kills it. A cell
 * hosts up to `maxWorkers` programs, each in a Worker of its own named by a
 * {@link Slot}; the host never runs untrusted code itself. A cell is ready
 * once its warm Workers are up, so opening a slot only waits for a program's
 * import.
 *
 * Memory: `memoryMb` is what each program may use beyond the idle cell.
 * V8's heap of each Worker is limited to it; the cell ends itself with the
 * memory reason when its resident memory goes over `memoryMb` per running
 * program (`cell_main.ts`); and the host caps its writable memory in the
 * kernel (`RLIMIT_DATA`, through `prlimit`) at what an idle cell has mapped
 * plus, per Worker it may run, twice `memoryMb` and the address space a
 * Worker reserves: past that an allocation fails, whatever it is
 * (`ArrayBuffer`s, WebAssembly memory and thread stacks are outside V8's
 * heap limit). The idle size is measured once per host for each shape of
 * cell, on the first one (capped once it is ready, before any program
 * runs); every later cell of that shape starts under its cap (`prlimit`
 * sets it, then runs Deno: one process start per cell). A cell whose memory
 * cannot be capped does not start.
 *
 * A cell that dies ends every slot in it; each slot's {@link SlotEnd} says
 * whether its program was the cause (`culprit`), a bystander, or unknown.
 *
 * Disk: a cell gets a private, throwaway Deno cache (`deno_dir.ts`), never
 * the host's, removed when the cell ends, and no other environment.
 *
 * @module
 */

import { fileURLToPath } from "node:url";
import type {
  CellHello,
  CellToHost,
  CellToWorker,
  HostToCell,
  StartProgram,
} from "./guest/cell_protocol.ts";
import { makePrivateDenoDir, removePrivateDenoDir } from "./deno_dir.ts";
import { findProgram, spawnHostChild } from "./host_children.ts";

/** Limits a cell enforces or is started with. */
export interface CellOptions {
  /** Memory the program may use beyond the idle cell, in MiB (default 256); see the module docs. */
  memoryMb?: number;
  /** Largest message the program may send, in bytes (default 1 MiB). */
  maxMessageBytes?: number;
  /** Program output (stdout/stderr lines that are not protocol) kept, in bytes (default 64 KiB). */
  maxOutputBytes?: number;
  /** Most programs the cell runs at once (default 1). */
  maxWorkers?: number;
  /** Workers the cell keeps loaded ahead of need (default 1). */
  warmWorkers?: number;
}

/** A message from a slot's program. */
export type SlotMessage = Extract<CellToHost, { slot: number; t: "syscall" | "fail" }>;

/** What a program in a slot can be sent. */
export type SlotInput = Exclude<CellToWorker, { t: "close" }>;

/** How a slot ended. */
export interface SlotEnd {
  /** The host closed it; `clean` is false when its Worker did not stop by itself. */
  closed?: { clean: boolean };
  /** The cell died with the slot in it: why. */
  reason?: string;
  /**
   * When the cell died: true when this slot's program caused it, false
   * when another one did, undefined when the cell cannot tell which.
   */
  culprit?: boolean;
  /**
   * The cell died because a program ran out of memory (V8's heap limit), or
   * because this slot's program went over its memory limit.
   */
  outOfMemory?: boolean;
}

/** How a cell ended. */
export interface CellExit {
  /** The cell subprocess's exit code. */
  code: number;
  /** The signal that ended the cell, or null. */
  signal: Deno.Signal | null;
  /** A one-line reason when the cell died of something recognisable. */
  reason?: string;
  /** The cell died because its program ran out of memory (V8's heap limit). */
  outOfMemory?: boolean;
}

const CELL_MAIN = fileURLToPath(new URL("./cell_main.ts", import.meta.url));

/**
 * The `deno run` flags of a cell besides its heap limit: no permission, no
 * prompt, nothing fetched or configured from outside, Worker permission
 * options on.
 */
export const CELL_RUN_FLAGS: readonly string[] = [
  "--no-prompt",
  "--no-remote",
  "--no-npm",
  "--no-config",
  "--no-lock",
  "--unstable-worker-options",
];

/**
 * Address space each Worker reserves when it starts, in MiB, which
 * `RLIMIT_DATA` counts although little of it is ever touched (V8's code
 * range and heap reservations: about 530 MiB per Worker measured with
 * Deno 2.9.6).
 */
const WORKER_RESERVE_MB = 640;

/** How long after a Worker closed its OS thread must be gone, in ms. */
export const THREAD_GONE_MS = 1_000;

/**
 * A line the thread list reader writes before the threads of each process.
 * Longer than any thread name (the kernel keeps 15 bytes), so no thread can
 * pass for it.
 */
const THREADS_OF = "== threads of process ";

/** Thread reads asked for while a read runs, by pid: the next read answers them together. */
let pendingThreadReads = new Map<number, ((names: string[] | undefined) => void)[]>();
let readingThreads = false;

/**
 * The names of the OS threads of process `pid`, or undefined when they
 * cannot be read. Deno reads `/proc` only with `--allow-all`, so a shell
 * reads it: one at a time for the whole host, each covering every process
 * asked about while the one before it ran.
 */
export function threadNames(pid: number): Promise<string[] | undefined> {
  return new Promise((resolve) => {
    const waiting = pendingThreadReads.get(pid);
    if (waiting) waiting.push(resolve);
    else pendingThreadReads.set(pid, [resolve]);
    if (!readingThreads) readPendingThreads();
  });
}

async function readPendingThreads(): Promise<void> {
  readingThreads = true;
  try {
    while (pendingThreadReads.size) {
      const batch = pendingThreadReads;
      pendingThreadReads = new Map();
      const found = await readThreadLists([...batch.keys()]);
      for (const [pid, waiting] of batch) for (const resolve of waiting) resolve(found.get(pid));
    }
  } finally {
    readingThreads = false;
  }
}

/** The thread names of each of `pids` whose threads could be read. */
async function readThreadLists(pids: number[]): Promise<Map<number, string[]>> {
  const found = new Map<number, string[]>();
  try {
    const { code, stdout } = await new Deno.Command("/bin/sh", {
      // A thread that ends while it is read is simply not listed.
      args: [
        "-c",
        `for pid; do
  [ -d /proc/"$pid"/task ] || continue
  echo "${THREADS_OF}$pid"
  cat /proc/"$pid"/task/*/comm 2>/dev/null
done
exit 0`,
        "sh",
        ...pids.map(String),
      ],
      clearEnv: true,
      env: { PATH: "/usr/bin:/bin", LANG: "C" },
      stdin: "null",
      stdout: "piped",
      stderr: "null",
    }).output();
    if (code !== 0) return found;
    let names: string[] | undefined;
    for (const line of new TextDecoder().decode(stdout).split("\n")) {
      if (line.startsWith(THREADS_OF)) {
        names = [];
        found.set(Number(line.slice(THREADS_OF.length)), names);
      } else if (line !== "") names?.push(line);
    }
  } catch {
    // Unreadable: no process is listed.
  }
  return found;
}

/** How long a cell may take to start before it is killed and the start fails. */
export const READY_TIMEOUT_MS = 20_000;

function randomToken(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * The environment a cell gets: its private Deno cache (also its `HOME`),
 * with the emit cache off, nothing else. A program's TypeScript is then
 * transpiled in memory and never written (the cache's `gen/data` is also
 * blocked, see `deno_dir.ts`); with the cache on but blocked, Deno 2.9
 * spends about 150 ms on the first `data:` TypeScript import of every
 * Worker trying to write it.
 */
function cellEnv(denoDir: string): Record<string, string> {
  return {
    NO_COLOR: "1",
    DENO_NO_UPDATE_CHECK: "1",
    DENO_EMIT_CACHE_MODE: "disable",
    DENO_DIR: denoDir,
    HOME: denoDir,
  };
}

/**
 * What an idle cell maps writable (`VmData`, in KiB), measured once per
 * host for each shape of cell (its V8 heap flag and its warm Workers): the
 * base of every later cell's cap.
 */
const idleCellKb = new Map<string, number>();

function cellShape(memoryMb: number, warmWorkers: number): string {
  return `${memoryMb}/${warmWorkers}`;
}

/**
 * @internal Sets the idle size a cell of this shape is capped from (tests
 * use it to start a cell under a cap too small for it).
 */
export function _setIdleCellSize(memoryMb: number, warmWorkers: number, kb: number): void {
  idleCellKb.set(cellShape(memoryMb, warmWorkers), kb);
}

/** The absolute path of util-linux's `prlimit`; a cell does not start without it. */
function prlimitPath(): string {
  const path = findProgram("prlimit");
  if (!path) throw new Error("Cannot start a cell: prlimit (util-linux) is not installed");
  return path;
}

/**
 * Sets `RLIMIT_DATA` (soft and hard) of process `pid` to its mapped
 * writable memory now (`VmData`) plus `extraMb` MiB; returns that
 * `VmData` in KiB. Deno reads `/proc` only with `--allow-all`, so a shell
 * reads it and `prlimit` sets the limit.
 */
async function capWritableMemory(pid: number, extraMb: number): Promise<number> {
  const script = `while read -r key value _; do
  if [ "$key" = VmData: ]; then
    prlimit --pid "$1" --data="$(( (value + $2) * 1024 ))" || exit 1
    echo "$value"
    exit 0
  fi
done < "/proc/$1/status"
echo "no VmData in /proc/$1/status" >&2
exit 1`;
  let output: Deno.CommandOutput;
  try {
    output = await new Deno.Command("/bin/sh", {
      args: ["-c", script, "sh", String(pid), String(extraMb * 1024)],
      clearEnv: true,
      env: { PATH: "/usr/bin:/bin:/usr/sbin:/sbin", LANG: "C" },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
  } catch (error) {
    throw new Error(`cannot cap the memory of cell ${pid}: ${(error as Error).message}`);
  }
  const idleKb = Number(new TextDecoder().decode(output.stdout).trim());
  if (output.code !== 0 || !Number.isSafeInteger(idleKb) || idleKb <= 0) {
    const why = new TextDecoder().decode(output.stderr).trim().split("\n")[0] ||
      `exit code ${output.code}`;
    throw new Error(`cannot cap the memory of cell ${pid}: ${why}`);
  }
  return idleKb;
}

/**
 * A running cell subprocess.
 *
 * @example
 * ```ts ignore
 * const cell = await Cell.spawn({ memoryMb: 128, maxWorkers: 8 });
 * const slot = await cell.open((message) => console.log(message));
 * await slot.send({ t: "start", entry: { kind: "module", source }, input: null, seed: 1, epoch: 0 });
 * ```
 */
export class Cell {
  /** Resolves when the subprocess has ended. */
  readonly exited: Promise<CellExit>;
  /** Output lines the programs wrote that are not protocol messages. */
  readonly output: string[] = [];
  /** Most programs the cell runs at once. */
  readonly maxWorkers: number;
  /** V8's heap limit of each Worker, in MiB: the most memory a program of the cell may have. */
  readonly memoryMb: number;
  /** The largest message a program of the cell may send, in bytes. */
  readonly maxMessageBytes: number;
  #child: Deno.ChildProcess;
  #stdin: WritableStreamDefaultWriter<Uint8Array>;
  /** Lines waiting for the write in flight to end. */
  #outbox: string[] = [];
  /** The write in flight, with every line queued behind it. */
  #writing: Promise<void> | undefined;
  #token: string;
  #outputBytes = 0;
  #maxOutputBytes: number;
  #killReason: string | undefined;
  #culprit: number | undefined;
  /** The culprit's program went over its memory limit. */
  #culpritOutOfMemory = false;
  #stderrTail = "";
  #ready: ((pid: number) => void) | undefined;
  #denoDir: string;
  #slots = new Map<number, Slot>();
  /** Threads of Workers closed since the last check, with their slots. */
  #closedThreads = new Map<string, Slot>();
  #threadCheck: ReturnType<typeof setTimeout> | undefined;
  #nextSlot = 1;
  #dead = false;

  private constructor(
    child: Deno.ChildProcess,
    token: string,
    options: CellOptions,
    denoDir: string,
  ) {
    this.#child = child;
    this.#denoDir = denoDir;
    this.#token = token;
    this.maxWorkers = options.maxWorkers ?? 1;
    this.memoryMb = options.memoryMb ?? 256;
    this.maxMessageBytes = options.maxMessageBytes ?? 1 << 20;
    this.#maxOutputBytes = options.maxOutputBytes ?? 64 * 1024;
    this.#stdin = child.stdin.getWriter();
    const maxLine = (options.maxMessageBytes ?? 1 << 20) + 200;
    const stdoutDone = this.#readLines(child.stdout, maxLine, true);
    const stderrDone = this.#readLines(child.stderr, maxLine, false);
    this.exited = Promise.all([child.status, stdoutDone, stderrDone]).then(
      async ([status]) => {
        this.#dead = true;
        if (this.#threadCheck !== undefined) clearTimeout(this.#threadCheck);
        await removePrivateDenoDir(denoDir);
        const outOfMemory = this.#killReason === undefined && this.#ranOutOfMemory();
        const exit: CellExit = {
          code: status.code,
          signal: status.signal,
          reason: this.#killReason ?? this.#diagnose(status),
          ...(outOfMemory ? { outOfMemory } : {}),
        };
        for (const [n, slot] of this.#slots) {
          const overLimit = outOfMemory || (this.#culpritOutOfMemory && this.#culprit === n);
          slot._end({
            reason: exit.reason ?? `The cell exited with code ${exit.code}`,
            culprit: this.#culprit === undefined
              ? (this.#slots.size === 1 ? true : undefined)
              : this.#culprit === n,
            ...(overLimit ? { outOfMemory: true } : {}),
          });
        }
        this.#slots.clear();
        return exit;
      },
    );
  }

  /** Starts a cell and waits until its warm Workers are up. */
  static async spawn(options: CellOptions = {}): Promise<Cell> {
    const memoryMb = options.memoryMb ?? 256;
    const maxWorkers = options.maxWorkers ?? 1;
    if (!Number.isSafeInteger(maxWorkers) || maxWorkers < 1) {
      throw new RangeError(
        `Cannot start a cell of ${maxWorkers} Workers: expected a whole number >= 1`,
      );
    }
    const warmWorkers = Math.min(options.warmWorkers ?? 1, maxWorkers);
    const extraMb = maxWorkers * (WORKER_RESERVE_MB + 2 * memoryMb);
    // A cell of a shape measured before starts under its cap: `prlimit`
    // sets it and then runs Deno, so no code of the cell runs uncapped and
    // a cap that cannot be set ends the start. The first cell of a shape is
    // measured once it is up and capped then, before any program runs.
    const idleKb = idleCellKb.get(cellShape(memoryMb, warmWorkers));
    const capped = idleKb === undefined
      ? undefined
      : { prlimit: prlimitPath(), bytes: (idleKb + extraMb * 1024) * 1024 };
    const denoArgs = [
      "run",
      ...CELL_RUN_FLAGS,
      `--v8-flags=--max-old-space-size=${memoryMb}`,
      CELL_MAIN,
    ];
    const denoDir = await makePrivateDenoDir();
    let child: Deno.ChildProcess;
    try {
      const commandOptions: Deno.CommandOptions = {
        clearEnv: true,
        env: cellEnv(denoDir),
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      };
      child = capped
        ? spawnHostChild(capped.prlimit, {
          ...commandOptions,
          args: [`--data=${capped.bytes}:${capped.bytes}`, "--", Deno.execPath(), ...denoArgs],
        })
        : spawnHostChild(Deno.execPath(), { ...commandOptions, args: denoArgs });
    } catch (error) {
      await removePrivateDenoDir(denoDir);
      throw error;
    }
    const token = randomToken();
    const cell = new Cell(child, token, options, denoDir);
    let cellPid = 0;
    const isReady = new Promise<void>((resolve) =>
      cell.#ready = (pid) => {
        cell.#ready = undefined;
        cellPid = pid;
        resolve();
      }
    );
    const hello: CellHello = {
      t: "hello",
      token,
      maxMessageBytes: options.maxMessageBytes ?? 1 << 20,
      memoryMb,
      maxWorkers,
      warmWorkers,
    };
    await cell.#write(hello);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const tooSlow = new Promise<"slow">((resolve) =>
      timer = setTimeout(() => resolve("slow"), READY_TIMEOUT_MS)
    );
    const exit = await Promise.race([isReady.then(() => null), cell.exited, tooSlow]);
    clearTimeout(timer);
    if (exit === "slow") {
      cell.kill("The cell did not start in time");
      await cell.exited;
      throw new Error(`Cannot start a cell: not ready within ${READY_TIMEOUT_MS / 1000} s`);
    }
    if (exit) {
      throw new Error(
        `Cannot start a cell: it exited with code ${exit.code}${
          exit.reason ? ` (${exit.reason})` : ""
        }`,
      );
    }
    if (capped) return cell;
    try {
      const measured = await capWritableMemory(cellPid, extraMb);
      idleCellKb.set(cellShape(memoryMb, warmWorkers), measured);
    } catch (error) {
      cell.kill("The cell's memory could not be capped");
      await cell.exited;
      throw new Error(`Cannot start a cell: ${(error as Error).message}`);
    }
    return cell;
  }

  /** The OS pid of the cell subprocess. */
  get osPid(): number {
    return this.#child.pid;
  }

  /** The cell's private Deno cache directory (removed once the cell has exited). */
  get denoDir(): string {
    return this.#denoDir;
  }

  /** How many slots are open (programs starting, running or closing). */
  get open(): number {
    return this.#slots.size;
  }

  /** True while the threads of Workers closed lately are still to be checked (see `Slot.close`). */
  get checkingThreads(): boolean {
    return this.#threadCheck !== undefined;
  }

  /** True once the cell is dying or dead: it takes no more slots. */
  get dead(): boolean {
    return this.#dead || this.#killReason !== undefined;
  }

  /**
   * Opens a slot: a Worker for one program, whose messages go to
   * `onMessage`, with its own memory limit and largest message (at most the
   * cell's). With `start`, the program starts as soon as the slot has its
   * Worker, sent with the open (no round trip between the two). Resolves
   * once the Worker is up; rejects when the cell is full or dies first.
   */
  async openSlot(
    onMessage: (message: SlotMessage) => void,
    limits: { memoryMb?: number; maxMessageBytes?: number } = {},
    start?: StartProgram,
  ): Promise<Slot> {
    const memoryMb = limits.memoryMb ?? this.memoryMb;
    const maxMessageBytes = limits.maxMessageBytes ?? this.maxMessageBytes;
    if (memoryMb > this.memoryMb || maxMessageBytes > this.maxMessageBytes) {
      throw new RangeError("Cannot open a slot: its limits exceed the cell's");
    }
    if (this.dead) throw new Error("Cannot open a slot: the cell has ended");
    if (this.#slots.size >= this.maxWorkers) {
      throw new Error(`Cannot open a slot: the cell runs ${this.maxWorkers} Workers already`);
    }
    const slot = new Slot(this, this.#nextSlot++, onMessage);
    this.#slots.set(slot.id, slot);
    await this.#write({ t: "open", slot: slot.id, memoryMb, maxMessageBytes, start })
      .catch(() => {});
    const opened = await Promise.race([slot._opened, slot.ended.then(() => false)]);
    if (!opened) throw new Error("Cannot open a slot: the cell has ended");
    return slot;
  }

  /**
   * Kills the cell (SIGKILL) and records why; `culprit` is the slot whose
   * program caused it, when known. Safe to call twice (the first reason
   * stays).
   */
  kill(reason: string, culprit?: Slot): void {
    if (this.#killReason === undefined) {
      this.#killReason = reason;
      this.#culprit = culprit?.id;
    }
    try {
      this.#child.kill("SIGKILL");
    } catch {
      // Already gone.
    }
  }

  /** @internal Sends `message` to the cell. */
  _send(message: HostToCell): Promise<void> {
    return this.#write(message).catch(() => {});
  }

  /** @internal A slot has ended: it is no longer the cell's. */
  _forget(slot: Slot): void {
    this.#slots.delete(slot.id);
  }

  /**
   * Sends one line. The first write waits for the lines sent in the same
   * turn of the event loop (the replies one group commit answers reach
   * here one after another, a few promise steps apart), and lines sent
   * while a write to the pipe is in flight go out together in the next:
   * each write costs the cell a read and a wake-up, so a commit's replies
   * cost one write, not one each. Resolves once its line is written.
   */
  #write(message: CellHello | HostToCell): Promise<void> {
    this.#outbox.push(JSON.stringify(message) + "\n");
    return this.#writing ??= this.#flush();
  }

  async #flush(): Promise<void> {
    try {
      // Lets the rest of this turn's lines join the first write.
      await null;
      while (this.#outbox.length) {
        const text = this.#outbox.join("");
        this.#outbox = [];
        await this.#stdin.write(new TextEncoder().encode(text));
      }
    } catch (error) {
      // The pipe is gone: what waits behind the failed write fails with it.
      this.#outbox = [];
      throw error;
    } finally {
      this.#writing = undefined;
    }
  }

  async #readLines(
    stream: ReadableStream<Uint8Array>,
    maxLine: number,
    protocol: boolean,
  ): Promise<void> {
    const decoder = new TextDecoder();
    let buffer = "";
    const prefix = this.#token + " ";
    try {
      for await (const chunk of stream) {
        buffer += decoder.decode(chunk, { stream: true });
        let newline: number;
        while ((newline = buffer.indexOf("\n")) >= 0) {
          const line = buffer.slice(0, newline);
          buffer = buffer.slice(newline + 1);
          if (protocol && line.startsWith(prefix)) {
            this.#onProtocol(line.slice(prefix.length));
          } else {
            this.#onOutput(line, protocol);
          }
        }
        if (buffer.length > maxLine) {
          this.kill(`A program wrote a line longer than ${maxLine} bytes`);
          buffer = "";
        }
      }
    } catch {
      // The stream ends with the cell.
    }
    if (buffer) this.#onOutput(buffer, protocol);
  }

  #onProtocol(text: string): void {
    let message: CellToHost;
    try {
      message = JSON.parse(text);
    } catch {
      this.kill("The cell sent a malformed protocol line");
      return;
    }
    switch (message.t) {
      case "ready":
        if (Number.isSafeInteger(message.pid) && message.pid > 0) this.#ready?.(message.pid);
        else this.kill("The cell sent a malformed ready message");
        return;
      case "crash": {
        const culprit = message.slot === undefined ? undefined : this.#slots.get(message.slot);
        if (culprit && message.memory === true && this.#killReason === undefined) {
          this.#culpritOutOfMemory = true;
        }
        this.kill(message.message, culprit);
        return;
      }
      case "opened":
        return this.#slots.get(message.slot)?._open();
      case "closed": {
        const slot = this.#slots.get(message.slot);
        if (!slot) return;
        if (typeof message.thread === "string") slot.thread = message.thread;
        if (message.clean === true && typeof message.thread === "string") {
          this.#checkThreadGone(message.thread, slot);
        }
        // A Worker that did not stop may be running code only the end of its cell stops.
        if (message.clean !== true) this.kill("A program kept running after it was stopped", slot);
        this.#slots.delete(slot.id);
        slot._end({ closed: { clean: message.clean === true } });
        return;
      }
      default:
        this.#slots.get(message.slot)?._deliver(message);
    }
  }

  /**
   * A Worker's acknowledgement of its close comes from its own isolate, so
   * a program can forge it and keep a loop running after `terminate()`.
   * Its OS thread then outlives it. Closed threads are checked together,
   * {@link THREAD_GONE_MS} after the first of them (one read of `/proc` per
   * cell, however many Workers closed): a thread of such a name still in
   * the cell costs the cell (its other programs resume elsewhere), and so
   * does a cell whose threads cannot be read (the check fails closed).
   */
  #checkThreadGone(thread: string, slot: Slot): void {
    this.#closedThreads.set(thread, slot);
    if (this.#threadCheck !== undefined) return;
    this.#threadCheck = setTimeout(async () => {
      const closed = new Map(this.#closedThreads);
      this.#closedThreads.clear();
      try {
        if (this.#dead) return;
        const threads = await threadNames(this.osPid);
        if (this.#dead) return;
        if (!threads) return this.kill("The cell's threads could not be checked after a close");
        const left = [...closed].find(([name]) => threads.includes(name));
        if (left) this.kill("A program kept running after it was stopped", left[1]);
      } finally {
        this.#threadCheck = undefined;
        // Workers closed while this check ran get one of their own.
        const next = [...this.#closedThreads];
        this.#closedThreads.clear();
        if (!this.#dead) { for (const [name, slot] of next) this.#checkThreadGone(name, slot); }
      }
    }, THREAD_GONE_MS);
  }

  #onOutput(line: string, fromStdout: boolean): void {
    if (!fromStdout) this.#stderrTail = (this.#stderrTail + line + "\n").slice(-2000);
    this.#outputBytes += line.length + 1;
    if (this.#outputBytes <= this.#maxOutputBytes) this.output.push(line);
    else if (this.#outputBytes - line.length - 1 <= this.#maxOutputBytes) {
      this.output.push(`[output over ${this.#maxOutputBytes} bytes dropped]`);
    }
  }

  #ranOutOfMemory(): boolean {
    return /heap|out of memory/i.test(this.#stderrTail);
  }

  #diagnose(status: Deno.CommandStatus): string | undefined {
    if (this.#ranOutOfMemory()) return "The program ran out of memory";
    if (status.signal) return `The cell was killed by ${status.signal}`;
    if (status.code !== 0) return `The cell exited with code ${status.code}`;
    return undefined;
  }
}

/**
 * One program's Worker in a {@link Cell}. Its messages come only from that
 * Worker: the cell stamps each with the slot of the Worker it came from.
 */
export class Slot {
  /** The slot's number in its cell. */
  readonly id: number;
  /** The cell it is in. */
  readonly cell: Cell;
  /** The name of its Worker's OS thread, once the cell reported it closed. */
  thread: string | undefined;
  /** Resolves once the slot has ended: closed by the host, or its cell died. */
  readonly ended: Promise<SlotEnd>;
  /** @internal Resolves true once the Worker is up. */
  readonly _opened: Promise<boolean>;
  #onMessage: (message: SlotMessage) => void;
  #resolveOpened!: (opened: boolean) => void;
  #resolveEnded!: (end: SlotEnd) => void;
  #end: SlotEnd | undefined;

  /** @internal Made by {@link Cell.openSlot}. */
  constructor(cell: Cell, id: number, onMessage: (message: SlotMessage) => void) {
    this.cell = cell;
    this.id = id;
    this.#onMessage = onMessage;
    this._opened = new Promise((resolve) => this.#resolveOpened = resolve);
    this.ended = new Promise((resolve) => this.#resolveEnded = resolve);
  }

  /** True once the slot has ended. */
  get isEnded(): boolean {
    return this.#end !== undefined;
  }

  /** Sends a message to the slot's program. Ignored once the slot has ended. */
  send(message: SlotInput): Promise<void> {
    if (this.#end) return Promise.resolve();
    return this.cell._send({ ...message, slot: this.id });
  }

  /**
   * Ends the slot's Worker; resolves with how the slot ended. A Worker that
   * does not stop by itself costs its cell (and its other programs a replay).
   */
  close(): Promise<SlotEnd> {
    if (!this.#end) this.cell._send({ t: "close", slot: this.id });
    return this.ended;
  }

  /** @internal The Worker is up. */
  _open(): void {
    this.#resolveOpened(true);
  }

  /** @internal A message of the slot's program. */
  _deliver(message: SlotMessage): void {
    if (!this.#end) this.#onMessage(message);
  }

  /** @internal The slot has ended. */
  _end(end: SlotEnd): void {
    if (this.#end) return;
    this.#end = end;
    this.cell._forget(this);
    this.#resolveOpened(false);
    this.#resolveEnded(end);
  }
}
