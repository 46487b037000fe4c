/**
 * The journal: every syscall of a process recorded by `(pid, seq)` with its
 * name, argument digest and outcome, committed to KV together with its audit
 * record, by one group-commit writer (SPEC section 7).
 *
 * That writer is the one place audit records are written: from the facts
 * of a call the broker hands it ({@link Journal.writeCall}: who called, the
 * syscall and its arguments, the decision, the capabilities used, how it
 * ended, the plan's note) it builds the call's journal record and its audit
 * entry, links the entry onto the hash chain and commits both in one KV
 * transaction; it alone writes the trail's keys (`["audit", "head"]`,
 * `["audit", "rec", seq]`). What a record holds and how it is hashed are
 * defined in `audit.ts`, which also reads the trail back.
 *
 * Durability costs one commit per batch of effects, not per syscall:
 * records of calls without external effects are buffered and ride along
 * with the next durable write, or are flushed after `flushMs`. While one
 * commit is in flight, everything that arrives waits and goes in the next
 * one, up to the limits of a KV commit. A call whose effect is a change of
 * the store alone commits that change with its records
 * ({@link JournalWrite.atomic}); changes of several processes share a
 * commit when none checks or writes what another writes (see
 * `commit_footprint.ts`), so the shared commit ends as committing them one
 * after the other would. When a shared commit fails (a check no longer
 * holds, a limit is passed), its writes are committed one at a time, so
 * each gets its own outcome: a write whose checks no longer hold fails with
 * {@link StaleWriteError}, and no other write is failed or changed by it.
 *
 * @module
 */

import {
  type AuditDecision,
  type AuditEntry,
  auditHash,
  type AuditHead,
  type AuditLog,
  type AuditRecord,
  storedEntry,
  summarizeArgs,
  syscallLabel,
} from "./audit.ts";
import type { Capability } from "./capability.ts";
import { CommitFootprint, KV_COMMIT_LIMITS } from "./commit_footprint.ts";
import { canonicalJson, sha256Hex } from "./digest.ts";
import { readChunked, writeChunked } from "../runtime/chunks.ts";

/** How a syscall touches the world, which decides its journal treatment. */
export type Effect = "none" | "idempotent" | "effect";

/** One journal record. */
export interface JournalRecord {
  /** The process that made the call. */
  pid: number;
  /** The call's position in the process's journal. */
  seq: number;
  /** The syscall name, e.g. `fs.write`. */
  name: string;
  /** Digest of the call's `{ name, args }`, checked on replay. */
  argsDigest: string;
  /** How the call touches the world. */
  effect: Effect;
  /**
   * `intent` is written before an effect runs; `wait` when the call parked
   * its process until something else completes it; `done` once it ended.
   */
  phase: "intent" | "wait" | "done";
  /** When the record was written, in ms since the epoch. */
  at: number;
  /** Whether the call succeeded, once it is `done`. */
  ok?: boolean;
  /** The result, inline when its JSON is at most {@link INLINE_LIMIT} bytes. */
  value?: unknown;
  /** The result is stored in chunks under `["journal_val", pid, seq]`. */
  chunked?: boolean;
  /** Digest of a result too large to keep at all: replay recomputes it. */
  valueDigest?: string;
  /** The error the call ended with, when it failed. */
  error?: { code: string; message: string };
  /** For a `wait` record: what the process waits for. */
  wait?: WaitSpec;
  /** For a call that succeeded: what it changes in its caller's run (see {@link After}). */
  after?: After;
}

/**
 * What a successful call changes in its caller's run, declared by the
 * call's plan and applied by the run (live, and again on replay).
 */
export interface After {
  /** The caller's working directory is now this path. */
  cwd?: string;
  /** The program has ended, as `exited` with this result. */
  exit?: { result: unknown };
}

/** What a parked syscall waits for. */
export type WaitSpec =
  | { kind: "sleep"; until: number }
  | { kind: "event"; topic: string; afterSeq: number; deadline?: number }
  | { kind: "message"; deadline?: number }
  | { kind: "human"; request: string }
  | { kind: "child"; pid: number; deadline?: number };

