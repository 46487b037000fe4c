/**
 * One run of a process's program: a cell, the relay of its syscalls to the
 * broker, and the limits that kill it (CPU time without progress, wall-time
 * budget, syscall rate). A process that breaks a limit fails with a clear
 * reason; nothing else in the host is touched.
 *
 * @module
 */

import type { SyscallRequest } from "../broker/abi.ts";
import {
  type Broker,
  type BrokerReply,
  type CallContext,
  callDigest,
  PARKED,
} from "../broker/broker.ts";
import type { JournalRecord } from "../broker/journal.ts";
import { SyscallError } from "../broker/errors.ts";
import { Cell, type CellOptions } from "./cell.ts";
import type { CellPool } from "./cell_pool.ts";
import { type CellToHost, memoryLimitReason, type ProgramEntry } from "./guest/cell_protocol.ts";
import type { ProcessLimits, ProcessRecord } from "./process_table.ts";
import type { Waits } from "./waits.ts";

export type { ProcessLimits } from "./process_table.ts";

/** What a run of a program needs from the kernel. */
export interface ExecutionKernel {
  /** The warm cells, one of which the run takes when it fits. */
  readonly cells: Pick<CellPool, "take">;
  /** The broker every syscall of the program goes through. */
  readonly broker: Pick<Broker, "dispatch" | "uncertain" | "answerRecorded">;
  /** The waits, to block the process again on a wait replay finds still pending. */
  readonly waits: Pick<Waits, "repark">;
  /** The clock, for the wall-time budget. */
  readonly now: () => number;
  /** True once the kernel is closing (a call it could not journal then just stops). */
  readonly closed: boolean;
  /** Ends the process: it exited, or it failed (a limit, a crash, a cell that would not start). */
  finish(
    pid: number,
    state: "exited" | "failed",
    outcome: { result?: unknown; error?: { code?: string; message: string } },
  ): Promise<void>;
}

/** Limits used when neither the kernel nor the image sets one. */
export const DEFAULT_LIMITS: ProcessLimits = {
  cpuMs: 10_000,
  memoryMb: 256,
  maxMessageBytes: 1 << 20,
  syscallsPerSecond: 5_000,
  outputBytes: 64 * 1024,
};

/** The options of the cell a process with `limits` runs in. */
export function cellOptionsOf(limits: ProcessLimits): CellOptions {
  return {
    memoryMb: limits.memoryMb,
    maxMessageBytes: limits.maxMessageBytes,
    maxOutputBytes: limits.outputBytes,
  };
}

/** A running program. */
export class Execution {
  /** The cell, once started. */
  cell: Cell | undefined;
  /** Resolves when the cell has exited. */
  readonly done: Promise<void>;
  #kernel: ExecutionKernel;
  #record: ProcessRecord;
  #limits: ProcessLimits;
  #ctx: Omit<CallContext, "argsDigest" | "seq">;
  #nextSeq: number;
  #replay: Map<number, JournalRecord>;
  #inFlight = 0;
  #calls = new Set<Promise<void>>();
  #lastProgress = 0;
  #windowStart = 0;
  #windowCount = 0;
  #watchdog: ReturnType<typeof setInterval> | undefined;
  #stopped = false;
  #ended = false;
  #abort = new AbortController();
  #resolveDone!: () => void;

  /**
   * Prepares a run of `record` (state `running`) with `limits`. Its first
   * syscall gets journal seq `firstSeq`; calls found in `replay` are
   * answered from the journal instead of running again.
   */
  constructor(
    kernel: ExecutionKernel,
    record: ProcessRecord,
    limits: ProcessLimits,
    replay: { firstSeq: number; journal: Map<number, JournalRecord> },
  ) {
    this.#kernel = kernel;
    this.#record = record;
    this.#limits = limits;
    this.#nextSeq = replay.firstSeq;
    this.#replay = replay.journal;
    this.#ctx = {
      pid: record.pid,
      image: record.image,
      workspace: record.workspace,
      policy: record.policy,
      tool: record.tool ? `${record.tool.name}@${record.tool.digest.slice(0, 16)}` : undefined,
      cwd: record.cwd,
      alive: () => !this.#ended,
      signal: this.#abort.signal,
    };
    this.done = new Promise((resolve) => this.#resolveDone = resolve);
  }

