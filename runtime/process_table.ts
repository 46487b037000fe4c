/**
 * The process table in KV (SPEC section 3): pids allocated atomically and
 * never reused, parent/child lineage, lifecycle states, one event per
 * transition in a global, ordered event log, and the budgets charged up
 * the lineage.
 *
 * @module
 */

import { CommitFootprint, KV_COMMIT_LIMITS } from "../broker/commit_footprint.ts";
import { SyscallError } from "../broker/errors.ts";
import { StaleWriteError } from "../broker/journal.ts";
import type { PolicyRule } from "../broker/policy.ts";
import type { AbiProcessState } from "../broker/abi.ts";
import { commitStoreChange, type StoreChange } from "../broker/store_change.ts";
import { CommittedEntries } from "./committed_entries.ts";

/** Lifecycle states of an AgentProcess (the ABI's own list). */
export type ProcessState = AbiProcessState;

/** What a blocked process waits on. */
export type WaitingOn = "sleep" | "event" | "message" | "human" | "child";

/** States a process never leaves. */
export const END_STATES: ReadonlySet<ProcessState> = new Set([
  "exited",
  "failed",
  "killed",
]);

const TRANSITIONS: Record<ProcessState, readonly ProcessState[]> = {
  created: ["runnable", "killed", "failed"],
  runnable: ["running", "paused", "killed", "failed"],
  running: ["runnable", "blocked", "paused", "exited", "failed", "killed"],
  blocked: ["runnable", "paused", "failed", "killed"],
  paused: ["runnable", "blocked", "failed", "killed"],
  exited: [],
  failed: [],
  killed: [],
};

/** Resource budgets of a process (SPEC section 3). */
export interface Budget {
  /** Most tool calls the process may make. */
  toolCalls?: number;
  /** Most model tokens the process may consume. */
  tokens?: number;
  /** Most children the process may spawn. */
  children?: number;
  /** Longest the process may run, in ms of wall time. */
  wallMs?: number;
  /** Most bytes of objects, transcript and checkpoints its subtree may store (default 64 MiB). */
  storageBytes?: number;
  /** Most bytes of journal and audit records its subtree may add (default 256 MiB). */
  journalBytes?: number;
}

/** The budgets charged up the tree as usage (`wallMs` is a deadline, not a charge). */
export type BudgetKey = keyof Usage;

/** What a process (and its subtree) has used so far. */
export interface Usage {
  /** Tool calls made. */
  toolCalls: number;
  /** Model tokens consumed. */
  tokens: number;
  /** Children spawned. */
  children: number;
}

/**
 * Limits per process (SPEC section 8), enforced on each run of its program
 * (`runtime/execution.ts`).
 */
export interface ProcessLimits {
  /** Longest time the program may run without making a syscall, in ms. */
  cpuMs: number;
  /** Memory the program may use beyond an idle cell, in MiB (see `cell.ts`). */
  memoryMb: number;
  /** Largest message the program may send, in bytes. */
  maxMessageBytes: number;
  /** Most syscalls per second. */
  syscallsPerSecond: number;
  /** Program output kept for `logs`, in bytes. */
  outputBytes: number;
}

/** One row of the process table. */
export interface ProcessRecord {
  /** The process id. */
  pid: number;
  /** The parent's pid, or null for a process an operator spawned. */
  ppid: number | null;
  /** The image tag the process runs. */
  image: string;
  /** The digest of the image the process runs. */
  digest: string;
  /** The process's lifecycle state. */
  state: ProcessState;
  /** What a blocked process waits for. */
  waitingOn?: WaitingOn;
  /** The working directory. */
  cwd: string;
  /** The workspace root: relative fs scopes resolve against it. */
  workspace: string;
  /** The input the process was started with. */
  input?: unknown;
  /** Model provider spec for this process, e.g. `scripted:demo.json`. */
  model?: string;
  /**
   * The model the process calls when it names none, and may always call,
   * as `provider/name` (e.g. `openai/gpt-4o-mini`): the operator's model,
   * else its image's; a spawned process's image may name only a model its
   * spawner may call, and one that names none keeps its spawner's.
   */
  ownModel?: string;
  /** The process's policy rules. */
  policy: PolicyRule[];
  /**
   * Who started its process tree: an API token's name, or `local` for the
   * operator on this machine. A child inherits its parent's.
   */
  principal?: string;
  /**
   * The root of its process tree, for a process that has a parent (a root
   * has none: it is its own). Set when it is made, never changed.
   */
  root?: number;
  /** What happens to the process when its parent ends. */
  onParentExit: "kill" | "orphan";
  /** The process's resource budgets. */
  budget: Budget;
  /**
   * The most each limit may be: the limits of the process it was made
   * from. Its image's limits apply only below them.
   */
  limits?: ProcessLimits;
  /** What the process has used so far. */
  usage: Usage;
  /** When the process was created, in ms since the epoch. */
  createdAt: number;
  /** When the process first ran, in ms since the epoch. */
  startedAt?: number;
  /** When the process ended, in ms since the epoch. */
  endedAt?: number;
  /** The result of a process that exited. */
  result?: unknown;
  /** Why a process failed or was killed. */
  error?: { code?: string; message: string };
  /** Journal seq of the syscall a blocked process is parked on. */
  waitSeq?: number;
  /** Where a paused process goes on `resume`. */
  pausedFrom?: "runnable" | "blocked";
  /** Replay starts at this seq (set by `proc.exec`); checkpoints may move it later. */
  replayFrom?: number;
  /** Seed of the program's deterministic `Math.random` and friends. */
  seed: number;
  /** Pid this process was forked from. */
  forkedFrom?: number;
  /** Set when the process is a JIT tool call. */
  tool?: { name: string; digest: string };
}

/** A recorded state transition. */
export interface ProcessEvent {
  /** The event's position in the kernel-wide transition log. */
  seq: number;
  /** When the transition happened, in ms since the epoch. */
  at: number;
  /** The process that changed state. */
  pid: number;
  /** Always `transition`. */
  kind: "transition";
  /** The state before, or null for a new process. */
  from: ProcessState | null;
  /** The state after. */
  to: ProcessState;
  /** Why the transition happened, when known. */
  reason?: string;
}

