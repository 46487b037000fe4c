/**
 * The host side of a cell: spawns the zero-permission `deno run`
 * subprocess (`cell_main.ts`), speaks NDJSON with it, and kills it. A cell
 * runs one process's program; the host never runs untrusted code itself.
 * A cell is ready once its Worker is up, so a cell started ahead of need
 * (a warm cell, see `cell_pool.ts`) only has to import its program.
 *
 * Memory: `memoryMb` is what the program may use beyond the idle cell. The
 * cell ends itself with the memory reason when its resident memory goes
 * over that (`cell_main.ts`), V8's old space is limited to it, and once the
 * cell is ready, before any program runs, the host caps its writable memory
 * in the kernel (`RLIMIT_DATA`, through `prlimit`) at what the idle cell
 * has mapped plus twice `memoryMb`: past that an allocation fails, whatever
 * it is (`ArrayBuffer`s, WebAssembly memory and thread stacks are outside
 * V8's heap limit). A cell whose memory cannot be capped does not start.
 *
 * Disk: a cell gets a private, throwaway Deno cache (`deno_dir.ts`), never
 * the host's, removed when the cell ends, and no other environment.
 *
 * @module
 */

import { fileURLToPath } from "node:url";
import type { CellHello, CellToHost, CellToWorker } from "./guest/cell_protocol.ts";
import { makePrivateDenoDir, removePrivateDenoDir } from "./deno_dir.ts";
import { spawnHostChild } from "./host_children.ts";