/** Results larger than this (JSON bytes) are stored in chunks. */
export const INLINE_LIMIT = 16 * 1024;

/** Results larger than this (JSON bytes) are journaled by digest only. */
export const CHUNK_LIMIT = 256 * 1024;

/** What one queued write carries. */
export interface JournalWrite {
  /** The journal record to write, if any. */
  journal?: JournalRecord;
  /**
   * An audit entry to append, if any: one that is not a syscall's (a human's
   * refusal, a connection of a sandboxed command). A syscall's entry is
   * built by {@link Journal.writeCall}.
   */
  audit?: AuditEntry;
  /**
   * Extra checks and mutations that must commit atomically with this write
   * (a change of the store, the one-shot grants a call spends). The write
   * shares a commit only with writes whose keys do not conflict with its
   * own; when that commit fails, each write is committed alone, so a failed
   * check fails only its own write. Called once, when the write is queued.
   */
  atomic?: (op: Deno.AtomicOperation) => void;
  /**
   * Checks alone (no mutations) that must hold for this write to commit
   * (that the caller's capabilities are unchanged since they authorized the
   * call): the write still batches, and when a batch fails on a check, its
   * writes are committed one by one so only the stale ones fail.
   */
  checks?: (op: Deno.AtomicOperation) => void;
  /**
   * Blind mutations (sums, such as the storage this write is charged) that
   * commit with it; they carry no checks, so the write still batches.
   */
  charges?: (op: Deno.AtomicOperation) => void;
  /**
   * Called with the versionstamp of the commit that stored this write, as
   * soon as it is committed: every key the write set now has it.
   */
  committed?: (versionstamp: string) => void;
}

interface Queued {
  write: JournalWrite;
  /** The write's journal record, checks and mutations, as they go into a commit. */
  footprint: CommitFootprint;
  /** Estimated bytes of its audit record. */
  auditBytes: number;
  resolve?: () => void;
  reject?: (error: unknown) => void;
}

/**
 * A write whose checks no longer hold (a concurrent change won): nothing of
 * it was committed; the caller may prepare it again.
 */
export class StaleWriteError extends Error {
  /** Creates the error. */
  constructor() {
    super("Cannot commit the journal write: a value it checks has changed");
    this.name = "StaleWriteError";
  }
}

/**
 * The buffered writes of one process, taken out of the writer's queue to
 * commit with a change of that process made elsewhere (the commit that
 * blocks it, or the one that ends it): one commit instead of two, and the
 * records are durable exactly when the change is. Until it is settled
 * ({@link ClaimedWrites.committed} or {@link ClaimedWrites.release}), the
 * writer commits no later write of that process, so its journal never
 * holds a record whose earlier records are missing.
 */
export interface ClaimedWrites {
  /**
   * Links the writes' audit entries onto the audit chain as the writer
   * knows it now (again on each attempt of the change, from the head as
   * stored): the commit checks that the chain's head has not moved.
   */
  link(): Promise<void>;
  /** Adds the writes, as last linked, to the change's commit. */
  apply(op: Deno.AtomicOperation): void;
  /** The change's commit landed with `versionstamp`: the writes are stored. */
  committed(versionstamp: string): void;
  /** Gives the writes back to the writer, to commit now (no-op once committed). */
  release(): void;
}

/**
 * The audit entry of a call that may park its process, which the commit
 * that blocks the process may carry (see {@link Journal.claim}): the call
 * is then audited in that commit, before anything it starts can act, and
 * no commit of its own follows it. The broker audits it on its own only
 * when no such commit stored it.
 */
export interface ParkedAudit {
  /** The facts of the call as it was decided (it has no end: it parks). */
  readonly facts: Omit<CallFacts, "end">;
  /** Set once a commit stored the entry. */
  stored: boolean;
}

/** Counters of the group-commit writer, for benchmarks. */
export interface JournalStats {
  /** Atomic commits made so far. */
  commits: number;
  /** Writes committed so far. */
  writes: number;
  /** Most writes committed in one batch. */
  largestBatch: number;
  /** Batches that failed as a whole and were committed again one write at a time. */
  splits: number;
}