/** Fields a caller supplies to create a process. */
export type NewProcess =
  & Omit<
    ProcessRecord,
    "pid" | "state" | "usage" | "createdAt" | "seed"
  >
  & { seed?: number };

const PID_KEY = ["meta", "next_pid"];
/**
 * The seq of the latest transition. Every transition sets it in its own
 * commit, so it is also the key a host watches to learn that a kernel in
 * another OS process changed a process of the store.
 */
const EVENT_KEY = ["meta", "next_event"];

/** Most changes of the table committed together (see `ProcessTable.#commit`). */
const TURN_BATCH = 16;
/** Most bytes of keys and values in a turn's commit: room is left for estimates that fall short. */
const MAX_TURN_BYTES = Math.floor(KV_COMMIT_LIMITS.bytes * 0.75);
/** Most keys one `kv.getMany` reads. */
const KV_GET_MANY = 10;

/** What a change of the table commits, worked out from the record it read. */
interface _Plan<T> {
  /** How many seqs of the event log it takes. */
  seqs: number;
  /** How many pids it takes. */
  pids: number;
  /** Adds its checks and mutations (the counters excepted). */
  apply(op: Deno.AtomicOperation): void;
  /**
   * Called once it is committed, with the commit's versionstamp (it
   * notifies the listeners): the change's result.
   */
  committed(versionstamp: string): T;
}

/** A change of the table that waits for its turn to commit. */
interface _Change<T> {
  /** The process whose record it reads; undefined for a new process. */
  pid?: number;
  /** Other processes whose records it reads and may change in the same commit. */
  also?: readonly number[];
  /**
   * Works out the change from the record read (undefined when `pid` is),
   * those of `also` by pid, and the first seq and pid free for it. Throws,
   * touching nothing, when the change cannot be made.
   */
  plan(
    current: Deno.KvEntryMaybe<ProcessRecord> | undefined,
    next: { seq: number; pid: number },
    others: ReadonlyMap<number, Deno.KvEntryMaybe<ProcessRecord>>,
  ): _Plan<T>;
}

interface _Waiter {
  change: _Change<unknown>;
  resolve(value: unknown): void;
  reject(error: unknown): void;
}

/**
 * Called after every transition: `foreign` is false for one this table
 * committed, true for one another kernel committed (seen by {@link
 * ProcessTable.follow}; `record` is then the record as it is now).
 */
export type TransitionListener = (
  record: ProcessRecord,
  event: ProcessEvent,
  foreign: boolean,
) => void;

/** What {@link ProcessTable.follow} keeps while it runs. */
interface _Feed {
  /** The latest seq handed on; -1 until the starting point is read. */
  seen: number;
  /** Seqs this table committed that the feed has not passed yet. */
  own: Set<number>;
  /** A read in progress, and whether another must follow it. */
  reading?: Promise<void>;
  again: boolean;
  stop(): Promise<void>;
}

/**
 * Charges `amount` of `key` to each record of `chain`, each checked
 * against the versionstamp it was read at: the commit fails when one
 * changed since.
 */
function _chargeChain(
  op: Deno.AtomicOperation,
  chain: Deno.KvEntry<ProcessRecord>[],
  key: BudgetKey,
  amount: number,
): void {
  for (const entry of chain) {
    const r = entry.value;
    op.check(entry).set(["proc", r.pid], {
      ...r,
      usage: { ...r.usage, [key]: r.usage[key] + amount },
    });
  }
}

/**
 * A change of another process's record that commits with a change of one
 * process (see {@link ProcessTable.update}): both records are read in the
 * commit's turn and checked by it, so both are written or neither. A
 * process with no record is left out.
 */
export interface LinkedChange {
  /** The other process. */
  pid: number;
  /** The change of its record, from the record as read (`{}` leaves it as it is). */
  change: (record: ProcessRecord) => Partial<ProcessRecord>;
  /** Why its state changes, recorded with the transition. */
  reason?: string;
  /**
   * A further change of the record as `change` leaves it, with a transition
   * of its own (a process made runnable, then claimed as `running`).
   */
  then?: (record: ProcessRecord) => Partial<ProcessRecord>;
  /** Called once committed, with its record as written. */
  committed?: (record: ProcessRecord) => void;
}

/**
 * What a `prepare` of {@link ProcessTable.update} adds to the change's
 * commit: mutations (and checks), or those and changes of other processes.
 */
export type PreparedUpdate =
  | ((op: Deno.AtomicOperation) => void)
  | {
    apply?: (op: Deno.AtomicOperation) => void;
    linked?: readonly LinkedChange[];
    /** Called once the change is committed, with the commit's versionstamp. */
    committed?: (versionstamp: string) => void;
  };

/** A record as a patch leaves it, with the transition event a change of state records. */
interface _Changed {
  record: ProcessRecord;
  event?: ProcessEvent;
}

/**
 * Applies `patch` to `current`: a change of state must be a legal
 * transition (`EINVAL` otherwise), and records event `seq` with `reason`.
 */
function _changed(
  current: ProcessRecord,
  patch: Partial<ProcessRecord>,
  reason: string | undefined,
  now: number,
  seq: number,
): _Changed {
  const record: ProcessRecord = { ...current, ...patch };
  if (patch.state === undefined || patch.state === current.state) return { record };
  if (!TRANSITIONS[current.state].includes(patch.state)) {
    throw new SyscallError(
      "EINVAL",
      `Cannot move process ${current.pid} from ${current.state} to ${patch.state}`,
    );
  }
  if (patch.state !== "blocked" && patch.state !== "paused") {
    delete record.waitingOn;
    delete record.waitSeq;
  }
  if (END_STATES.has(patch.state)) record.endedAt = now;
  return {
    record,
    event: {
      seq,
      at: now,
      pid: current.pid,
      kind: "transition",
      from: current.state,
      to: patch.state,
      reason,
    },
  };
}

/** A fresh seed for a process's deterministic randomness. */
export function newSeed(): number {
  return crypto.getRandomValues(new Uint32Array(1))[0];
}

/**
 * The process table.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ProcessTable } from "./process_table.ts";
 * const kv = await Deno.openKv(":memory:");
 * const table = new ProcessTable(kv);
 * const proc = await table.create({
 *   ppid: null, image: "demo@1.0.0", digest: "x", cwd: "/ws", workspace: "/ws",
 *   policy: [], onParentExit: "kill", budget: {},
 * });
 * await table.transition(proc.pid, "runnable");
 * assert((await table.get(proc.pid))?.state === "runnable");
 * kv.close();
 * ```
 */