/** Limits a cell enforces or is started with. */
export interface CellOptions {
  /** Memory the program may use beyond the idle cell, in MiB (default 256); see the module docs. */
  memoryMb?: number;
  /** Largest message the program may send, in bytes (default 1 MiB). */
  maxMessageBytes?: number;
  /** Program output (stdout/stderr lines that are not protocol) kept, in bytes (default 64 KiB). */
  maxOutputBytes?: number;
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

/** How long a cell may take to start before it is killed and the start fails. */
export const READY_TIMEOUT_MS = 20_000;

function randomToken(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** The environment a cell gets: its private Deno cache (also its `HOME`), nothing else. */
function cellEnv(denoDir: string): Record<string, string> {
  return { NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1", DENO_DIR: denoDir, HOME: denoDir };
}

/**
 * Sets `RLIMIT_DATA` (soft and hard) of process `pid` to its mapped
 * writable memory now (`VmData`) plus `extraMb` MiB. Deno reads `/proc`
 * only with `--allow-all`, so a shell reads it and `prlimit` sets the limit.
 */
async function capWritableMemory(pid: number, extraMb: number): Promise<void> {
  const script = `while read -r key value _; do
  if [ "$key" = VmData: ]; then exec prlimit --pid "$1" --data="$(( (value + $2) * 1024 ))"; fi
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
      stdout: "null",
      stderr: "piped",
    }).output();
  } catch (error) {
    throw new Error(`cannot cap the memory of cell ${pid}: ${(error as Error).message}`);
  }
  if (output.code !== 0) {
    const why = new TextDecoder().decode(output.stderr).trim().split("\n")[0] ||
      `exit code ${output.code}`;
    throw new Error(`cannot cap the memory of cell ${pid}: ${why}`);
  }
}

/**
 * A running cell subprocess.
 *
 * @example
 * ```ts ignore
 * const cell = await Cell.spawn((message) => console.log(message), { memoryMb: 128 });
 * cell.send({ t: "start", pid: 1, entry: { kind: "module", source }, input: null });
 * ```
 */
export class Cell {
  /** Resolves when the subprocess has ended. */
  readonly exited: Promise<CellExit>;
  /** Output lines the program wrote that are not protocol messages. */
  readonly output: string[] = [];
  #child: Deno.ChildProcess;
  #stdin: WritableStreamDefaultWriter<Uint8Array>;
  #token: string;
  #outputBytes = 0;
  #maxOutputBytes: number;
  #killReason: string | undefined;
  #stderrTail = "";
  #onMessage: ((message: CellToHost) => void) | undefined;
  #unclaimed: CellToHost[] = [];
  #ready: ((pid: number) => void) | undefined;
  #denoDir: string;

  private constructor(
    child: Deno.ChildProcess,
    token: string,
    onMessage: ((message: CellToHost) => void) | undefined,
    options: CellOptions,
    denoDir: string,
  ) {
    this.#child = child;
    this.#denoDir = denoDir;
    this.#token = token;
    this.#onMessage = onMessage;
    this.#maxOutputBytes = options.maxOutputBytes ?? 64 * 1024;
    this.#stdin = child.stdin.getWriter();
    const maxLine = (options.maxMessageBytes ?? 1 << 20) + 200;
    const stdoutDone = this.#readLines(child.stdout, maxLine, true);
    const stderrDone = this.#readLines(child.stderr, maxLine, false);
    this.exited = Promise.all([child.status, stdoutDone, stderrDone]).then(
      async ([status]) => {
        await removePrivateDenoDir(denoDir);
        const outOfMemory = this.#killReason === undefined && this.#ranOutOfMemory();
        return {
          code: status.code,
          signal: status.signal,
          reason: this.#killReason ?? this.#diagnose(status),
          ...(outOfMemory ? { outOfMemory } : {}),
        };
      },
    );
  }

  /**
   * Starts a cell and waits until its Worker is up. Messages go to
   * `onMessage`; without one they are kept until {@link Cell.attach}.
   */
  static async spawn(
    onMessage: ((message: CellToHost) => void) | undefined,
    options: CellOptions = {},
  ): Promise<Cell> {
    const memoryMb = options.memoryMb ?? 256;
    const denoDir = await makePrivateDenoDir();
    let child: Deno.ChildProcess;
    try {
      child = spawnHostChild(Deno.execPath(), {
        args: [
          "run",
          "--no-prompt",
          "--no-remote",
          "--no-npm",
          "--no-config",
          "--no-lock",
          "--unstable-worker-options",
          `--v8-flags=--max-old-space-size=${memoryMb}`,
          CELL_MAIN,
        ],
        clearEnv: true,
        env: cellEnv(denoDir),
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      });
    } catch (error) {
      await removePrivateDenoDir(denoDir);
      throw error;
    }
    const token = randomToken();
    const cell = new Cell(child, token, onMessage, options, denoDir);
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
    try {
      await capWritableMemory(cellPid, 2 * memoryMb);
    } catch (error) {
      cell.kill("The cell's memory could not be capped");
      await cell.exited;
      throw new Error(`Cannot start a cell: ${(error as Error).message}`);
    }
    return cell;
  }

  /** Sends the cell's messages to `onMessage` from now on (and any kept so far). */
  attach(onMessage: (message: CellToHost) => void): void {
    this.#onMessage = onMessage;
    for (const message of this.#unclaimed.splice(0)) onMessage(message);
  }

  /** The OS pid of the cell subprocess. */
  get osPid(): number {
    return this.#child.pid;
  }

  /** The cell's private Deno cache directory (removed once the cell has exited). */
  get denoDir(): string {
    return this.#denoDir;
  }

  /** Sends a message to the Worker in the cell. Ignored once the cell is gone. */
  send(message: CellToWorker): Promise<void> {
    return this.#write(message).catch(() => {});
  }

  /** Kills the cell (SIGKILL) and records why. Safe to call twice. */
  kill(reason: string): void {
    this.#killReason ??= reason;
    try {
      this.#child.kill("SIGKILL");
    } catch {
      // Already gone.
    }
  }

  #write(message: CellHello | CellToWorker): Promise<void> {
    return this.#stdin.write(
      new TextEncoder().encode(JSON.stringify(message) + "\n"),
    );
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
          this.kill(`The program wrote a line longer than ${maxLine} bytes`);
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
    if (message.t === "ready") {
      if (Number.isSafeInteger(message.pid) && message.pid > 0) this.#ready?.(message.pid);
      else this.kill("The cell sent a malformed ready message");
    } else if (this.#onMessage) this.#onMessage(message);
    else this.#unclaimed.push(message);
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
