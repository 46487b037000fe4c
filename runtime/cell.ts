/**
 * The host side of a cell: spawns the zero-permission `deno run`
 * subprocess (`cell_main.ts`), speaks NDJSON with it, and kills it. A cell
 * runs one process's program; the host never runs untrusted code itself.
 * A cell is ready once its Worker is up, so a cell started ahead of need
 * (a warm cell, see `cell_pool.ts`) only has to import its program.
 *
 * @module
 */

import { fileURLToPath } from "node:url";
import type { CellHello, CellToHost, CellToWorker } from "./cell_protocol.ts";
import { spawnHostChild } from "./host_children.ts";

/** Limits a cell enforces or is started with. */
export interface CellOptions {
  /** V8 old-space limit of the cell, in MiB (default 256). */
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
}

const CELL_MAIN = fileURLToPath(new URL("./cell_main.ts", import.meta.url));

/** How long a cell may take to start before it is killed and the start fails. */
export const READY_TIMEOUT_MS = 20_000;

function randomToken(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** The environment a cell gets: enough for Deno to find its cache, nothing else. */
function cellEnv(): Record<string, string> {
  const env: Record<string, string> = { NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" };
  for (const name of ["DENO_DIR", "HOME", "XDG_CACHE_HOME", "PATH"]) {
    const value = Deno.env.get(name);
    if (value !== undefined) env[name] = value;
  }
  return env;
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
  #ready: (() => void) | undefined;

  private constructor(
    child: Deno.ChildProcess,
    token: string,
    onMessage: ((message: CellToHost) => void) | undefined,
    options: CellOptions,
  ) {
    this.#child = child;
    this.#token = token;
    this.#onMessage = onMessage;
    this.#maxOutputBytes = options.maxOutputBytes ?? 64 * 1024;
    this.#stdin = child.stdin.getWriter();
    const maxLine = (options.maxMessageBytes ?? 1 << 20) + 200;
    const stdoutDone = this.#readLines(child.stdout, maxLine, true);
    const stderrDone = this.#readLines(child.stderr, maxLine, false);
    this.exited = Promise.all([child.status, stdoutDone, stderrDone]).then(
      ([status]) => ({
        code: status.code,
        signal: status.signal,
        reason: this.#killReason ?? this.#diagnose(status),
      }),
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
    const child = spawnHostChild(Deno.execPath(), {
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
      env: cellEnv(),
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    });
    const token = randomToken();
    const cell = new Cell(child, token, onMessage, options);
    const isReady = new Promise<void>((resolve) => cell.#ready = resolve);
    const hello: CellHello = {
      t: "hello",
      token,
      maxMessageBytes: options.maxMessageBytes ?? 1 << 20,
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
    if (message.t === "ready") this.#ready?.();
    else if (this.#onMessage) this.#onMessage(message);
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

  #diagnose(status: Deno.CommandStatus): string | undefined {
    if (/heap|out of memory/i.test(this.#stderrTail)) {
      return "The program ran out of memory";
    }
    if (status.signal) return `The cell was killed by ${status.signal}`;
    if (status.code !== 0) return `The cell exited with code ${status.code}`;
    return undefined;
  }
}