/** Options of a {@link Journal}. */
export interface JournalOptions {
  /** Longest a buffered write waits for a commit, in ms (default 5). */
  flushMs?: number;
  /** Most writes in one commit (default 150). */
  maxBatch?: number;
}

/**
 * Most estimated bytes in one commit: below the KV limit, as a value's
 * stored size may pass the JSON length it is estimated by.
 */
const MAX_BATCH_BYTES = Math.floor(KV_COMMIT_LIMITS.bytes * 0.75);

/**
 * Most of a commit's limits that claimed writes may take (see
 * {@link Journal.claim}): the rest is left to the change they commit with.
 */
const CLAIM_SHARE = 0.4;

/** Bytes an audit record takes beyond its entry's JSON (seq, hashes, key). */
const AUDIT_RECORD_OVERHEAD = 200;

/** The head of the audit trail: the seq and hash of its last record. */
const AUDIT_HEAD_KEY: Deno.KvKey = ["audit", "head"];

/** The KV key of audit record `seq`. */
function _auditRecordKey(seq: number): Deno.KvKey {
  return ["audit", "rec", seq];
}

/** The process a write records a call of, or the process its audit entry names. */
function _writerOf(write: JournalWrite): number | undefined {
  return write.journal?.pid ?? write.audit?.pid;
}

/** A claim of no writes (see {@link Journal.claim}). */
const _NOTHING_CLAIMED: ClaimedWrites = {
  link: () => Promise.resolve(),
  apply: () => {},
  committed: () => {},
  release: () => {},
};

/** Who made a recorded call, and where it sits in the caller's journal (a broker's `CallContext`). */
export interface CallOrigin {
  /** The calling process. */
  pid: number;
  /** The call's position in the process's journal. */
  seq: number;
  /** The caller's image tag. */
  image: string;
  /** The JIT or built-in tool making the call, when known. */
  tool?: string;
  /** Digest of the call's `{ name, args }`. */
  argsDigest: string;
}

/** How a recorded call ended. */
export interface CallEnd {
  /** How the call touches the world. */
  effect: Effect;
  /** Its result (and after-effects), or its error. */
  outcome:
    | { ok: true; value: unknown; after?: After }
    | { ok: false; error: { code: string; message: string } };
  /** Whether it took effect is unknown (the host stopped while it ran): audited `uncertain`. */
  uncertain?: boolean;
}

/**
 * The facts of one syscall, as the broker hands them to
 * {@link Journal.writeCall}: the journal writes the call's record and its
 * audit entry from them.
 */
export interface CallFacts {
  /** Who made the call. */
  ctx: CallOrigin;
  /** The syscall name, as the program sent it. */
  name: string;
  /** The arguments, as the program sent them (the audit keeps a summary). */
  args: unknown;
  /** When the call arrived, in ms since the epoch. */
  at: number;
  /** The decision it was taken under. */
  decision: AuditDecision;
  /** The capabilities it used. */
  capabilities?: readonly Pick<Capability, "id">[];
  /** The note of its plan, for its audit record. */
  note?: string;
  /**
   * How it ended, journaled with its audit record. Absent for a call that
   * parked its process: it is audited now, and whoever ends the wait
   * journals its result.
   */
  end?: CallEnd;
}

/** Makes a `done` record that keeps large values out of KV's 64 KiB limit. */
async function _completion(
  intent: Omit<JournalRecord, "phase" | "ok" | "value" | "error">,
  outcome: CallEnd["outcome"],
): Promise<JournalRecord> {
  const record: JournalRecord = { ...intent, phase: "done", ok: outcome.ok };
  if (outcome.ok && outcome.after) record.after = outcome.after;
  if (!outcome.ok) record.error = outcome.error;
  else if (outcome.value !== undefined) {
    const text = canonicalJson(outcome.value);
    if (text.length <= CHUNK_LIMIT) record.value = outcome.value;
    else record.valueDigest = await sha256Hex(text);
  }
  return record;
}

