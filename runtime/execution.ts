/**
 * One run of a process's program: a Worker in a cell (a {@link Slot}), the
 * relay of its syscalls to the broker, and the limits that end it (CPU
 * time without progress, wall-time budget, syscall rate). A process that
 * breaks a limit fails with a clear reason. A program that runs past its
 * CPU limit may be busy in a loop its Worker cannot leave, so its whole
 * cell is killed; the other programs of the cell are bystanders and resume
 * from their journals in another cell.
 *
 * @module
 */

import type { SyscallArgs, SyscallRequest } from "../broker/abi.ts";
import {
  type Broker,
  type BrokerReply,
  type CallContext,
  callDigest,
  PARKED,
} from "../broker/broker.ts";
import type { JournalRecord } from "../broker/journal.ts";
import { SyscallError } from "../broker/errors.ts";
import type { CellOptions, Slot, SlotEnd, SlotMessage } from "./cell.ts";
import type { CellPool, EarlyStart, Placement } from "./cell_pool.ts";
import type { ProgramEntry, StartProgram } from "./guest/cell_protocol.ts";
import type { ProcessLimits, ProcessRecord } from "./process_table.ts";
import type { Conversation, ConversationRequest } from "./transcripts.ts";
import type { Waits } from "./waits.ts";

export type { ProcessLimits } from "./process_table.ts";