  /**
   * Starts the program (from a checkpoint's state, when given) in a warm
   * cell, or a cold one when none is ready.
   */
  async start(entry: ProgramEntry, checkpoint?: unknown): Promise<void> {
    const options = cellOptionsOf(this.#limits);
    let cell = this.#kernel.cells.take(options);
    cell?.attach((m) => this.#onMessage(m));
    // A cell that fails to start (a loaded machine) is tried once more.
    for (let attempt = 1; !cell; attempt++) {
      try {
        cell = await Cell.spawn((m) => this.#onMessage(m), options);
      } catch (error) {
        if (attempt < 2 && !this.#stopped) continue;
        this.#resolveDone();
        await this.#fail((error as Error).message);
        return;
      }
    }
    this.cell = cell;
    if (this.#stopped) cell.kill("The process ended before its program started");
    cell.exited.then(async (exit) => {
      this.#stopWatchdog();
      if (!this.#stopped) {
        this.#stopped = true;
        await this.#fail(
          exit.outOfMemory
            ? memoryLimitReason(this.#record.pid, this.#limits.memoryMb)
            : exit.reason ?? `The cell exited with code ${exit.code}`,
        );
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
      seed: this.#record.seed,
      epoch: this.#record.startedAt ?? this.#record.createdAt,
      checkpoint,
    });
  }

  /** Resolves once the cell has exited and no syscall of it is still being handled. */
  async settled(): Promise<void> {
    await this.done;
    while (this.#calls.size) await Promise.allSettled([...this.#calls]);
  }

  /**
   * Marks the process as ended (killed, failed, exited): calls of it still
   * in flight are refused before they take effect, and those already
   * running are aborted.
   */
  markEnded(): void {
    this.#ended = true;
    this.#abortCalls("The process has ended");
  }

  /**
   * Kills the cell; the process state is the caller's business. With
   * `abortCalls` (the host is closing), calls still running are aborted
   * too; otherwise (a pause, a wait) they run to their end and their
   * outcome is journaled for the replay.
   */
  stop(reason: string, options: { abortCalls?: boolean } = {}): void {
    if (options.abortCalls) this.#abortCalls(reason);
    this.#stopped = true;
    this.#stopWatchdog();
    this.cell?.kill(reason);
    if (!this.cell) this.#resolveDone();
  }

  #abortCalls(reason: string): void {
    if (!this.#abort.signal.aborted) {
      this.#abort.abort(
        new SyscallError("EINTR", `Cannot finish the call: ${reason.toLowerCase()}`),
      );
    }
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
    const seq = this.#nextSeq++;
    const recorded = this.#replay.get(seq);
    this.#replay.delete(seq);
    let reply: BrokerReply | typeof PARKED | undefined;
    try {
      reply = recorded
        ? await this.#replayed(request, seq, recorded)
        : await this.#kernel.broker.dispatch({ ...this.#ctx, seq }, request);
    } catch (error) {
      // The host could not record the call (it is shutting down, or the
      // store failed): the program must not go on without its journal.
      this.#inFlight--;
      if (!this.#kernel.closed) {
        this.#kill(`The host could not journal ${request.name}: ${(error as Error).message}`);
      } else this.stop("The host is shutting down", { abortCalls: true });
      return;
    }
    this.#inFlight--;
    this.#lastProgress = performance.now();
    if (reply === PARKED || reply === undefined) {
      this.stop("The process is waiting");
      return;
    }
    // What the call's plan declared it changes in this run, live or replayed.
    const { after, ...answer } = reply;
    if (after?.cwd !== undefined) this.#ctx.cwd = after.cwd;
    if (after?.exit) {
      // Also on replay: an exit journaled before a crash ends the process now.
      this.markEnded();
      await this.#kernel.finish(this.#record.pid, "exited", { result: after.exit.result })
        .catch(() => {});
      this.stop("The program exited");
      return;
    }
    if (!this.#stopped) await this.cell?.send({ t: "reply", ...answer });
  }

  /**
   * Answers a call that is already in the journal: the recorded result, a
   * redo of an interrupted idempotent call, `EUNCERTAIN` for an interrupted
   * effect, or a non-determinism failure when the program called something
   * else at this position. Undefined when the process has stopped.
   */
  async #replayed(
    request: SyscallRequest,
    seq: number,
    recorded: JournalRecord,
  ): Promise<BrokerReply | typeof PARKED | undefined> {
    const digest = await callDigest(request.name, request.args);
    if (recorded.name !== request.name || recorded.argsDigest !== digest) {
      const what = recorded.name === request.name
        ? `${request.name} with other arguments`
        : `${request.name}`;
      this.#kill(
        `Non-determinism at journal seq ${seq}: the journal has ${recorded.name} but the program called ${what}`,
      );
      return undefined;
    }
    const ctx = { ...this.#ctx, seq };
    if (recorded.phase === "done" && recorded.valueDigest === undefined) {
      return this.#kernel.broker.answerRecorded(request, recorded);
    }
    if (recorded.phase === "wait") {
      await this.#kernel.waits.repark(this.#record.pid, seq);
      return PARKED;
    }
    if (recorded.effect === "effect" && recorded.phase === "intent") {
      return await this.#kernel.broker.uncertain(ctx, request, digest);
    }
    // An interrupted idempotent call, or a result too large to have been kept: run it again.
    return await this.#kernel.broker.dispatch(
      { ...ctx, redo: recorded.phase === "intent" },
      request,
    );
  }
}