/** The audit entry of a call. */
function _auditEntry(facts: CallFacts): AuditEntry {
  const { ctx, end } = facts;
  const error = end && !end.outcome.ok ? end.outcome.error : undefined;
  return {
    at: facts.at,
    pid: ctx.pid,
    image: ctx.image,
    tool: ctx.tool,
    syscall: syscallLabel(facts.name),
    args: summarizeArgs(String(facts.name), facts.args),
    argsDigest: ctx.argsDigest,
    decision: facts.decision,
    capability: _capabilityIds(facts.capabilities),
    outcome: end?.uncertain ? "uncertain" : error ? "error" : "ok",
    code: error?.code,
    reason: error?.message,
    note: facts.note,
  };
}

/**
 * The capabilities a call used, as its audit record names them: each once
 * (a call over a directory tree names one operation per entry), or
 * undefined for none.
 */
function _capabilityIds(capabilities: CallFacts["capabilities"]): string | undefined {
  if (!capabilities?.length) return undefined;
  if (capabilities.length === 1) return capabilities[0].id || undefined;
  return [...new Set(capabilities.map((c) => c.id))].join(",") || undefined;
}

/**
 * Links `entries` onto the chain that ends at `head`: seq numbers follow
 * `head.seq`, each record's `prevHash` is the hash before it, and its `hash`
 * covers all its other fields; each entry is stored as {@link storedEntry}
 * makes it.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { GENESIS } from "./audit.ts";
 * import { chain } from "./journal.ts";
 * const { records, head } = await chain(GENESIS, [{
 *   at: 0, pid: 1, image: "demo@1.0.0", syscall: "time.now", args: "{}",
 *   argsDigest: "0".repeat(64), decision: "allow", outcome: "ok",
 * }]);
 * assert(records[0].seq === 1 && records[0].prevHash === GENESIS.hash);
 * assert(head.hash === records[0].hash);
 * ```
 */
export async function chain(
  head: AuditHead,
  entries: readonly AuditEntry[],
): Promise<{ records: AuditRecord[]; head: AuditHead }> {
  const records: AuditRecord[] = [];
  let current = head;
  for (const entry of entries) {
    const body = { ...storedEntry(entry), seq: current.seq + 1, prevHash: current.hash };
    const record: AuditRecord = { ...body, hash: await auditHash(body) };
    records.push(record);
    current = { seq: record.seq, hash: record.hash };
  }
  return { records, head: current };
}

/** Adds a journal record to an atomic operation, chunking a large value. */
export function putRecord(op: Deno.AtomicOperation, record: JournalRecord): void {
  if (record.value !== undefined && JSON.stringify(record.value).length > INLINE_LIMIT) {
    const { value, ...rest } = record;
    writeChunked(op, ["journal_val", record.pid, record.seq], value);
    op.set(["journal", record.pid, record.seq], { ...rest, chunked: true });
  } else op.set(["journal", record.pid, record.seq], record);
}

/** Adds the deletion of the journal record `(pid, seq)` to an atomic operation. */
export function deleteRecord(op: Deno.AtomicOperation, pid: number, seq: number): void {
  op.delete(["journal", pid, seq]);
}

/**
 * Deletes the journal records of `pid` numbered `seqs` (those a snapshot
 * restore drops), a bounded number per commit.
 */
export async function deleteRecords(kv: Deno.Kv, pid: number, seqs: number[]): Promise<void> {
  for (let i = 0; i < seqs.length; i += 500) {
    const op = kv.atomic();
    for (const seq of seqs.slice(i, i + 500)) deleteRecord(op, pid, seq);
    await op.commit();
  }
}

/**
 * Reads the journal of `pid` from `fromSeq` on, as a map by seq, with
 * chunked values put back inline.
 */
export async function loadJournal(
  kv: Deno.Kv,
  pid: number,
  fromSeq = 1,
): Promise<Map<number, JournalRecord>> {
  const out = new Map<number, JournalRecord>();
  const iter = kv.list<JournalRecord>({
    start: ["journal", pid, fromSeq],
    end: ["journal", pid, Number.MAX_SAFE_INTEGER],
  });
  for await (const entry of iter) {
    const record = entry.value;
    if (record.chunked) {
      record.value = await readChunked(kv, ["journal_val", pid, record.seq]);
      delete record.chunked;
    }
    out.set(record.seq, record);
  }
  return out;
}

