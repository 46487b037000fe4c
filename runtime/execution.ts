/**
 * One run of a process's program: a cell, the relay of its syscalls to the
 * broker, and the limits that kill it (CPU time without progress, wall-time
 * budget, syscall rate). A process that breaks a limit fails with a clear
 * reason; nothing else in the host is touched.
 *
 * @module
 */

import type { SyscallRequest } from "../broker/abi.ts";
import type { CallContext } from "../broker/broker.ts";
import { Cell } from "./cell.ts";
import type { CellToHost, ProgramEntry } from "./cell_protocol.ts";
import type { Kernel } from "./kernel.ts";
import type { ProcessRecord } from "./process_table.ts";

/** Limits per process (SPEC section 8). */
export interface ProcessLimits {
  /** Longest time the program may run without making a syscall, in ms. */
  cpuMs: number;
  /** V8 heap limit of its cell, in MiB. */
  memoryMb: number;
  /** Largest message the program may send, in bytes. */
  maxMessageBytes: number;
  /** Most syscalls per second. */
  syscallsPerSecond: number;
  /** Program output kept for `logs`, in bytes. */
  outputBytes: number;
}

/** Limits used when neither the kernel nor the image sets one. */
export const DEFAULT_LIMITS: ProcessLimits = {
  cpuMs: 10_000,
  memoryMb: 256,
  maxMessageBytes: 1 << 20,
  syscallsPerSecond: 5_000,
  outputBytes: 64 * 1024,
};

/** A running program. */
export class Execution {
  /** The cell, once started. */
  cell: Cell | undefined;
  /** Resolves when the cell has exited. */
  readonly done: Promise<void>;
  #kernel: Kernel;
  #record: ProcessRecord;
  #limits: ProcessLimits;
  #ctx: Omit<CallContext, "argsDigest" | "seq">;
  #nextSeq: number;
  #inFlight = 0;
  #calls = new Set<Promise<void>>();
  #lastProgress = 0;
  #windowStart = 0;
  #windowCount = 0;
  #watchdog: ReturnType<typeof setInterval> | undefined;
  #stopped = false;
  #resolveDone!: () => void;

  /** Prepares a run of `record` (state `running`) with `limits`. */
  constructor(
    kernel: Kernel,
    record: ProcessRecord,
    limits: ProcessLimits,
    nextSeq: number,
  ) {
    this.#kernel = kernel;
    this.#record = record;
    this.#limits = limits;
    this.#nextSeq = nextSeq;
    this.#ctx = {
      pid: record.pid,
      image: record.image,
      workspace: record.workspace,
      policy: record.policy,
    };
    this.done = new Promise((resolve) => this.#resolveDone = resolve);
  }

  /** Starts the cell and the program. */
  async start(entry: ProgramEntry): Promise<void> {
    let cell: Cell;
    try {
      cell = await Cell.spawn((m) => this.#onMessage(m), {
        memoryMb: this.#limits.memoryMb,
        maxMessageBytes: this.#limits.maxMessageBytes,
        maxOutputBytes: this.#limits.outputBytes,
      });
    } catch (error) {
      this.#resolveDone();
      await this.#fail((error as Error).message);
      return;
    }
    this.cell = cell;
    if (this.#stopped) cell.kill("The process ended before its program started");
    cell.exited.then(async (exit) => {
      this.#stopWatchdog();
      if (!this.#stopped) {
        this.#stopped = true;
        await this.#fail(exit.reason ?? `The cell exited with code ${exit.code}`);
      }
      this.#resolveDone();
    });
    this.#lastProgress = performance.now();
    this.#watchdog = setInterval(() => this.#check(), 50);
    await cell.send({
      t: "start",
      pid: this.#record.pid,
      entry,
      input: this.#record.input ?? null,
    });
  }

  /** Resolves once the cell has exited and no syscall of it is still being handled. */
  async settled(): Promise<void> {
    await this.done;
    while (this.#calls.size) await Promise.allSettled([...this.#calls]);
  }

  /** Kills the cell; the process state is the caller's business. */
  stop(reason: string): void {
    this.#stopped = true;
    this.#stopWatchdog();
    this.cell?.kill(reason);
    if (!this.cell) this.#resolveDone();
  }

  #stopWatchdog(): void {
    if (this.#watchdog !== undefined) clearInterval(this.#watchdog);
    this.#watchdog = undefined;
  }

  #check(): void {
    const now = performance.now();
    if (this.#inFlight === 0 && now - this.#lastProgress > this.#limits.cpuMs) {
      this.#kill(
        `The program ran ${this.#limits.cpuMs} ms without making a syscall (CPU limit)`,
      );
      return;
    }
    const wallMs = this.#record.budget.wallMs;
    const started = this.#record.startedAt ?? this.#record.createdAt;
    if (wallMs !== undefined && this.#kernel.now() - started > wallMs) {
      this.#kill(`The process used its wall-time budget of ${wallMs} ms`, "EBUDGET");
    }
  }

  #kill(reason: string, code?: string): void {
    if (this.#stopped) return;
    this.stop(reason);
    this.#fail(reason, code);
  }

  #fail(message: string, code?: string): Promise<void> {
    return this.#kernel.finish(this.#record.pid, "failed", {
      error: code ? { code, message } : { message },
    }).catch(() => {});
  }

  #onMessage(message: CellToHost): void {
    if (this.#stopped) return;
    if (message.t === "syscall") {
      const call = this.#syscall(message);
      this.#calls.add(call);
      call.finally(() => this.#calls.delete(call));
    } else if (message.t === "fail" || message.t === "crash") {
      const code = message.t === "fail" ? message.code : undefined;
      this.#kill(message.message, code);
    }
  }

  async #syscall(request: SyscallRequest): Promise<void> {
    const now = performance.now();
    if (now - this.#windowStart >= 1000) {
      this.#windowStart = now;
      this.#windowCount = 0;
    }
    if (++this.#windowCount > this.#limits.syscallsPerSecond) {
      this.#kill(
        `The program made more than ${this.#limits.syscallsPerSecond} syscalls in one second (rate limit)`,
      );
      return;
    }
    this.#inFlight++;
    this.#lastProgress = now;
    const reply = await this.#kernel.broker.dispatch(
      { ...this.#ctx, seq: this.#nextSeq++ },
      request,
    );
    this.#inFlight--;
    this.#lastProgress = performance.now();
    if (request.name === "proc.exit" && reply.ok) {
      this.stop("The program exited");
      return;
    }
    if (!this.#stopped) await this.cell?.send({ t: "reply", ...reply });
  }
}
