/**
 * Parking and waking (SPEC sections 3 and 7). A process that blocks on
 * `time.sleep`, `event.wait`, `msg.recv`, `human.*` or `proc.wait` gives up
 * its cell: the blocking call is journaled as a `wait` record, the process
 * becomes `blocked`, and it lives only in KV. Whoever satisfies the wait
 * (a timer, an event, a message, a human, a child's end, a signal) writes
 * the call's result over that record and makes the process runnable in the
 * same commit; the process then replays up to the call and goes on.
 *
 * Timers are KV entries polled by the host, never `kv.enqueue`, so they
 * work over KV Connect and survive restarts.
 *
 * Index keys: `["timer", at, pid, seq]`, `["wait_event", topic, pid, seq]`,
 * `["wait_mail", pid, seq]`, `["wait_child", child, pid, seq]`.
 *
 * @module
 */

import { PARKED } from "../broker/broker.ts";
import type { ErrorCode } from "../broker/errors.ts";
import {
  type ClaimedWrites,
  deleteRecord,
  type Journal,
  type JournalRecord,
  type ParkedAudit,
  putRecord,
  type WaitSpec,
} from "../broker/journal.ts";
import {
  END_STATES,
  type LinkedChange,
  type ProcessRecord,
  type ProcessTable,
  type WaitingOn,
} from "./process_table.ts";
import { CommittedEntries } from "./committed_entries.ts";
import type { Store } from "./store.ts";

/**
 * What the waits need from the kernel. The mailboxes and topic events are
 * named by the one method each that a wait calls (they complete waits
 * themselves, so they depend on this module, not the other way round).
 */
export interface WaitsKernel {
  /** The store the wait records and their wake-up indexes are kept in. */
  readonly store: Pick<Store, "kv">;
  /** The journal, flushed before a wait record is written after its calls (or claimed into its commit). */
  readonly journal: Pick<Journal, "flush" | "claim">;
  /** The process table: a parked process is `blocked`, a woken one `runnable`. */
  readonly processes: Pick<ProcessTable, "get" | "update" | "updateIf">;
  /** The topic events, for an event that arrived while its waiter parked. */
  readonly events: {
    /** The first event on `topic` after `afterSeq`. */
    firstAfter(topic: string, afterSeq: number): Promise<{ seq: number } | undefined>;
  };
  /** The mailboxes, for a message that arrived while its receiver parked. */
  readonly mailbox: {
    /** Completes the wait `(pid, seq)` with the oldest message; false when there is none. */
    deliver(pid: number, seq: number): Promise<boolean>;
  };
  /** The clock. */
  readonly now: () => number;
  /** True once the kernel is closing (a timer pass that fails then is not reported). */
  readonly closed: boolean;
  /** Runs a process that a completed wait made runnable. */
  start(pid: number): void;
  /** True while `pid` is blocked and keeps its Worker on this host (see `Scheduler.linger`). */
  isLingering(pid: number): boolean;
  /**
   * Answers in its Worker the call of a lingering process that the commit
   * ending its wait also made `running`, with the call's finished record.
   */
  resumeClaimed(current: ProcessRecord, recorded: JournalRecord): void;
}

/** How a wait ends. */
export type WaitOutcome =
  | { ok: true; value: unknown }
  | { ok: false; error: { code: ErrorCode; message: string } }
  /** Run the call again (an approval arrived): the wait record is removed. */
  | { retry: true };

/** How a process blocked on the call at `seq` wakes: runnable, or runnable once resumed. */
function _wakePatch(current: ProcessRecord, seq: number): Partial<ProcessRecord> {
  if (current.state === "blocked" && current.waitSeq === seq) return { state: "runnable" };
  if (current.state === "paused" && current.waitSeq === seq) return { pausedFrom: "runnable" };
  return {};
}

/** The reason a wake-up with `outcome` records. */
function _wakeReason(outcome: WaitOutcome): string {
  return "ok" in outcome && !outcome.ok ? outcome.error.message : "its wait ended";
}