/**
 * The group-commit writer of journal and audit records.
 *
 * @example
 * ```ts ignore
 * const journal = new Journal(kv, new AuditLog(kv));
 * await journal.writeCall({ ctx, name, args, at, decision: "allow", end }, { durable: true });
 * ```
 */
export class Journal {
  #kv: Deno.Kv;
  #audit: AuditLog;
  #queue: Queued[] = [];
  #draining: Promise<void> | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #head: { head: AuditHead; versionstamp: string | null } | undefined;
  #flushMs: number;
  #maxBatch: number;
  #closed = false;
  /**
   * Processes whose buffered writes are claimed, each with what resolves
   * once its claim is settled: none of their writes is committed meanwhile.
   */
  #claimed = new Map<number, Promise<void>>();
  /** Flushes running, each with the writes that were queued when it began. */
  #flushing = new Map<Promise<void>, Set<Queued>>();
  /** Processes with a write in the commit in flight. */
  #inFlight = new Set<number>();
  /** The commit in flight (with its retries one write at a time), if any. */
  #batch: Promise<void> | undefined;
  /**
   * Claims whose audit records are linked onto the head (each as the
   * promise that settles with it): the writer commits nothing meanwhile, as
   * its commit would move the head and fail theirs.
   */
  #linkedClaims = new Set<Promise<void>>();
  /** Claims made and not yet settled that carry audit records. */
  #auditedClaims = 0;
  /** Counters since construction. */
  readonly stats: JournalStats = { commits: 0, writes: 0, largestBatch: 0, splits: 0 };

  /** Creates a writer over `kv` that links audit records onto the chain `audit` reads. */
  constructor(kv: Deno.Kv, audit: AuditLog, options: JournalOptions = {}) {
    this.#kv = kv;
    this.#audit = audit;
    this.#flushMs = options.flushMs ?? 5;
    this.#maxBatch = options.maxBatch ?? 150;
  }

  /**
   * Journals a syscall and audits it, from the facts of the call: its `done`
   * record (when it ended) and its audit entry go into one write. `charge`
   * is handed the bytes the two records take and answers the mutations that
   * charge them (see {@link JournalWrite.charges}). `atomic` adds what must
   * commit with the records (see {@link JournalWrite.atomic}): the call's
   * change of the store and the checks of its authority; `committed` is told
   * the versionstamp of the commit that stored it (see
   * {@link JournalWrite.committed}).
   */
  async writeCall(
    facts: CallFacts,
    options: {
      durable: boolean;
      charge?: (bytes: number) => Promise<(op: Deno.AtomicOperation) => void>;
      atomic?: (op: Deno.AtomicOperation) => void;
      committed?: (versionstamp: string) => void;
    },
  ): Promise<void> {
    const { ctx, end } = facts;
    const journal = end &&
      await _completion({
        pid: ctx.pid,
        seq: ctx.seq,
        name: facts.name,
        argsDigest: ctx.argsDigest,
        effect: end.effect,
        at: facts.at,
      }, end.outcome);
    const audit = _auditEntry(facts);
    // The entry's text is measured once: for its charge and for the batch's size.
    const auditLength = canonicalJson(audit).length;
    const charges = await options.charge?.(
      (journal ? JSON.stringify(journal).length : 0) + auditLength,
    );
    const { atomic, committed } = options;
    await this.write({ journal, audit, charges, atomic, committed }, {
      durable: options.durable,
      auditLength,
    });
  }

  /**
   * Queues a write. With `durable`, resolves once it is committed (and
   * starts a commit now); otherwise resolves at once and commits with the
   * next durable write or after `flushMs`. `auditLength`: the length of
   * the audit entry's canonical JSON, when the caller measured it already.
   */
  write(
    write: JournalWrite,
    options: { durable: boolean; auditLength?: number },
  ): Promise<void> {
    if (this.#closed) {
      return Promise.reject(new Error("Cannot write to the journal: it is closed"));
    }
    const footprint = new CommitFootprint();
    if (write.journal) putRecord(footprint, write.journal);
    write.checks?.(footprint);
    write.atomic?.(footprint);
    write.charges?.(footprint);
    const auditBytes = write.audit
      ? (options.auditLength ?? canonicalJson(write.audit).length) +
        AUDIT_RECORD_OVERHEAD
      : 0;
    if (!options.durable && !write.atomic) {
      this.#queue.push({ write, footprint, auditBytes });
      this.#schedule();
      return Promise.resolve();
    }
    return new Promise((resolve, reject) => {
      this.#queue.push({ write, footprint, auditBytes, resolve, reject });
      this.#kick();
    });
  }

