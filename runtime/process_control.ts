/**
 * Controlling processes from outside their programs: ending one (its
 * waiting parent answered, `onParentExit` applied to its children),
 * signals (pause, resume, interrupt, terminate, kill), waiting until one
 * has ended, and resuming them all when a host takes over the store.
 *
 * @module
 */

import type { CapabilityStore } from "../broker/capability_store.ts";
import { SyscallError } from "../broker/errors.ts";
import type { Journal, JournalRecord } from "../broker/journal.ts";
import {
  END_STATES,
  type ProcessRecord,
  type ProcessState,
  type ProcessTable,
} from "./process_table.ts";
import type { ScheduledExecution, Scheduler } from "./scheduler.ts";
import type { Store } from "./store.ts";
import type { Waits } from "./waits.ts";

/** The states a process ends in. */
export type EndState = Extract<ProcessState, "exited" | "failed" | "killed">;

/** How a process ended: its result, or why it failed or was killed. */
export interface Outcome {
  /** The result of a process that exited. */
  result?: unknown;
  /** Why it failed. */
  error?: { code?: string; message: string };
  /** Why it ended, recorded with the transition (default: the error's message). */
  reason?: string;
}

/** The signals an operator or an ancestor may send. */
export type Signal = "pause" | "resume" | "interrupt" | "terminate" | "kill";

/** What process control needs from the kernel. */
export interface ProcessControlHost {
  /** The store, where waiting parents and parked calls are recorded. */
  readonly store: Pick<Store, "kv">;
  /** The process table. */
  readonly processes: Pick<
    ProcessTable,
    "get" | "require" | "update" | "transition" | "children" | "subscribe" | "list"
  >;
  /** The journal, whose buffered records of a process commit with its end. */
  readonly journal: Pick<Journal, "claim" | "flush">;
  /** The capability store, whose cache of an ended process is dropped. */
  readonly caps: Pick<CapabilityStore, "invalidate">;
  /** The parked calls: completed for a waiting parent or an interrupt, rechecked on recovery. */
  readonly waits: Pick<Waits, "complete" | "childEnded" | "start" | "recheck">;
  /** The scheduler, whose executions stop when their process ends or pauses. */
  readonly scheduler: Pick<
    Scheduler<ScheduledExecution>,
    "ending" | "executionOf" | "start" | "serve" | "dequeue"
  >;
}

/** Ends, signals and waits for processes. */
export class ProcessControl {
  #host: ProcessControlHost;

  /** Control over `host`'s processes. */
  constructor(host: ProcessControlHost) {
    this.#host = host;
  }