/** What a run of a program needs from the kernel. */
export interface ExecutionKernel {
  /** The host's cells: the run's Worker is placed in one, and released when it ends. */
  readonly cells: Pick<CellPool, "place" | "released">;
  /** The broker every syscall of the program goes through. */
  readonly broker: Pick<Broker, "dispatch" | "uncertain" | "answerRecorded">;
  /** The waits, to block the process again on a wait replay finds still pending. */
  readonly waits: Pick<Waits, "repark">;
  /** The whole conversation a `model.complete` names by transcript reference. */
  resolveConversation(pid: number, request: ConversationRequest): Promise<Conversation>;
  /** The clock, for the wall-time budget. */
  readonly now: () => number;
  /** True once the kernel is closing (a call it could not journal then just stops). */
  readonly closed: boolean;
  /** Runs a `running` process again from its journal in another cell (its cell died for another's sake). */
  resumeElsewhere(pid: number, options: { alone: boolean }): Promise<void>;
  /**
   * The program is blocked in a call: the kernel keeps its Worker for a
   * grace period (then, or when it needs the room, it stops the run).
   */
  linger(execution: Execution): void;
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

/** The message that starts `record`'s program `entry` (from `checkpoint`'s state, when given). */
export function startOf(
  record: Pick<ProcessRecord, "input" | "seed" | "startedAt" | "createdAt">,
  entry: ProgramEntry,
  checkpoint?: unknown,
): StartProgram {
  return {
    t: "start",
    entry,
    input: record.input ?? null,
    seed: record.seed,
    epoch: record.startedAt ?? record.createdAt,
    checkpoint,
  };
}

/** The one-line reason a process fails with when its cell goes over `memoryMb`. */
export function memoryLimitReason(pid: number, memoryMb: number): string {
  return `Process ${pid} exceeded its memory limit of ${memoryMb} MB`;
}

/** A running program. */
export class Execution {
  /** The program's Worker, once started. */
  slot: Slot | undefined;
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
  /** The call the program is blocked in while its Worker lingers. */
  #waiting: { seq: number; id: number } | undefined;
  #abort = new AbortController();
  /** Messages of the program that arrived before its slot was known. */
  #early: SlotMessage[] = [];
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
   * Starts the program (from `options.checkpoint`'s state, when given) in a
   * Worker of a cell its `placement` allows; or takes over `options.early`,
   * the program started while its process was being made.
   */
  async start(
    entry: ProgramEntry,
    placement: Omit<Placement, "limits">,
    options: { checkpoint?: unknown; early?: EarlyStart } = {},
  ): Promise<void> {
    let slot: Slot;
    try {
      const onMessage = (m: SlotMessage) => this.#onMessage(m);
      // The program starts as soon as its Worker is up: its start goes with the open.
      slot = options.early
        ? await options.early.attach(onMessage, placement.group)
        : await this.#kernel.cells.place(
          { ...placement, limits: cellOptionsOf(this.#limits) },
          onMessage,
          startOf(this.#record, entry, options.checkpoint),
        );
    } catch (error) {
      this.#resolveDone();
      // A start the host's shutdown refused is not the program's failure: it resumes on the next start.
      if (!this.#stopped && !this.#kernel.closed) await this.#fail((error as Error).message);
      return;
    }
    this.slot = slot;
    if (this.#stopped) slot.close();
    slot.ended.then(async (end) => {
      this.#stopWatchdog();
      this.#kernel.cells.released(slot);
      if (!this.#stopped) {
        this.#stopped = true;
        await this.#onSlotEnded(end);
      }
      this.#resolveDone();
    });
    this.#lastProgress = performance.now();
    if (!this.#stopped) this.#watchdog = setInterval(() => this.#check(), 50);
    // What the program said while its slot was being handed over.
    for (const message of this.#early.splice(0)) this.#onMessage(message);
  }

  /**
   * The program's Worker ended by itself: its cell died. The program that
   * caused it fails; a bystander resumes from its journal in another cell,
   * in a cell of its own when the cell could not tell which program it was.
   */
  async #onSlotEnded(end: SlotEnd): Promise<void> {
    if (end.reason !== undefined && end.culprit !== true && !this.#ended) {
      // Its calls in flight finish first: one that blocks it (a wait) must
      // not find it already put back as runnable, and its replay reads their outcomes.
      while (this.#calls.size) await Promise.allSettled([...this.#calls]);
      await this.#kernel.resumeElsewhere(this.#record.pid, { alone: end.culprit === undefined })
        .catch(() => {});
      return;
    }
    await this.#fail(
      end.outOfMemory
        ? memoryLimitReason(this.#record.pid, this.#limits.memoryMb)
        : end.reason ?? "The program's Worker ended",
    );
  }

  /** The process this run is of. */
  get pid(): number {
    return this.#record.pid;
  }

  /** The journal seq of the call the program is blocked in, while its Worker waits with it. */
  get waitingSeq(): number | undefined {
    return this.#waiting?.seq;
  }

  /**
   * Answers the call the program is blocked in with its finished journal
   * record, in the same Worker: no replay. `current` is the process record
   * as woken (its policy may have changed while it waited). False when it cannot (the run
   * has stopped, or the record holds no reply): the process then replays.
   */
  async wake(recorded: JournalRecord, current: ProcessRecord): Promise<boolean> {
    const waiting = this.#waiting;
    if (
      !waiting || recorded.seq !== waiting.seq || !holdsReply(recorded) || this.#stopped ||
      !this.slot
    ) return false;
    const reply = this.#kernel.broker.answerRecorded(
      { id: waiting.id, name: recorded.name, args: null },
      recorded,
    );
    this.#waiting = undefined;
    // What may have changed while it waited (a human's deny_always adds a rule).
    this.#ctx.policy = current.policy;
    this.#lastProgress = performance.now();
    this.#watchdog = setInterval(() => this.#check(), 50);
    const { after: _after, ...answer } = reply;
    await this.slot.send({ t: "reply", ...answer });
    return true;
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
   * Ends the program's Worker; the process state is the caller's business.
   * With `abortCalls` (the host is closing), calls still running are
   * aborted too; otherwise (a pause, a wait) they run to their end and
   * their outcome is journaled for the replay. With `busy` (the program ran
   * past its CPU limit), its whole cell is killed: a busy Worker cannot be
   * stopped alone.
   */
  stop(reason: string, options: { abortCalls?: boolean; busy?: boolean } = {}): void {
    if (options.abortCalls) this.#abortCalls(reason);
    this.#stopped = true;
    this.#stopWatchdog();
    if (!this.slot) return this.#resolveDone();
    if (options.busy) this.slot.cell.kill(reason, this.slot);
    else this.slot.close();
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
        undefined,
        { busy: true },
      );
      return;
    }
    const wallMs = this.#record.budget.wallMs;
    const started = this.#record.startedAt ?? this.#record.createdAt;
    if (wallMs !== undefined && this.#kernel.now() - started > wallMs) {
      this.#kill(`The process used its wall-time budget of ${wallMs} ms`, "EBUDGET");
    }
  }

  #kill(reason: string, code?: string, options: { busy?: boolean } = {}): void {
    if (this.#stopped) return;
    this.stop(reason, options);
    this.#fail(reason, code);
  }

  #fail(message: string, code?: string): Promise<void> {
    return this.#kernel.finish(this.#record.pid, "failed", {
      error: code ? { code, message } : { message },
    }).catch(() => {});
  }

  #onMessage(message: SlotMessage): void {
    if (this.#stopped) return;
    // The program starts with its open, so it may speak before `place` returns its slot.
    if (!this.slot) {
      this.#early.push(message);
      return;
    }
    // A program that acts while blocked parks at once (its replay redoes it).
    if (this.#waiting) return this.stop("The process is waiting");
    if (message.t === "syscall") {
      const call = this.#syscall(message);
      this.#calls.add(call);
      call.finally(() => this.#calls.delete(call));
    } else if (message.t === "fail") {
      this.#kill(message.message, message.code);
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
    if (reply === PARKED) {
      if (this.#stopped) return;
      // Blocked: the kernel keeps the Worker a while for a quick wake-up.
      this.#waiting = { seq, id: request.id };
      this.#stopWatchdog();
      this.#kernel.linger(this);
      return;
    }
    if (reply === undefined) {
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
    if (!this.#stopped) await this.slot?.send({ t: "reply", ...answer });
  }

  /**
   * True when `request` is a `model.complete` that names the start of its
   * conversation by transcript reference, and the call journaled as `digest`
   * sent that whole conversation instead (a journal written before requests
   * could reference the transcript): both ask the model the same.
   */
  async #sameConversation(request: SyscallRequest, digest: string): Promise<boolean> {
    if (request.name !== "model.complete") return false;
    const args = request.args as SyscallArgs<"model.complete">;
    if (!args.transcript) return false;
    const conversation = await this.#kernel.resolveConversation(this.#record.pid, args).catch(() =>
      undefined
    );
    if (!conversation) return false;
    const { transcript: _reference, ...rest } = args;
    const whole = { ...rest, messages: [...conversation.messages] };
    return await callDigest(request.name, whole) === digest;
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
    let digest = await callDigest(request.name, request.args);
    if (
      recorded.name === request.name && recorded.argsDigest !== digest &&
      await this.#sameConversation(request, recorded.argsDigest)
    ) digest = recorded.argsDigest;
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
    if (holdsReply(recorded)) return this.#kernel.broker.answerRecorded(request, recorded);
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

/** True when a journal record holds its call's reply (done, and its value was small enough to keep). */
function holdsReply(recorded: JournalRecord): boolean {
  return recorded.phase === "done" && recorded.valueDigest === undefined;
}
