/**
 * The journal: every syscall of a process recorded by `(pid, seq)` with its
 * name, argument digest and outcome, committed to KV together with its audit
 * record, by one group-commit writer (SPEC section 7).
 *
 * Durability costs one commit per effect, not per syscall: records of calls
 * without external effects are buffered and ride along with the next
 * durable write, or are flushed after `flushMs`. While one commit is in
 * flight, everything that arrives waits and goes in the next one.
 *
 * @module
 */

import type { AuditEntry, AuditHead, AuditLog } from "./audit.ts";
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
  /** The audit entry to append, if any. */
  audit?: AuditEntry;
  /** Extra mutations that must commit atomically with this write. */
  atomic?: (op: Deno.AtomicOperation) => void;
  /**
   * Blind mutations (sums, such as the storage this write is charged) that
   * commit with it; they carry no checks, so the write still batches.
   */
  charges?: (op: Deno.AtomicOperation) => void;
}

interface Queued {
  write: JournalWrite;
  size: number;
  resolve?: () => void;
  reject?: (error: unknown) => void;
}

/** Counters of the group-commit writer, for benchmarks. */
export interface JournalStats {
  /** Atomic commits made so far. */
  commits: number;
  /** Writes committed so far. */
  writes: number;
  /** Most writes committed in one batch. */
  largestBatch: number;
}

/** Options of a {@link Journal}. */
export interface JournalOptions {
  /** Longest a buffered write waits for a commit, in ms (default 5). */
  flushMs?: number;
  /** Most writes in one commit (default 150). */
  maxBatch?: number;
}

const MAX_BATCH_BYTES = 600_000;

/** Makes a `done` record that keeps large values out of KV's 64 KiB limit. */
export async function completion(
  intent: Omit<JournalRecord, "phase" | "ok" | "value" | "error">,
  outcome: { ok: true; value: unknown; after?: After } | {
    ok: false;
    error: { code: string; message: string };
  },
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
 * await journal.write({ journal: record, audit: entry }, { durable: true });
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
  /** Counters since construction. */
  readonly stats: JournalStats = { commits: 0, writes: 0, largestBatch: 0 };

  /** Creates a writer over `kv` that chains audit records through `audit`. */
  constructor(kv: Deno.Kv, audit: AuditLog, options: JournalOptions = {}) {
    this.#kv = kv;
    this.#audit = audit;
    this.#flushMs = options.flushMs ?? 5;
    this.#maxBatch = options.maxBatch ?? 150;
  }

  /**
   * Queues a write. With `durable`, resolves once it is committed (and
   * starts a commit now); otherwise resolves at once and commits with the
   * next durable write or after `flushMs`.
   */
  write(write: JournalWrite, options: { durable: boolean }): Promise<void> {
    if (this.#closed) {
      return Promise.reject(new Error("Cannot write to the journal: it is closed"));
    }
    const size = (write.journal ? JSON.stringify(write.journal).length * 1.2 : 0) +
      (write.audit ? canonicalJson(write.audit).length + 200 : 0) + 100;
    if (!options.durable && !write.atomic) {
      this.#queue.push({ write, size });
      this.#schedule();
      return Promise.resolve();
    }
    return new Promise((resolve, reject) => {
      this.#queue.push({ write, size, resolve, reject });
      this.#kick();
    });
  }

  /** Commits everything queued so far. */
  async flush(): Promise<void> {
    this.#kick();
    while (this.#draining) await this.#draining;
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
      // drain was seen to end, would otherwise wait for nobody.
      if (this.#queue.length) this.#kick();
    });
  }

  async #drain(): Promise<void> {
    while (this.#queue.length) {
      let bytes = 0;
      let count = 0;
      // A write with its own checks commits alone, so a lost check fails
      // only that write.
      while (
        count < this.#queue.length && count < this.#maxBatch &&
        (count === 0 ||
          (bytes + this.#queue[count].size <= MAX_BATCH_BYTES &&
            !this.#queue[count].write.atomic &&
            !this.#queue[0].write.atomic))
      ) bytes += this.#queue[count++].size;
      const batch = this.#queue.splice(0, count);
      try {
        await this.#commit(batch.map((q) => q.write));
        for (const q of batch) q.resolve?.();
      } catch (error) {
        for (const q of batch) q.reject?.(error);
        if (batch.some((q) => !q.reject)) console.error(error);
      }
    }
  }

  async #commit(writes: JournalWrite[]): Promise<void> {
    for (let attempt = 0;; attempt++) {
      this.#head ??= await this.#audit.head();
      const op = this.#kv.atomic();
      for (const w of writes) {
        if (w.journal) putRecord(op, w.journal);
        w.atomic?.(op);
        w.charges?.(op);
      }
      const entries = writes.flatMap((w) => w.audit ? [w.audit] : []);
      const head = entries.length
        ? await this.#audit.appendTo(
          op,
          this.#head.head,
          this.#head.versionstamp,
          entries,
        )
        : this.#head.head;
      const result = await op.commit();
      if (result.ok) {
        this.#head = entries.length ? { head, versionstamp: result.versionstamp } : this.#head;
        this.stats.commits++;
        this.stats.writes += writes.length;
        this.stats.largestBatch = Math.max(this.stats.largestBatch, writes.length);
        return;
      }
      this.#head = undefined;
      if (attempt >= (writes[0].atomic ? 3 : 20)) {
        throw new Error("Cannot commit the journal: a concurrent change won");
      }
    }
  }
}