/** The call being parked, as the broker knows it. */
export interface ParkedCall {
  /** The parked process. */
  pid: number;
  /** The journal seq of the parked call. */
  seq: number;
  /** The syscall name. */
  name: string;
  /** Digest of the call's `{ name, args }`. */
  argsDigest: string;
}

const KIND: Record<WaitSpec["kind"], WaitingOn> = {
  sleep: "sleep",
  event: "event",
  message: "message",
  human: "human",
  child: "child",
};

function deadlineOf(wait: WaitSpec): number | undefined {
  return wait.kind === "sleep" ? wait.until : "deadline" in wait ? wait.deadline : undefined;
}

function indexKeys(pid: number, seq: number, wait: WaitSpec): Deno.KvKey[] {
  const keys: Deno.KvKey[] = [];
  const deadline = deadlineOf(wait);
  if (deadline !== undefined) keys.push(["timer", deadline, pid, seq]);
  if (wait.kind === "event") keys.push(["wait_event", wait.topic, pid, seq]);
  if (wait.kind === "message") keys.push(["wait_mail", pid, seq]);
  if (wait.kind === "child") keys.push(["wait_child", wait.pid, pid, seq]);
  return keys;
}

/**
 * The kernel's waits.
 *
 * @example
 * ```ts ignore
 * // In a handler's run(): park until a timer fires.
 * return await kernel.waits.park(call, { kind: "sleep", until: kernel.now() + 1000 });
 * ```
 */
export class Waits {
  #kernel: WaitsKernel;
  /**
   * Wait records this host committed with a known versionstamp (a JIT tool
   * call's, in the commit that made its tool): the commit that ends the
   * wait checks that entry instead of reading the record back.
   */
  #waitRecords = new CommittedEntries<JournalRecord>();
  #timer: ReturnType<typeof setTimeout> | undefined;
  #nextWake = Infinity;
  #poll: ReturnType<typeof setInterval> | undefined;
  #firing: Promise<void> | undefined;

  /** Waits of `kernel`. */
  constructor(kernel: WaitsKernel) {
    this.#kernel = kernel;
  }