export class ProcessTable {
  #kv: Deno.Kv;
  /**
   * Records as this host's last charge committed them, checked by its next
   * charge instead of read back (see `committed_entries.ts`); a record this
   * host changes otherwise is forgotten.
   */
  #charged = new CommittedEntries<ProcessRecord>();
  #listeners = new Set<TransitionListener>();
  #feed: _Feed | undefined;
  /** Changes waiting for their turn to commit (see {@link #commit}). */
  #queue: _Waiter[] = [];
  #committing = false;
  /**
   * The pid and event counters as this table's last commit left them, so a
   * turn need not read them again; every commit checks them, and any failed
   * commit drops them (another table, on another host, may have moved them).
   */
  #counters: [Deno.KvEntryMaybe<number>, Deno.KvEntryMaybe<number>] | undefined;

  /** Wraps a KV handle. */
  constructor(kv: Deno.Kv) {
    this.#kv = kv;
  }

  /**
   * Creates a process with a fresh pid, in state `created` — or `runnable`
   * with `options.runnable`, recording both transitions; or, with
   * `options.running`, already claimed by the host that makes it (`running`,
   * started now, all three transitions recorded): no claim commit follows,
   * and a crash after it resumes the process like any other that was
   * running when its host died. `options.setup`
   * adds mutations (capability grants, say) that commit atomically with the
   * new record, so a crash never leaves a half-made process. With
   * `options.chargeParent`, the new process is charged to the `children`
   * budget of its parent and every ancestor in that same commit, checked
   * against each of their records as read (`EBUDGET`, and nothing made, when
   * one has none left): no crash leaves a child uncharged or a charge
   * without its child, and creations side by side cannot together exceed a
   * budget. `options.checks` are entries the caller read and decided on
   * (the capabilities a child's grants derive from): they commit as checks,
   * and when one of them has changed since, `create` throws
   * `StaleWriteError`, having made nothing, so the caller decides again on
   * what is there now. With `options.parent` (and `chargeParent`), the parent's record
   * changes in that same commit too (it blocks until the child ends, say),
   * its transition recorded after the child's. `options.parentEntry` is the
   * parent's record as the caller just read it: the first attempt charges
   * it without reading it again (the commit checks it, so a parent changed
   * since fails that attempt and the next reads it). `options.prepare` is
   * called on every attempt and adds what else must commit with it (the
   * parent's buffered journal records); it is told the versionstamp of the
   * commit that made the process.
   */
  async create(
    init: NewProcess,
    now: number = Date.now(),
    options: {
      runnable?: boolean;
      running?: boolean;
      chargeParent?: boolean;
      setup?: (op: Deno.AtomicOperation, pid: number) => void;
      checks?: readonly Deno.AtomicCheck[];
      parent?: {
        change: (parent: ProcessRecord, pid: number) => Partial<ProcessRecord>;
        reason?: string;
      };
      parentEntry?: Deno.KvEntry<ProcessRecord>;
      prepare?: () => Promise<{
        apply: (op: Deno.AtomicOperation) => void;
        committed: (versionstamp: string) => void;
      }>;
    } = {},
  ): Promise<ProcessRecord> {
    if (options.parent && !(options.chargeParent && init.ppid !== null)) {
      throw new RangeError("Cannot change the parent of a new process without charging it");
    }
    // The parent as the caller just read it serves the first attempt: its
    // commit checks it, so a parent changed since fails that attempt.
    let parentEntry = options.parentEntry;
    for (;;) {
      const charged = options.chargeParent && init.ppid !== null
        ? await this.#reservation(init.ppid, "children", { least: 1 }, parentEntry)
        : undefined;
      parentEntry = undefined;
      const prepared = await options.prepare?.();
      const created = await this.#commit<ProcessRecord>({
        plan: (_current, next) => {
          const pid = next.pid;
          const seq = next.seq;
          const record: ProcessRecord = {
            ...init,
            pid,
            seed: init.seed ?? newSeed(),
            state: options.running ? "running" : options.runnable ? "runnable" : "created",
            usage: { toolCalls: 0, tokens: 0, children: 0 },
            createdAt: now,
            ...(options.running ? { startedAt: now } : {}),
          };
          const states: ProcessState[] = options.running
            ? ["created", "runnable", "running"]
            : options.runnable
            ? ["created", "runnable"]
            : ["created"];
          const events: ProcessEvent[] = states.map((to, i) => ({
            seq: seq + i,
            at: now,
            pid,
            kind: "transition",
            from: i === 0 ? null : states[i - 1],
            to,
          }));
          // The parent, charged, as the same commit leaves it.
          let parent: _Changed | undefined;
          if (options.parent && charged) {
            const [{ value: read }] = charged.chain;
            const usage = { ...read.usage, children: read.usage.children + charged.amount };
            const before = { ...read, usage };
            parent = _changed(
              before,
              options.parent.change(before, pid),
              options.parent.reason,
              now,
              seq + events.length,
            );
          }
          return {
            seqs: events.length + (parent?.event ? 1 : 0),
            pids: 1,
            apply: (op) => {
              if (charged) {
                const [first, ...ancestors] = charged.chain;
                if (parent) op.check(first).set(["proc", parent.record.pid], parent.record);
                _chargeChain(op, parent ? ancestors : charged.chain, "children", charged.amount);
              }
              if (parent?.event) op.set(["event", parent.event.seq], parent.event);
              for (const check of options.checks ?? []) op.check(check);
              op.set(["proc", pid], record);
              for (const event of events) op.set(["event", event.seq], event);
              if (init.ppid !== null) op.set(["proc_child", init.ppid, pid], true);
              options.setup?.(op, pid);
              prepared?.apply(op);
            },
            committed: (versionstamp) => {
              prepared?.committed(versionstamp);
              for (const event of events) this.#notify(record, event, false);
              if (parent?.event) this.#notify(parent.record, parent.event, false);
              return record;
            },
          };
        },
      });
      if (charged) this.#forgetCharged(charged.chain);
      if (created) return created;
      if (options.checks?.length && await this.#anyChanged(options.checks)) {
        throw new StaleWriteError();
      }
    }
  }

  /** True when an entry of `checks` is not as it was read. */
  async #anyChanged(checks: readonly Deno.AtomicCheck[]): Promise<boolean> {
    for (let i = 0; i < checks.length; i += 10) {
      const batch = checks.slice(i, i + 10);
      const now = await this.#kv.getMany(batch.map((c) => c.key));
      if (now.some((entry, j) => entry.versionstamp !== batch[j].versionstamp)) return true;
    }
    return false;
  }

  /** The process with `pid`, or undefined. */
  async get(pid: number): Promise<ProcessRecord | undefined> {
    return (await this.#kv.get<ProcessRecord>(["proc", pid])).value ?? undefined;
  }

  /**
   * The stored entry of process `pid` (its record with the versionstamp a
   * commit may check); `ENOENT` when there is none.
   */
  async requireEntry(pid: number): Promise<Deno.KvEntry<ProcessRecord>> {
    const entry = await this.#kv.get<ProcessRecord>(["proc", pid]);
    if (!entry.value) throw new SyscallError("ENOENT", `Cannot find process ${pid}`);
    return entry as Deno.KvEntry<ProcessRecord>;
  }

  /** The process with `pid`; `ENOENT` when there is none. */
  async require(pid: number): Promise<ProcessRecord> {
    const record = await this.get(pid);
    if (!record) throw new SyscallError("ENOENT", `Cannot find process ${pid}`);
    return record;
  }

  /**
   * Applies `change` to a process record atomically (retrying on a lost
   * race). A change that sets `state` must be a legal transition; it records
   * an event with `reason`. `prepare`, when given, is called on every
   * attempt and returns mutations (and checks) that must commit with the
   * change, and changes of other processes' records that commit with it
   * (see {@link LinkedChange}), or `null` to give up: then `update` resolves
   * with undefined.
   */
  async update(
    pid: number,
    change: (record: ProcessRecord) => Partial<ProcessRecord>,
    options: {
      reason?: string;
      now?: number;
      prepare?: () => Promise<PreparedUpdate | null>;
    } = {},
  ): Promise<ProcessRecord> {
    return (await this.#update(pid, change, options))!;
  }

  /** Like {@link update} with a `prepare` that may give up. */
  updateIf(
    pid: number,
    change: (record: ProcessRecord) => Partial<ProcessRecord>,
    options: {
      reason?: string;
      prepare: () => Promise<PreparedUpdate | null>;
    },
  ): Promise<ProcessRecord | undefined> {
    return this.#update(pid, change, options);
  }

  async #update(
    pid: number,
    change: (record: ProcessRecord) => Partial<ProcessRecord>,
    options: {
      reason?: string;
      now?: number;
      prepare?: () => Promise<PreparedUpdate | null>;
    },
  ): Promise<ProcessRecord | undefined> {
    for (;;) {
      const prepared = options.prepare ? await options.prepare() : undefined;
      if (prepared === null) return undefined;
      const extra = typeof prepared === "function" ? prepared : prepared?.apply;
      const linked = typeof prepared === "object" ? prepared.linked ?? [] : [];
      const updated = await this.#commit<ProcessRecord>({
        pid,
        also: linked.map((l) => l.pid),
        plan: (procEntry, next, others) => {
          const current = procEntry?.value;
          if (!current) {
            throw new SyscallError("ENOENT", `Cannot find process ${pid}`);
          }
          const now = options.now ?? Date.now();
          const own = _changed(current, change(current), options.reason, now, next.seq);
          let seq = next.seq + (own.event ? 1 : 0);
          const also: {
            entry: Deno.KvEntry<ProcessRecord>;
            record: ProcessRecord;
            events: ProcessEvent[];
            link: LinkedChange;
          }[] = [];
          for (const link of linked) {
            const entry = others.get(link.pid);
            if (!entry?.value) continue;
            const first = _changed(entry.value, link.change(entry.value), link.reason, now, seq);
            const events = first.event ? [first.event] : [];
            let record = first.record;
            if (link.then) {
              const second = _changed(
                record,
                link.then(record),
                link.reason,
                now,
                seq + events.length,
              );
              if (second.event) events.push(second.event);
              record = second.record;
            }
            seq += events.length;
            also.push({ entry: entry as Deno.KvEntry<ProcessRecord>, record, events, link });
          }
          return {
            seqs: seq - next.seq,
            pids: 0,
            apply: (op) => {
              op.check(procEntry).set(["proc", pid], own.record);
              if (own.event) op.set(["event", own.event.seq], own.event);
              for (const { entry, record, events } of also) {
                op.check(entry).set(["proc", record.pid], record);
                for (const event of events) op.set(["event", event.seq], event);
              }
              extra?.(op);
            },
            committed: (versionstamp) => {
              if (typeof prepared === "object") prepared.committed?.(versionstamp);
              if (own.event) this.#notify(own.record, own.event, false);
              for (const { record, events, link } of also) {
                for (const event of events) this.#notify(record, event, false);
                link.committed?.(record);
              }
              return own.record;
            },
          };
        },
      });
      if (updated) return updated;
    }
  }

  /**
   * Puts `record` back as the process's row (a snapshot restore): not a
   * lifecycle step, so any state may replace any other, but it is logged
   * as a transition from the current state like any other, so hosts that
   * follow the store see it.
   */
  async restore(
    record: ProcessRecord,
    options: { reason?: string; now?: number } = {},
  ): Promise<ProcessRecord> {
    for (;;) {
      const restored = await this.#commit<ProcessRecord>({
        pid: record.pid,
        plan: (procEntry, next) => {
          const event: ProcessEvent = {
            seq: next.seq,
            at: options.now ?? Date.now(),
            pid: record.pid,
            kind: "transition",
            from: procEntry?.value?.state ?? null,
            to: record.state,
            reason: options.reason,
          };
          return {
            seqs: 1,
            pids: 0,
            apply: (op) => {
              op.check(procEntry!).set(["proc", record.pid], record).set(
                ["event", event.seq],
                event,
              );
            },
            committed: () => {
              this.#notify(record, event, false);
              return record;
            },
          };
        },
      });
      if (restored) return restored;
    }
  }

  /**
   * Commits `change` with the others waiting for their turn: one atomic
   * operation for up to {@link TURN_BATCH} changes, at most one per
   * process, taking consecutive seqs of the event log (and pids) in the
   * order they were asked for. Each such commit checks the log's counter,
   * so commits side by side would all but one fail, read again and fail
   * again (a spawn under load took dozens of rounds); in turns, a change
   * is read and committed once. Resolves with the change's result, or
   * undefined when a commit of another OS process (or a check the change
   * added) came first: the caller prepares it again. Rejects with what
   * planning the change threw.
   */
  #commit<T>(change: _Change<T>): Promise<T | undefined> {
    return new Promise<T | undefined>((resolve, reject) => {
      this.#queue.push({ change, resolve: resolve as (value: unknown) => void, reject });
      if (!this.#committing) this.#drain();
    });
  }

  /** Commits what waits in turns until nothing does. */
  async #drain(): Promise<void> {
    this.#committing = true;
    try {
      while (this.#queue.length > 0) {
        const failed = await this.#commitTurn(this.#takeTurn());
        // The failed commit does not say which change it failed for: each goes again alone.
        for (const waiter of failed) await this.#commitTurn([waiter]);
      }
    } finally {
      this.#committing = false;
    }
  }

  /** The next changes to commit together: the longest run from the front with one per process. */
  #takeTurn(): _Waiter[] {
    const pids = new Set<number>();
    let count = 0;
    for (; count < this.#queue.length && count < TURN_BATCH; count++) {
      const { change } = this.#queue[count];
      const own = [...(change.pid === undefined ? [] : [change.pid]), ...(change.also ?? [])];
      if (count > 0 && own.some((pid) => pids.has(pid))) break;
      for (const pid of own) pids.add(pid);
    }
    return this.#queue.splice(0, count);
  }

  /**
   * Commits `turn` in one atomic operation and settles each waiter; when
   * the commit fails for a turn of several, returns those to try alone.
   */
  async #commitTurn(turn: _Waiter[]): Promise<_Waiter[]> {
    const planned: { waiter: _Waiter; plan: _Plan<unknown> }[] = [];
    try {
      const counters = this.#counters;
      this.#counters = undefined;
      const keys: Deno.KvKey[] = counters ? [] : [PID_KEY, EVENT_KEY];
      for (const { change } of turn) {
        if (change.pid !== undefined) keys.push(["proc", change.pid]);
        for (const pid of change.also ?? []) keys.push(["proc", pid]);
      }
      const entries = (await Promise.all(
        Array.from(
          { length: Math.ceil(keys.length / KV_GET_MANY) },
          (_, i) => this.#kv.getMany(keys.slice(i * KV_GET_MANY, (i + 1) * KV_GET_MANY)),
        ),
      )).flat();
      const [pidEntry, eventEntry] = counters ?? entries as Deno.KvEntryMaybe<number>[];
      const records = new Map<number, Deno.KvEntryMaybe<ProcessRecord>>();
      for (const entry of counters ? entries : entries.slice(2)) {
        records.set(entry.key[1] as number, entry as Deno.KvEntryMaybe<ProcessRecord>);
      }
      let seq = eventEntry.value ?? 0;
      let pid = pidEntry.value ?? 0;
      const op = this.#kv.atomic();
      const footprint = new CommitFootprint();
      for (let i = 0; i < turn.length; i++) {
        const waiter = turn[i];
        const { change } = waiter;
        let plan: _Plan<unknown>;
        const own = new CommitFootprint();
        try {
          const current = change.pid === undefined ? undefined : records.get(change.pid);
          plan = change.plan(current, { seq: seq + 1, pid: pid + 1 }, records);
          plan.apply(own);
        } catch (error) {
          waiter.reject(error);
          continue;
        }
        // A change that would not see what an earlier one of the turn writes, or would not fit
        // (with the counters' checks and sets), waits for the next turn with those after it: the
        // turn ends as committing its changes one after the other, in order, would.
        const fits = footprint.checks + own.checks + 2 <= KV_COMMIT_LIMITS.checks &&
          footprint.mutations + own.mutations + 2 <= KV_COMMIT_LIMITS.mutations &&
          footprint.keyBytes + own.keyBytes + 64 <= KV_COMMIT_LIMITS.keyBytes &&
          footprint.bytes + own.bytes <= MAX_TURN_BYTES;
        if (planned.length > 0 && (!fits || footprint.conflictsWith(own))) {
          this.#queue.unshift(...turn.slice(i));
          break;
        }
        footprint.include(own);
        own.applyTo(op);
        seq += plan.seqs;
        pid += plan.pids;
        planned.push({ waiter, plan });
      }
      if (planned.length === 0) {
        this.#counters = counters;
        return [];
      }
      if (seq !== (eventEntry.value ?? 0)) op.check(eventEntry).set(EVENT_KEY, seq);
      if (pid !== (pidEntry.value ?? 0)) op.check(pidEntry).set(PID_KEY, pid);
      let committed: Deno.KvCommitResult | Deno.KvCommitError;
      try {
        committed = await op.commit();
      } catch (error) {
        // Too large together, say: alone, each fails or commits on its own.
        if (planned.length > 1) return planned.map((p) => p.waiter);
        throw error;
      }
      if (!committed.ok) {
        if (planned.length > 1) return planned.map((p) => p.waiter);
        planned[0].waiter.resolve(undefined);
        return [];
      }
      const after = (entry: Deno.KvEntryMaybe<number>, value: number) =>
        value === (entry.value ?? 0)
          ? entry
          : { key: entry.key, value, versionstamp: committed.versionstamp };
      this.#counters = [after(pidEntry, pid), after(eventEntry, seq)];
      // What this host's charges committed of these records is behind now,
      // and so is a charge of them that answers after this commit.
      for (const { waiter: { change } } of planned) {
        const own = change.pid === undefined ? [] : [change.pid];
        for (const pid of [...own, ...change.also ?? []]) {
          this.#charged.forget(["proc", pid], committed.versionstamp);
        }
      }
      for (const { waiter, plan } of planned) {
        try {
          waiter.resolve(plan.committed(committed.versionstamp));
        } catch (error) {
          waiter.reject(error);
        }
      }
    } catch (error) {
      for (const { waiter } of planned) waiter.reject(error);
      if (planned.length === 0) { for (const waiter of turn) waiter.reject(error); }
    }
    return [];
  }

  /** Moves a process to `state`, recording `reason`. */
  transition(
    pid: number,
    state: ProcessState,
    options: { reason?: string; patch?: Partial<ProcessRecord> } = {},
  ): Promise<ProcessRecord> {
    return this.update(pid, () => ({ ...options.patch, state }), options);
  }

  /**
   * Reserves `key` usage for `pid` and charges it to `pid` and every
   * ancestor, in one commit checked against each of their versionstamps: as
   * much of `want.most` (default `want.least`) as every budget on the way
   * has left, and at least `want.least`, else `EBUDGET` and nothing is
   * charged. Concurrent reservations cannot together exceed a budget.
   * Returns the amount reserved; settle with {@link charge}.
   */
  async reserve(
    pid: number,
    key: BudgetKey,
    want: { least: number; most?: number },
  ): Promise<number> {
    for (;;) {
      const { chain, amount } = await this.#reservation(pid, key, want);
      const op = this.#kv.atomic();
      _chargeChain(op, chain, key, amount);
      const ok = (await op.commit()).ok;
      this.#forgetCharged(chain);
      if (ok) return amount;
    }
  }

  /**
   * Reads `pid` and its ancestors and works out a reservation of `key`
   * usage on them (see {@link reserve}): the records read, with their
   * versionstamps, and the amount; `EBUDGET` when a budget on the way has
   * less than `want.least` left.
   */
  async #reservation(
    pid: number,
    key: BudgetKey,
    want: { least: number; most?: number },
    first?: Deno.KvEntry<ProcessRecord>,
  ): Promise<{ chain: Deno.KvEntry<ProcessRecord>[]; amount: number }> {
    const chain = await this.#ancestry(pid, { first });
    if (chain.length === 0) await this.require(pid);
    let amount = Math.max(want.least, want.most ?? want.least);
    for (const { value: r } of chain) {
      const limit = r.budget[key];
      if (limit === undefined) continue;
      const left = Math.max(0, limit - r.usage[key]);
      if (left < want.least) {
        throw new SyscallError("EBUDGET", budgetMessage(r, key, limit, want.least));
      }
      amount = Math.min(amount, left);
    }
    return { chain, amount };
  }

  /**
   * The records of `pid` and its ancestors, nearest first, as read now
   * (empty for none); with `charged`, each as this host's last charge
   * committed it when it has not changed it since (a guess to check in the
   * commit), else as read now; `first`, when given, is `pid`'s as its caller
   * read it.
   */
  async #ancestry(
    pid: number,
    options: { charged?: boolean; first?: Deno.KvEntry<ProcessRecord> } = {},
  ): Promise<Deno.KvEntry<ProcessRecord>[]> {
    const known = options.first?.value.pid === pid ? options.first : undefined;
    const chain: Deno.KvEntry<ProcessRecord>[] = known ? [known] : [];
    for (let p: number | null = known ? known.value.ppid : pid; p !== null;) {
      const key: Deno.KvKey = ["proc", p];
      const entry: Deno.KvEntryMaybe<ProcessRecord> = options.charged
        ? await this.#charged.take(this.#kv, key)
        : await this.#kv.get<ProcessRecord>(key);
      if (entry.value === null) break;
      chain.push(entry as Deno.KvEntry<ProcessRecord>);
      p = entry.value.ppid;
    }
    return chain;
  }

  /**
   * Charges usage to `pid` and every ancestor in one atomic commit, without
   * a limit: what was spent beyond a reservation, or (negative) the unused
   * part of one given back.
   */
  async charge(pid: number, usage: Partial<Usage>): Promise<void> {
    await commitStoreChange(this.#kv, () => this.prepareCharge(pid, usage));
  }

  /**
   * The checked mutations that charge `usage` to `pid` and every ancestor,
   * for one atomic commit with what the usage paid for: each record is
   * checked against the versionstamp it was read at, so when the commit
   * fails (a record changed meanwhile), prepare again. Usage of a key in
   * `within` must fit every budget on the way, else `EBUDGET` and nothing
   * is prepared (a reservation of exactly that much, as {@link reserve}
   * makes); other usage is charged without a limit.
   *
   * The records are those this host's last charge of them committed, when
   * it has not changed them since (see `committed_entries.ts`): checked in
   * the commit, not read back; a refusal is confirmed from the store. Once
   * committed (`committed`), the records it set are kept for the next one.
   */
  async prepareCharge(
    pid: number,
    usage: Partial<Usage>,
    options: { within?: readonly BudgetKey[] } = {},
  ): Promise<StoreChange<void>> {
    let chain = await this.#ancestry(pid, { charged: true });
    try {
      this.#requireWithin(chain, usage, options.within);
    } catch (error) {
      if (!(error instanceof SyscallError) || error.code !== "EBUDGET") throw error;
      chain = await this.#ancestry(pid);
      this.#requireWithin(chain, usage, options.within);
    }
    const limited = (options.within ?? []).some((key) => (usage[key] ?? 0) > 0);
    if (chain.length === 0 && limited) await this.require(pid);
    const charged = chain.map((entry): ProcessRecord => {
      const r = entry.value;
      const next: Usage = {
        toolCalls: r.usage.toolCalls + (usage.toolCalls ?? 0),
        tokens: r.usage.tokens + (usage.tokens ?? 0),
        children: r.usage.children + (usage.children ?? 0),
      };
      return { ...r, usage: next };
    });
    return {
      result: undefined,
      apply: (op) => {
        chain.forEach((entry, i) => op.check(entry).set(entry.key, charged[i]));
      },
      committed: (versionstamp) => {
        chain.forEach((entry, i) => this.#charged.record(entry.key, charged[i], versionstamp));
      },
    };
  }

  /** `EBUDGET` when charging `usage` of a key in `within` would pass a budget of `chain`. */
  #requireWithin(
    chain: readonly Deno.KvEntry<ProcessRecord>[],
    usage: Partial<Usage>,
    within: readonly BudgetKey[] = [],
  ): void {
    for (const key of within) {
      const want = usage[key] ?? 0;
      if (want <= 0) continue;
      for (const { value: r } of chain) {
        const limit = r.budget[key];
        if (limit !== undefined && limit - r.usage[key] < want) {
          throw new SyscallError("EBUDGET", budgetMessage(r, key, limit, want));
        }
      }
    }
  }

  /** Forgets what this host's charges committed of the records of `chain` (it changed them). */
  #forgetCharged(chain: readonly Deno.KvEntry<ProcessRecord>[]): void {
    for (const entry of chain) this.#charged.forget(entry.key);
  }

  /** `pid`'s record, then its parent's, up to the root; `ENOENT` when `pid` has none. */
  async lineage(pid: number): Promise<ProcessRecord[]> {
    const out: ProcessRecord[] = [];
    for (let p: ProcessRecord | undefined = await this.require(pid); p;) {
      out.push(p);
      p = p.ppid === null ? undefined : await this.get(p.ppid);
    }
    return out;
  }

  /**
   * `pid`'s record, then its parent's, up to the root, each as this host's
   * last charge committed it, else as read now; `ENOENT` when `pid` has
   * none. Their lasting fields (image, models, parent, budgets) are the
   * store's; their usage is what this host last charged, which another
   * host may have moved since: for planning a charge, whose commit checks
   * the records ({@link prepareCharge}), never for a refusal.
   */
  async chargedLineage(pid: number): Promise<ProcessRecord[]> {
    const out: ProcessRecord[] = [];
    for (let p: number | null = pid; p !== null;) {
      const record: ProcessRecord | undefined = this.#charged.peek(["proc", p])?.value ??
        (p === pid ? await this.require(p) : await this.get(p));
      if (!record) break;
      out.push(record);
      p = record.ppid;
    }
    return out;
  }

  /** `EPERM` unless `child` is a child of `pid`; `action` names the call in the message. */
  async requireChild(pid: number, child: number, action: string): Promise<void> {
    const record = await this.require(child);
    if (record.ppid !== pid) {
      throw new SyscallError(
        "EPERM",
        `Cannot ${action} process ${child}: it is not a child of ${pid}`,
      );
    }
  }

  /** `EPERM` unless `target` is a descendant of `pid`; `action` names the call in the message. */
  async requireDescendant(pid: number, target: number, action = "signal"): Promise<void> {
    let current = await this.require(target);
    while (current.ppid !== null) {
      if (current.ppid === pid) return;
      current = await this.require(current.ppid);
    }
    throw new SyscallError(
      "EPERM",
      `Cannot ${action} process ${target}: it is not a descendant of ${pid}`,
    );
  }

  /**
   * `EBUDGET` when `pid` or an ancestor has spent all of its `key` budget. A
   * quick refusal before work that {@link reserve} charges afterwards.
   */
  async checkBudget(pid: number, key: BudgetKey): Promise<void> {
    requireBudgetLeft(await this.lineage(pid), key);
  }

  /** True when `pid` or an ancestor has a `key` budget (budgets never change once set). */
  async isBudgeted(pid: number, key: BudgetKey): Promise<boolean> {
    return hasBudget(await this.lineage(pid), key);
  }

  /**
   * The processes in pid order: all of them, or with `options` a page of
   * them: those with a pid greater than `after` that `where` keeps, at
   * most `limit`. The read stops at the page's last process.
   */
  async list(
    options: {
      after?: number;
      limit?: number;
      where?: (record: ProcessRecord) => boolean;
    } = {},
  ): Promise<ProcessRecord[]> {
    const { after = 0, limit = Infinity, where } = options;
    const out: ProcessRecord[] = [];
    if (limit <= 0) return out;
    const entries = this.#kv.list<ProcessRecord>(
      { prefix: ["proc"], start: ["proc", after + 1] },
      { batchSize: Number.isFinite(limit) ? Math.min(Math.max(limit, 1), 500) : undefined },
    );
    for await (const { value } of entries) {
      if (where && !where(value)) continue;
      out.push(value);
      if (out.length >= limit) break;
    }
    return out;
  }

  /** The pids of a process's children, in pid order. */
  async children(pid: number): Promise<number[]> {
    const out: number[] = [];
    const iter = this.#kv.list<boolean>({ prefix: ["proc_child", pid] });
    for await (const entry of iter) out.push(entry.key[2] as number);
    return out;
  }

  /** Transition events in order, optionally for one pid and after a seq. */
  async *events(
    options: { pid?: number; afterSeq?: number } = {},
  ): AsyncGenerator<ProcessEvent> {
    const iter = this.#kv.list<ProcessEvent>({
      start: ["event", (options.afterSeq ?? 0) + 1],
      end: ["event", Number.MAX_SAFE_INTEGER],
    });
    for await (const entry of iter) {
      if (options.pid === undefined || entry.value.pid === options.pid) {
        yield entry.value;
      }
    }
  }

  /**
   * Calls `listener` after every transition this table commits and, while
   * {@link follow} runs, every one another kernel commits to the store.
   * Returns an unsubscribe function.
   */
  subscribe(listener: TransitionListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /**
   * Follows the transitions other kernels (other OS processes, other
   * hosts) commit to the store from now on, handing each to the listeners
   * with `foreign` true, in seq order. It reads the event log past the
   * last seq it handed on whenever {@link EVENT_KEY} changes, as seen by a
   * `kv.watch` (with `watch`: changes through KV Connect or another handle
   * of this OS process) or by reading the key every `pollMs` (a store file
   * other OS processes write to: SQLite has no cross-process watch).
   * Resolves once the starting point is read.
   */
  async follow(options: { watch?: boolean; pollMs?: number } = {}): Promise<void> {
    if (this.#feed) return;
    const watch = options.watch ? this.#kv.watch([EVENT_KEY]).getReader() : undefined;
    const timer = options.pollMs === undefined
      ? undefined
      : setInterval(() => this.#read(), options.pollMs);
    const watching = (async () => {
      try {
        while (watch && !(await watch.read()).done) this.#read();
      } catch {
        // The handle closed under the watch.
      }
    })();
    const feed: _Feed = {
      seen: -1,
      own: new Set(),
      again: false,
      stop: async () => {
        if (timer !== undefined) clearInterval(timer);
        await watch?.cancel().catch(() => {});
        await watching;
        while (feed.reading) await feed.reading;
      },
    };
    this.#feed = feed;
    feed.seen = (await this.#kv.get<number>(EVENT_KEY)).value ?? 0;
    for (const seq of feed.own) if (seq <= feed.seen) feed.own.delete(seq);
    this.#read();
  }

  /** Stops {@link follow}; resolves once no read is in progress. */
  async unfollow(): Promise<void> {
    const feed = this.#feed;
    this.#feed = undefined;
    await feed?.stop();
  }

  /** Hands on the transitions committed since the feed's last read; one read at a time. */
  #read(): void {
    const feed = this.#feed;
    if (!feed || feed.seen < 0) return;
    if (feed.reading) {
      feed.again = true;
      return;
    }
    feed.reading = (async () => {
      try {
        do {
          feed.again = false;
          const head = (await this.#kv.get<number>(EVENT_KEY)).value ?? 0;
          if (head <= feed.seen) continue;
          if (this.#allOwn(feed, head)) {
            // Only this table wrote since: nothing to read.
            for (let seq = feed.seen + 1; seq <= head; seq++) feed.own.delete(seq);
            feed.seen = head;
            continue;
          }
          const events = this.#kv.list<ProcessEvent>({
            start: ["event", feed.seen + 1],
            end: ["event", head + 1],
          });
          for await (const { value: event } of events) {
            if (this.#feed !== feed) return;
            if (feed.own.delete(event.seq)) continue;
            const record = await this.get(event.pid);
            if (record) this.#notify(record, event, true);
          }
          feed.seen = head;
          // A commit of ours whose seq was passed before we noted it.
          for (const seq of feed.own) if (seq <= head) feed.own.delete(seq);
        } while (feed.again && this.#feed === feed);
      } catch (error) {
        if (this.#feed === feed) {
          console.error(
            `libos: reading the transitions of other hosts failed: ${(error as Error).message}`,
          );
        }
      } finally {
        feed.reading = undefined;
      }
    })();
  }

  /** Whether every seq past the feed's last one up to `head` was committed by this table. */
  #allOwn(feed: _Feed, head: number): boolean {
    if (head - feed.seen > feed.own.size) return false;
    for (let seq = feed.seen + 1; seq <= head; seq++) if (!feed.own.has(seq)) return false;
    return true;
  }

  #notify(record: ProcessRecord, event: ProcessEvent, foreign: boolean): void {
    const feed = this.#feed;
    if (!foreign && feed && (feed.seen < 0 || event.seq > feed.seen)) feed.own.add(event.seq);
    for (const listener of this.#listeners) listener(record, event, foreign);
  }
}

/** Why a reservation of `needed` from `r`'s `key` budget of `limit` fails. */
export function budgetMessage(
  r: ProcessRecord,
  key: BudgetKey,
  limit: number,
  needed: number,
): string {
  const left = Math.max(0, limit - r.usage[key]);
  return left === 0
    ? `Cannot continue: process ${r.pid} has spent its ${key} budget of ${limit}`
    : `Cannot continue: process ${r.pid} has ${left} left of its ${key} budget of ${limit}, less than the ${needed} this call needs`;
}

/**
 * `EBUDGET` when a process of `lineage` (a process and its ancestors) has
 * spent all of its `key` budget: a quick refusal before work that a
 * reservation or a checked charge pays for afterwards.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { requireBudgetLeft, type ProcessRecord } from "./process_table.ts";
 * const r = { pid: 1, budget: { toolCalls: 2 }, usage: { toolCalls: 2, tokens: 0, children: 0 } };
 * assert.throws(() => requireBudgetLeft([r as ProcessRecord], "toolCalls"), { code: "EBUDGET" });
 * ```
 */
export function requireBudgetLeft(lineage: readonly ProcessRecord[], key: BudgetKey): void {
  for (const r of lineage) {
    const limit = r.budget[key];
    if (limit !== undefined && r.usage[key] >= limit) {
      throw new SyscallError("EBUDGET", budgetMessage(r, key, limit, 1));
    }
  }
}

/**
 * True when a process of `lineage` has a `key` budget (budgets never
 * change once set, so any read of the lineage tells).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { hasBudget, type ProcessRecord } from "./process_table.ts";
 * const r = { pid: 1, budget: { tokens: 9 }, usage: { toolCalls: 0, tokens: 0, children: 0 } };
 * assert(hasBudget([r as ProcessRecord], "tokens") && !hasBudget([r as ProcessRecord], "children"));
 * ```
 */
export function hasBudget(lineage: readonly ProcessRecord[], key: BudgetKey): boolean {
  return lineage.some((r) => r.budget[key] !== undefined);
}

/**
 * What `r` has left of its budgets at `now`: of each charged one, the
 * limit less the usage; of `wallMs`, the limit less the time it has run
 * (a process made from it gets no more).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { budgetLeft, type ProcessRecord } from "./process_table.ts";
 * const r = {
 *   budget: { toolCalls: 10, wallMs: 5_000 },
 *   usage: { toolCalls: 4, tokens: 0, children: 0 },
 *   startedAt: 1_000,
 * } as ProcessRecord;
 * assert.deepEqual(budgetLeft(r, 3_000), { toolCalls: 6, wallMs: 3_000 });
 * ```
 */
export function budgetLeft(
  r: Pick<ProcessRecord, "budget" | "usage" | "startedAt">,
  now: number,
): Budget {
  const left: Budget = {};
  for (const key of ["toolCalls", "tokens", "children"] as const) {
    const limit = r.budget[key];
    if (limit !== undefined) left[key] = Math.max(0, limit - r.usage[key]);
  }
  if (r.budget.wallMs !== undefined) {
    const ran = r.startedAt === undefined ? 0 : now - r.startedAt;
    left.wallMs = Math.max(0, r.budget.wallMs - ran);
  }
  return left;
}

/**
 * The tighter of two budgets, key by key (an absent key is no limit).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { narrowBudget } from "./process_table.ts";
 * assert.deepEqual(narrowBudget({ tokens: 100, children: 2 }, { tokens: 50, wallMs: 9 }), {
 *   tokens: 50, children: 2, wallMs: 9,
 * });
 * ```
 */
export function narrowBudget(a: Budget, b: Budget): Budget {
  const out: Budget = { ...a };
  for (const key of Object.keys(b) as (keyof Budget)[]) {
    const limit = b[key];
    if (limit !== undefined) out[key] = Math.min(out[key] ?? limit, limit);
  }
  return out;
}