  /**
   * Ends a process in `state` (idempotent: an ended process stays as it
   * is), stops its cell, answers a parent waiting for it, and applies
   * `onParentExit` to its children.
   */
  async finish(pid: number, state: EndState, outcome: Outcome = {}): Promise<void> {
    const { processes, scheduler } = this.#host;
    scheduler.ending(pid);
    const patch: Partial<ProcessRecord> = {};
    if (outcome.result !== undefined) patch.result = outcome.result;
    // A reason is one line: a program's error message is cut to fit its row
    // (and made text: a program chooses what it throws).
    if (outcome.error) {
      const { code } = outcome.error;
      patch.error = {
        ...(typeof code === "string" ? { code } : {}),
        message: _clipReason(outcome.error.message),
      };
    }
    const reason = outcome.reason ?? patch.error?.message;
    // What the process did is in the journal and audit before it is seen to
    // end: its buffered records are committed in the commit that ends it.
    // Nothing may throw between this claim and the commit's `try` below.
    const records = await this.#host.journal.claim(pid);
    let ended: ProcessRecord | undefined;
    let woken: (() => void) | undefined;
    // The record as the ending commit reads it (no read of its own before):
    // a process already ended, or gone, is left as it is.
    let current: ProcessRecord | undefined;
    let unchanged = false;
    try {
      ended = await processes.update(pid, (record) => {
        current = record;
        if (END_STATES.has(record.state)) {
          unchanged = true;
          throw new SyscallError("EINVAL", `Cannot end process ${pid}: it is ${record.state}`);
        }
        return { ...patch, state };
      }, {
        reason: reason === undefined ? undefined : _clipReason(reason),
        // A parent waiting for it (`proc.wait`, `tool.call`) is answered and
        // made runnable in the commit that ends it.
        prepare: async () => {
          const waiters = await this.#host.waits.childEnded(pid, () => {
            const end = { ...current, ...patch };
            return { pid, state, result: end.result, error: end.error };
          });
          woken = waiters.woken;
          await records.link();
          return {
            apply: (op) => {
              records.apply(op);
              waiters.apply(op);
            },
            linked: waiters.linked,
            committed: records.committed,
          };
        },
      });
    } catch (error) {
      // Not ended by this commit: the records are committed on their own.
      records.release();
      if (unchanged || (error instanceof SyscallError && error.code === "ENOENT")) return;
      if (error instanceof SyscallError) {
        // Already moved on (ended elsewhere): nothing to record.
      } else {
        // The end could not be recorded as it is (a store error): the process
        // still ends, failed, saying why, rather than staying "running".
        const why = _clipReason(
          `Cannot record how process ${pid} ended: ${(error as Error).message}`,
        );
        await this.#host.journal.flush().catch(() => {});
        await processes.transition(pid, "failed", {
          patch: { error: { message: why } },
          reason: why,
        })
          .catch(() => {});
      }
    }
    scheduler.executionOf(pid)?.stop(`The process ${state}`);
    this.#host.caps.invalidate(pid);
    if (ended) woken?.();
    // Its waiters not answered by that commit are answered from its record
    // as stored: all of them when it ended otherwise, and any wait committed
    // after that commit listed them and before it committed (a wait
    // committed after it finds the end itself: see `Waits.recheck`).
    const record = ended ?? await processes.get(pid);
    if (record && END_STATES.has(record.state)) {
      for await (const waiter of this.#host.store.kv.list({ prefix: ["wait_child", pid] })) {
        const [, , parent, seq] = waiter.key as [string, number, number, number];
        await this.#host.waits.complete(parent, seq, {
          ok: true,
          value: { pid, state: record.state, result: record.result, error: record.error },
        });
      }
    }
    for (const child of await processes.children(pid)) {
      const record = await processes.get(child);
      if (record && !END_STATES.has(record.state) && record.onParentExit === "kill") {
        await this.finish(child, "killed", { reason: `Its parent ${pid} ${state}` });
      }
    }
  }

  /**
   * Delivers a signal. `terminate` and `kill` end the process as `killed`
   * (`onParentExit` then applies to its children); `pause` stops its cell
   * (it replays on `resume`) or holds it while blocked; `interrupt` fails
   * its blocked syscall with `EINTR`.
   */
  async signal(pid: number, signal: Signal, options: { by?: string } = {}): Promise<void> {
    const { processes, scheduler } = this.#host;
    const record = await processes.require(pid);
    const by = options.by ?? "operator";
    if (END_STATES.has(record.state)) {
      throw new SyscallError("EINVAL", `Cannot signal process ${pid}: it has ${record.state}`);
    }
    if (signal === "terminate" || signal === "kill") {
      await this.finish(pid, "killed", { reason: `${signal} signal from ${by}` });
      return;
    }
    if (signal === "pause") {
      if (record.state === "paused") return;
      await processes.update(pid, (p) => ({
        state: "paused",
        pausedFrom: p.state === "blocked" ? "blocked" : "runnable",
      }), { reason: `pause signal from ${by}` });
      scheduler.dequeue(pid);
      scheduler.executionOf(pid)?.stop("The process was paused");
      return;
    }
    if (signal === "resume") {
      if (record.state !== "paused") {
        throw new SyscallError(
          "EINVAL",
          `Cannot resume process ${pid}: it is ${record.state}, not paused`,
        );
      }
      const next = await processes.update(pid, (p) => ({
        state: p.pausedFrom === "blocked" ? "blocked" : "runnable",
        pausedFrom: undefined,
      }), { reason: `resume signal from ${by}` });
      if (next.state === "runnable") scheduler.start(pid);
      return;
    }
    if (
      record.state !== "blocked" && !(record.state === "paused" && record.pausedFrom === "blocked")
    ) {
      throw new SyscallError(
        "EINVAL",
        `Cannot interrupt process ${pid}: it is not blocked in a syscall`,
      );
    }
    await this.#host.waits.complete(pid, record.waitSeq!, {
      ok: false,
      error: { code: "EINTR", message: `Interrupted by a signal from ${by}` },
    });
  }

  /**
   * Makes this host the host of the whole store and resumes every live
   * process: running ones (their host died) replay from their journals,
   * runnable ones start, blocked ones are checked for conditions that came
   * true meanwhile and otherwise wait for them; one still `created` (a
   * fork the host died making) fails. Starts the waits' timer. Those to
   * run go through the scheduler's run queue in pid order (oldest first),
   * which admits them as fast as Workers start. Returns how many
   * processes it queued.
   */
  async recover(): Promise<number> {
    const { processes, scheduler, waits } = this.#host;
    scheduler.serve();
    let started = 0;
    waits.start();
    for (const record of await processes.list()) {
      if (record.state === "running" && !scheduler.executionOf(record.pid)) {
        await processes.transition(record.pid, "runnable", { reason: "the host restarted" });
        scheduler.start(record.pid);
        started++;
      } else if (record.state === "runnable") {
        scheduler.start(record.pid);
        started++;
      } else if (record.state === "created") {
        // A fork or snapshot fork that the host died in the middle of.
        await this.finish(record.pid, "failed", {
          error: { message: "Its creation was interrupted by a host restart" },
        });
      } else if (record.state === "blocked" && record.waitSeq !== undefined) {
        const wait =
          (await this.#host.store.kv.get<JournalRecord>(["journal", record.pid, record.waitSeq]))
            .value;
        if (wait?.wait) await waits.recheck(record.pid, record.waitSeq, wait.wait);
      }
    }
    return started;
  }

  /** Resolves with the record once `pid` is in an end state (`ETIMEDOUT` after `timeoutMs`). */
  waitFor(pid: number, options: { timeoutMs?: number } = {}): Promise<ProcessRecord> {
    const processes = this.#host.processes;
    return new Promise((resolve, reject) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const unsubscribe = processes.subscribe((record) => {
        if (record.pid === pid && END_STATES.has(record.state)) done(record);
      });
      const done = (record: ProcessRecord) => {
        unsubscribe();
        if (timer !== undefined) clearTimeout(timer);
        resolve(record);
      };
      if (options.timeoutMs !== undefined) {
        timer = setTimeout(() => {
          unsubscribe();
          reject(new SyscallError("ETIMEDOUT", `Cannot wait for process ${pid}: timed out`));
        }, options.timeoutMs);
      }
      processes.require(pid).then((record) => {
        if (END_STATES.has(record.state)) done(record);
      }, (error) => {
        unsubscribe();
        if (timer !== undefined) clearTimeout(timer);
        reject(error);
      });
    });
  }
}

/** The longest reason a process's row keeps, in characters. */
const MAX_REASON_CHARS = 4096;

function _clipReason(message: unknown): string {
  const text = typeof message === "string" ? message : String(message);
  return text.length > MAX_REASON_CHARS ? text.slice(0, MAX_REASON_CHARS - 1) + "…" : text;
}