  /**
   * Parks the calling process on `wait`: a durable `wait` record and the
   * `blocked` state in one commit, then a check whether the wait is already
   * satisfied. `options.extra` adds writes to that commit (a human request,
   * so nobody can answer it before the asker waits for the answer).
   * Returns {@link PARKED} for the broker.
   */
  async park(
    call: ParkedCall,
    wait: WaitSpec,
    options: { extra?: (op: Deno.AtomicOperation) => void } = {},
  ): Promise<typeof PARKED> {
    await this.readyToBlock();
    const block = this.blocking(call, wait);
    await this.#kernel.processes.update(call.pid, () => block.patch, {
      reason: block.reason,
      prepare: () =>
        Promise.resolve((op: Deno.AtomicOperation) => {
          block.apply(op);
          options.extra?.(op);
        }),
    });
    const deadline = deadlineOf(wait);
    if (deadline !== undefined) this.#schedule(deadline);
    await this.recheck(call.pid, call.seq, wait);
    return PARKED;
  }

  /**
   * Gets ready to block a process in a commit: the records of its calls
   * before the one that blocks are made durable first, so the journal a
   * blocked process replays has no gap before its wait.
   */
  async readyToBlock(): Promise<void> {
    await this.#kernel.journal.flush();
  }

  /**
   * Takes the buffered journal records of `pid` (its calls before the one
   * that blocks) to commit in the commit that blocks it, instead of in a
   * commit of their own before it (see `Journal.claim`): the journal a
   * blocked process replays has no gap before its wait either way. With
   * `parked`, the audit entry of the call that blocks goes with them. The
   * caller commits them with the block or releases them.
   */
  recordsBefore(pid: number, parked?: ParkedAudit): Promise<ClaimedWrites> {
    return this.#kernel.journal.claim(pid, { parked });
  }

  /**
   * What blocks `call` on `wait`, for a commit (after {@link readyToBlock},
   * or with the records of {@link recordsBefore}):
   * the patch of the process row (`blocked` on the call) and the mutations
   * that write the call's `wait` record and its wake-up indexes. {@link park}
   * commits them alone; a JIT tool call commits them with the process it
   * starts, whose end is the only thing that wakes it (it has no deadline,
   * so no timer to schedule).
   */
  blocking(call: ParkedCall, wait: WaitSpec): {
    patch: Partial<ProcessRecord>;
    reason: string;
    apply: (op: Deno.AtomicOperation) => void;
    committed: (versionstamp: string) => void;
  } {
    const record: JournalRecord = {
      pid: call.pid,
      seq: call.seq,
      name: call.name,
      argsDigest: call.argsDigest,
      effect: "none",
      phase: "wait",
      at: this.#kernel.now(),
      wait,
    };
    return {
      patch: { state: "blocked", waitingOn: KIND[wait.kind], waitSeq: call.seq },
      reason: `${call.name} waits on ${wait.kind}`,
      apply: (op) => {
        putRecord(op, record);
        for (const key of indexKeys(call.pid, call.seq, wait)) op.set(key, true);
      },
      committed: (versionstamp) =>
        this.#waitRecords.record(["journal", call.pid, call.seq], record, versionstamp),
    };
  }

  /**
   * Ends the wait of `(pid, seq)` with `outcome` if it is still pending:
   * the result replaces the wait record and a blocked process becomes
   * runnable (a paused one will resume as runnable), in one commit; then
   * the process is started. Returns false when the wait was already over.
   */
  async complete(
    pid: number,
    seq: number,
    outcome: WaitOutcome,
    options: {
      extra?: (op: Deno.AtomicOperation) => void;
      check?: Deno.AtomicCheck;
      /** A change to the process row committed with the wake-up (a rule a human added). */
      change?: (current: ProcessRecord) => Partial<ProcessRecord>;
    } = {},
  ): Promise<boolean> {
    const kv = this.#kernel.store.kv;
    let completed = false;
    const record = await this.#kernel.processes.updateIf(pid, (current) => {
      const wake = _wakePatch(current, seq);
      return Object.keys(wake).length ? { ...options.change?.(current), ...wake } : {};
    }, {
      reason: _wakeReason(outcome),
      prepare: async () => {
        const entry = await kv.get<JournalRecord>(["journal", pid, seq]);
        const wait = entry.value;
        if (!wait || wait.phase !== "wait" || !wait.wait) return null;
        if (options.check) {
          const checked = await kv.get(options.check.key);
          if (checked.versionstamp !== options.check.versionstamp) return null;
        }
        completed = true;
        return (op) => {
          op.check(entry);
          if (options.check) op.check(options.check);
          this.#ending(op, wait, outcome);
          options.extra?.(op);
        };
      },
    });
    if (!record || !completed) return false;
    if (record.state === "runnable") this.#kernel.start(pid);
    return true;
  }

  /**
   * What ends every wait on the end of process `child` (a parent in
   * `proc.wait` or `tool.call`), for the commit that ends it: the waits'
   * results replace their records and the waiting processes become
   * runnable, in that same commit, so the child's end and its waiters'
   * wake-ups are stored together or not at all. A waiter that keeps its
   * Worker on this host is made `running` in that commit too, its claim:
   * `woken` answers it in its Worker, and starts the others made runnable.
   * `value`, what the waits end with, is asked for as that commit is built
   * (from the child's record as the commit reads it).
   */
  async childEnded(child: number, value: () => unknown): Promise<{
    apply: (op: Deno.AtomicOperation) => void;
    linked: LinkedChange[];
    woken: () => void;
  }> {
    const kv = this.#kernel.store.kv;
    const calls: [number, number][] = [];
    for await (const entry of kv.list({ prefix: ["wait_child", child] })) {
      const [, , pid, seq] = entry.key as [string, number, number, number];
      calls.push([pid, seq]);
    }
    // Checked in the commit: a copy that is no longer what is stored fails
    // it, and the next attempt reads the records (the copy was taken).
    const entries = await this.#waitRecords.takeMany(
      kv,
      calls.map(([pid, seq]) => ["journal", pid, seq]),
    );
    const waiting = entries.filter((entry): entry is Deno.KvEntry<JournalRecord> =>
      entry.value?.phase === "wait" && entry.value.wait !== undefined
    );
    // A process may wait on one child in several calls at once: its waits
    // end together, and its record changes once, woken when one of them is
    // the call it is blocked in.
    const seqsOf = new Map<number, number[]>();
    for (const { value: wait } of waiting) {
      seqsOf.set(wait.pid, [...seqsOf.get(wait.pid) ?? [], wait.seq]);
    }
    const done = new Map<string, JournalRecord>();
    /** The call each woken process was blocked in, by pid. */
    const wokenSeq = new Map<number, number>();
    const runnable: number[] = [];
    const claimed: ProcessRecord[] = [];
    return {
      apply: (op) => {
        const outcome: WaitOutcome = { ok: true, value: value() };
        for (const entry of waiting) {
          op.check(entry);
          done.set(`${entry.value.pid}/${entry.value.seq}`, this.#ending(op, entry.value, outcome));
        }
      },
      linked: [...seqsOf].map(([pid, seqs]) => ({
        pid,
        change: (current) => {
          if (current.waitSeq === undefined || !seqs.includes(current.waitSeq)) return {};
          wokenSeq.set(pid, current.waitSeq);
          return _wakePatch(current, current.waitSeq);
        },
        reason: _wakeReason({ ok: true, value: null }),
        then: this.#kernel.isLingering(pid)
          ? (record) => record.state === "runnable" ? { state: "running" } : {}
          : undefined,
        committed: (record) => {
          if (record.state === "runnable") runnable.push(record.pid);
          if (record.state === "running") claimed.push(record);
        },
      })),
      woken: () => {
        for (const record of claimed.splice(0)) {
          const recorded = done.get(`${record.pid}/${wokenSeq.get(record.pid)}`);
          if (recorded) this.#kernel.resumeClaimed(record, recorded);
        }
        for (const pid of runnable.splice(0)) this.#kernel.start(pid);
      },
    };
  }

  /**
   * Adds to `op` what ends the wait recorded as `wait` with `outcome`;
   * returns the finished record (the wait's own, removed, for a retry).
   */
  #ending(op: Deno.AtomicOperation, wait: JournalRecord, outcome: WaitOutcome): JournalRecord {
    for (const index of indexKeys(wait.pid, wait.seq, wait.wait!)) op.delete(index);
    if ("retry" in outcome) {
      deleteRecord(op, wait.pid, wait.seq);
      return wait;
    }
    const done: JournalRecord = {
      ...wait,
      phase: "done",
      at: this.#kernel.now(),
      ok: outcome.ok,
    };
    delete done.wait;
    if (outcome.ok) done.value = outcome.value ?? null;
    else done.error = outcome.error;
    putRecord(op, done);
    return done;
  }

  /**
   * Puts a `wait` record back with its wake-up indexes (a snapshot restore
   * of a blocked process), then checks whether it is already satisfied.
   */
  async rearm(record: JournalRecord): Promise<void> {
    if (!record.wait) return;
    const op = this.#kernel.store.kv.atomic();
    putRecord(op, record);
    for (const key of indexKeys(record.pid, record.seq, record.wait)) op.set(key, true);
    await op.commit();
    const deadline = deadlineOf(record.wait);
    if (deadline !== undefined) this.#schedule(deadline);
    await this.recheck(record.pid, record.seq, record.wait);
  }

  /**
   * Blocks a running process again on the wait at `seq` that replay found
   * still pending (its program ran ahead of a wait nobody has completed).
   */
  async repark(pid: number, seq: number): Promise<void> {
    const record = (await this.#kernel.store.kv.get<JournalRecord>(["journal", pid, seq])).value;
    if (!record?.wait) return;
    const wait = record.wait;
    await this.#kernel.processes.update(
      pid,
      (current) =>
        current.state === "running"
          ? { state: "blocked", waitingOn: KIND[wait.kind], waitSeq: seq }
          : {},
      { reason: `replay reached the pending ${record.name}` },
    );
    await this.recheck(pid, seq, wait);
  }

  /**
   * Completes a wait whose condition already holds (an event or message
   * that arrived while parking, a child that already ended). Used right
   * after parking and when a host starts.
   */
  async recheck(pid: number, seq: number, wait: WaitSpec): Promise<void> {
    const kernel = this.#kernel;
    if (wait.kind === "event") {
      const first = await kernel.events.firstAfter(wait.topic, wait.afterSeq);
      if (first) await this.complete(pid, seq, { ok: true, value: first });
    } else if (wait.kind === "message") {
      await kernel.mailbox.deliver(pid, seq);
    } else if (wait.kind === "child") {
      const child = await kernel.processes.get(wait.pid);
      if (child && END_STATES.has(child.state)) {
        await this.complete(pid, seq, {
          ok: true,
          value: { pid: child.pid, state: child.state, result: child.result, error: child.error },
        });
      }
    } else if (deadlineOf(wait) !== undefined && deadlineOf(wait)! <= kernel.now()) {
      await this.fireDue();
    }
  }

  /** Completes every wait whose timer is due; returns how many fired. */
  async fireDue(): Promise<number> {
    const kernel = this.#kernel;
    const now = kernel.now();
    let fired = 0;
    const iter = kernel.store.kv.list<boolean>({ start: ["timer"], end: ["timer", now + 1] });
    for await (const entry of iter) {
      const [, , pid, seq] = entry.key as [string, number, number, number];
      const record = (await kernel.store.kv.get<JournalRecord>(["journal", pid, seq])).value;
      const wait = record?.wait;
      if (!wait) {
        await kernel.store.kv.delete(entry.key);
        continue;
      }
      const outcome: WaitOutcome = wait.kind === "sleep" ? { ok: true, value: null } : {
        ok: false,
        error: { code: "ETIMEDOUT", message: `Cannot finish ${record!.name}: timed out` },
      };
      if (await this.complete(pid, seq, outcome)) fired++;
    }
    return fired;
  }

  /** Starts the timer: a precise local wake-up plus a slow poll for timers set by other hosts. */
  start(pollMs = 1000): void {
    this.#poll ??= setInterval(() => this.#fire(), pollMs);
    this.#fire();
  }

  /** Stops the timer. */
  stop(): void {
    if (this.#poll !== undefined) clearInterval(this.#poll);
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#poll = undefined;
    this.#timer = undefined;
    this.#nextWake = Infinity;
  }

  /** Resolves when no timer pass is running. */
  async settled(): Promise<void> {
    while (this.#firing) await this.#firing;
  }

  #schedule(at: number): void {
    if (this.#poll === undefined || at >= this.#nextWake) return;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#nextWake = at;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#nextWake = Infinity;
      this.#fire();
    }, Math.max(0, at - this.#kernel.now()));
  }

  #fire(): void {
    if (this.#firing) return;
    this.#firing = (async () => {
      try {
        await this.fireDue();
        const next = this.#kernel.store.kv.list<boolean>({ prefix: ["timer"] }, { limit: 1 });
        for await (const entry of next) this.#schedule(entry.key[1] as number);
      } catch (error) {
        if (!this.#kernel.closed) {
          console.error(`libos: timer pass failed: ${(error as Error).message}`);
        }
      } finally {
        this.#firing = undefined;
      }
    })();
  }
}