  /**
   * Commits everything queued so far. Writes claimed by a change (see
   * {@link claim}) are durable once it resolves too: it waits for those
   * claims to settle, so a commit made after a flush never lands before a
   * record claimed earlier.
   */
  async flush(): Promise<void> {
    // What is queued now is this flush's to commit: a claim made while it
    // runs does not take those writes (see {@link claim}).
    const covered = new Set(this.#queue);
    const run = (async () => {
      await Promise.all(this.#claimed.values());
      this.#kick();
      while (this.#draining) await this.#draining;
    })();
    this.#flushing.set(run, covered);
    try {
      await run;
    } finally {
      this.#flushing.delete(run);
    }
  }

  /**
   * Takes the buffered writes of `pid` out of the queue, to commit them
   * with a change of that process (see {@link ClaimedWrites}). Waits for a
   * commit in flight that holds a write of it. When its writes cannot be
   * claimed (one of them is awaited by a caller or carries checks of its
   * own, or together they would take more than {@link CLAIM_SHARE} of a
   * commit), commits everything queued instead, as {@link flush} does, and
   * claims none of them: the change then commits after them. With
   * `options.parked`, the audit entry of the call that the change blocks
   * `pid` in is claimed too, after the buffered ones (and marked stored
   * once committed); a claim released drops it.
   */
  async claim(pid: number, options: { parked?: ParkedAudit } = {}): Promise<ClaimedWrites> {
    const { parked } = options;
    for (;;) {
      if (this.#claimed.has(pid)) await this.#claimed.get(pid);
      else if (this.#inFlight.has(pid)) await this.#batch;
      else {
        // A flush running commits the writes queued when it began: those of
        // `pid` land with it, before anything a claim would commit them with.
        const flushing = [...this.#flushing].find(([, covered]) =>
          this.#queue.some((q) => covered.has(q) && _writerOf(q.write) === pid)
        );
        if (!flushing) break;
        await flushing[0].catch(() => {});
      }
    }
    let own = this.#queue.filter((q) => _writerOf(q.write) === pid);
    const total = new CommitFootprint();
    let auditBytes = 0;
    for (const q of own) {
      total.include(q.footprint);
      auditBytes += q.auditBytes;
    }
    const fits = own.every((q) => !q.resolve && !q.write.atomic && !q.write.checks) &&
      total.checks + 1 <= KV_COMMIT_LIMITS.checks * CLAIM_SHARE &&
      total.mutations + 2 * own.length + 1 <= KV_COMMIT_LIMITS.mutations * CLAIM_SHARE &&
      total.keyBytes + 40 * (own.length + 1) <= KV_COMMIT_LIMITS.keyBytes * CLAIM_SHARE &&
      total.bytes + auditBytes <= MAX_BATCH_BYTES * CLAIM_SHARE;
    if (!fits) {
      await this.flush();
      if (!parked) return _NOTHING_CLAIMED;
      own = [];
    }
    if (own.length === 0 && !parked) return _NOTHING_CLAIMED;
    if (this.#auditedClaims > 0 && own.some((q) => q.write.audit)) {
      // Claims out side by side would link onto the same head, and every
      // commit but the first would fail its check and go again: the writer
      // commits these now instead, in one batch with the rest of the queue.
      await this.#committed(own.at(-1)!);
      if (!parked) return _NOTHING_CLAIMED;
      own = [];
    }
    this.#queue = this.#queue.filter((q) => !own.includes(q));
    let done!: () => void;
    const settled = new Promise<void>((resolve) => done = resolve);
    this.#claimed.set(pid, settled);
    const entries = own.flatMap((q) => q.write.audit ? [q.write.audit] : []);
    if (parked) entries.push(_auditEntry(parked.facts));
    if (entries.length) this.#auditedClaims++;
    let linked: { records: AuditRecord[]; from: string | null; head: AuditHead } | undefined;
    let over = false;
    const settle = () => {
      over = true;
      if (entries.length) this.#auditedClaims--;
      this.#claimed.delete(pid);
      this.#linkedClaims.delete(settled);
      done();
      // Writes that waited for the claim: awaited ones now, buffered ones on the timer.
      if (this.#queue.some((q) => q.resolve)) this.#kick();
      else if (this.#queue.length) this.#schedule();
    };
    return {
      link: async () => {
        if (!entries.length) return;
        // A commit of the writer's in flight moves the head: linked after it.
        while (this.#batch) await this.#batch;
        // Linked again: the commit they went into failed, perhaps on a head
        // another writer (another host, the CLI) moved: it is read again.
        if (linked) this.#head = undefined;
        this.#head ??= await this.#audit.head();
        const from = this.#head;
        const chained = await chain(from.head, entries);
        linked = { records: chained.records, from: from.versionstamp, head: chained.head };
        if (!over) this.#linkedClaims.add(settled);
      },
      apply: (op) => {
        for (const q of own) q.footprint.applyTo(op);
        if (!entries.length) return;
        if (!linked) throw new Error("Cannot commit claimed journal writes before they are linked");
        op.check({ key: AUDIT_HEAD_KEY, versionstamp: linked.from });
        for (const record of linked.records) op.set(_auditRecordKey(record.seq), record);
        op.set(AUDIT_HEAD_KEY, linked.head);
      },
      committed: (versionstamp) => {
        if (over) return;
        // The writer's head moves on only if nobody moved it since it was linked from.
        if (linked && this.#head?.versionstamp === linked.from) {
          this.#head = { head: linked.head, versionstamp };
        } else if (linked) this.#head = undefined;
        this.stats.commits++;
        this.stats.writes += own.length;
        if (parked) parked.stored = true;
        for (const q of own) {
          try {
            q.write.committed?.(versionstamp);
          } catch (error) {
            console.error("Cannot tell a journal write its commit's versionstamp:", error);
          }
        }
        settle();
      },
      release: () => {
        if (over) return;
        this.#queue.unshift(...own);
        settle();
        this.#kick();
      },
    };
  }

  /**
   * Resolves once the queued `write` is committed (or has failed: as with
   * {@link flush}, a buffered write's failure is reported, not thrown),
   * with every write queued before it of the same process.
   */
  #committed(write: Queued): Promise<void> {
    return new Promise((resolve) => {
      write.resolve = resolve;
      write.reject = (error) => {
        console.error(error);
        resolve();
      };
      this.#kick();
    });
  }

  /** Flushes and refuses further writes. */
  async close(): Promise<void> {
    await this.flush();
    this.#closed = true;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
  }

  #schedule(): void {
    if (this.#queue.length >= this.#maxBatch) return this.#kick();
    if (this.#timer === undefined && !this.#draining) {
      this.#timer = setTimeout(() => {
        this.#timer = undefined;
        this.#kick();
      }, this.#flushMs);
    }
  }

  #kick(): void {
    if (this.#timer !== undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
    this.#draining ??= this.#drain().finally(() => {
      this.#draining = undefined;
      // A write that arrived after the last batch was taken, but before this
      // drain was seen to end, would otherwise wait for nobody. (Writes of a
      // claimed process wait for their claim, which kicks when it settles.)
      if (this.#queue.some((q) => !this.#claimed.has(_writerOf(q.write) ?? -1))) this.#kick();
    });
  }

  async #drain(): Promise<void> {
    for (;;) {
      // A claim linked onto the audit head commits first (it takes a moment).
      if (this.#linkedClaims.size) {
        await Promise.all([...this.#linkedClaims]);
        continue;
      }
      // Writes of a process whose buffered writes are claimed wait until
      // that claim is settled: none lands before the records it follows.
      const ready = this.#claimed.size
        ? this.#queue.filter((q) => !this.#claimed.has(_writerOf(q.write) ?? -1))
        : this.#queue;
      if (!ready.length) return;
      // The batch is the longest run from the front of what may commit that
      // fits one commit and whose writes do not conflict, so the commit ends
      // as committing them one after the other, in queue order, would.
      const batch = new CommitFootprint();
      let audits = 0;
      let auditBytes = 0;
      let count = 0;
      for (; count < ready.length && count < this.#maxBatch; count++) {
        const next = ready[count];
        const withAudit = next.auditBytes ? audits + 1 : audits;
        const fits = batch.checks + next.footprint.checks + 1 <= KV_COMMIT_LIMITS.checks &&
          batch.mutations + next.footprint.mutations + withAudit + 1 <=
            KV_COMMIT_LIMITS.mutations &&
          batch.keyBytes + next.footprint.keyBytes + 40 * (withAudit + 1) <=
            KV_COMMIT_LIMITS.keyBytes &&
          batch.bytes + next.footprint.bytes + auditBytes + next.auditBytes <= MAX_BATCH_BYTES;
        if (count > 0 && (!fits || batch.conflictsWith(next.footprint))) break;
        batch.include(next.footprint);
        audits = withAudit;
        auditBytes += next.auditBytes;
      }
      let taken: Queued[];
      if (ready === this.#queue) taken = this.#queue.splice(0, count);
      else {
        const chosen = new Set(ready.slice(0, count));
        taken = [...chosen];
        this.#queue = this.#queue.filter((q) => !chosen.has(q));
      }
      for (const q of taken) this.#inFlight.add(_writerOf(q.write) ?? -1);
      this.#batch = this.#commitBatch(taken).finally(() => {
        this.#inFlight.clear();
        this.#batch = undefined;
      });
      await this.#batch;
    }
  }

  /** Commits a batch and settles its writes; after it failed, one write at a time. */
  async #commitBatch(batch: Queued[]): Promise<void> {
    let versionstamp: string;
    try {
      versionstamp = await this.#commit(batch);
    } catch (error) {
      if (batch.length > 1) {
        // Which write failed the commit (a stale check, a limit passed) is
        // unknown, and nothing of it was written: each write goes alone, so
        // only the failing ones fail.
        this.stats.splits++;
        for (const q of batch) await this.#commitBatch([q]);
        return;
      }
      for (const q of batch) q.reject?.(error);
      if (batch.some((q) => !q.reject)) console.error(error);
      return;
    }
    for (const q of batch) {
      // Committed, whatever a write's listener meets.
      try {
        q.write.committed?.(versionstamp);
      } catch (error) {
        console.error("Cannot tell a journal write its commit's versionstamp:", error);
      }
      q.resolve?.();
    }
  }

  /** Commits a batch's writes in one commit; returns the commit's versionstamp. */
  async #commit(batch: Queued[]): Promise<string> {
    const writes = batch.map((q) => q.write);
    const checked = writes.some((w) => w.atomic || w.checks);
    for (let attempt = 0;; attempt++) {
      this.#head ??= await this.#audit.head();
      const op = this.#kv.atomic();
      for (const q of batch) q.footprint.applyTo(op);
      const entries = writes.flatMap((w) => w.audit ? [w.audit] : []);
      let head = this.#head.head;
      const headVersion = this.#head.versionstamp;
      if (entries.length) {
        // The records go on the chain only if its head has not moved.
        const linked = await chain(head, entries);
        op.check({ key: AUDIT_HEAD_KEY, versionstamp: headVersion });
        for (const record of linked.records) op.set(_auditRecordKey(record.seq), record);
        op.set(AUDIT_HEAD_KEY, linked.head);
        head = linked.head;
      }
      const result = await op.commit();
      if (result.ok) {
        this.#head = entries.length ? { head, versionstamp: result.versionstamp } : this.#head;
        this.stats.commits++;
        this.stats.writes += writes.length;
        this.stats.largestBatch = Math.max(this.stats.largestBatch, writes.length);
        return result.versionstamp;
      }
      this.#head = await this.#audit.head();
      // The head did not move, so a check of the writes' own failed: trying again cannot help.
      if (checked && (!entries.length || this.#head.versionstamp === headVersion)) {
        throw new StaleWriteError();
      }
      if (attempt >= 20) {
        throw new Error("Cannot commit the journal: a concurrent change won");
      }
    }
  }
}
