/**
 * What one write adds to an atomic KV commit, recorded so that the writes
 * of several processes can share one commit: its checks and mutations (put
 * onto the shared commit in the order they were made), the keys it checks
 * and writes, and how much of a commit's limits it takes.
 *
 * A commit evaluates all its checks against the store as it was before the
 * commit, then applies its mutations in order. Writes A then B sharing a
 * commit therefore end exactly as A committed alone followed by B committed
 * alone when B checks no key A writes and neither writes a key the other
 * checks or writes, except sums of one key, which commute
 * ({@link CommitFootprint.conflictsWith}). Only such writes share a commit.
 *
 * @module
 */

import { kvKeyId } from "./kv_key_id.ts";

/**
 * The limits of one atomic commit of Deno KV (Deno 2.9): at most 100
 * checks and 1,000 mutations, mutation keys of at most 80 KiB together, and
 * at most 800 KiB of keys and values in all.
 */
export const KV_COMMIT_LIMITS = {
  /** Checks per commit. */
  checks: 100,
  /** Mutations per commit. */
  mutations: 1000,
  /** Bytes of the keys a commit writes. */
  keyBytes: 80 * 1024,
  /** Bytes of keys and values a commit carries. */
  bytes: 800 * 1024,
} as const;

/** A step recorded on a footprint, to be made again on a real commit. */
type _Step = (op: Deno.AtomicOperation) => void;

/**
 * Records what a write does to an atomic commit. It is handed to the
 * write's code in place of a `Deno.AtomicOperation`; {@link applyTo} then
 * makes the same checks and mutations on a real one. It never commits.
 *
 * Sizes are estimates (a value's JSON length, not its stored encoding): a
 * commit built from footprints that still exceeds a limit fails before
 * anything is written, and its writes are then committed one at a time.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { CommitFootprint } from "./commit_footprint.ts";
 * const a = new CommitFootprint();
 * a.check({ key: ["counter"], versionstamp: null }).set(["counter"], 1);
 * const b = new CommitFootprint();
 * b.set(["other"], 2);
 * assert(!a.conflictsWith(b));
 * const c = new CommitFootprint();
 * c.check({ key: ["counter"], versionstamp: null }).set(["counter"], 1);
 * assert(a.conflictsWith(c));
 * const kv = await Deno.openKv(":memory:");
 * const op = kv.atomic();
 * a.applyTo(op);
 * b.applyTo(op);
 * assert((await op.commit()).ok);
 * kv.close();
 * ```
 */
export class CommitFootprint implements Deno.AtomicOperation {
  /** Checks recorded. */
  checks = 0;
  /** Mutations recorded (sets, deletes, sums, minimums, maximums). */
  mutations = 0;
  /** Estimated bytes of the keys written. */
  keyBytes = 0;
  /** Estimated bytes of every key and value carried. */
  bytes = 0;
  #steps: _Step[] = [];
  #checked = new Set<string>();
  #written = new Set<string>();
  #summed = new Set<string>();

  /** Records checks. */
  check(...checks: Deno.AtomicCheck[]): this {
    for (const check of checks) {
      this.checks++;
      this.bytes += _keySize(check.key);
      this.#checked.add(kvKeyId(check.key));
    }
    this.#steps.push((op) => op.check(...checks));
    return this;
  }

  /** Records mutations. */
  mutate(...mutations: Deno.KvMutation[]): this {
    for (const mutation of mutations) {
      if (mutation.type === "sum") this.#sum(mutation.key);
      else {
        this.#write(mutation.key, mutation.type === "set" ? _valueSize(mutation.value) : 8);
      }
    }
    this.#steps.push((op) => op.mutate(...mutations));
    return this;
  }

  /** Records a sum. */
  sum(key: Deno.KvKey, n: bigint): this {
    this.#sum(key);
    this.#steps.push((op) => op.sum(key, n));
    return this;
  }

  /** Records a minimum. */
  min(key: Deno.KvKey, n: bigint): this {
    this.#write(key, 8);
    this.#steps.push((op) => op.min(key, n));
    return this;
  }

  /** Records a maximum. */
  max(key: Deno.KvKey, n: bigint): this {
    this.#write(key, 8);
    this.#steps.push((op) => op.max(key, n));
    return this;
  }

  /** Records a set. */
  set(key: Deno.KvKey, value: unknown, options?: { expireIn?: number }): this {
    this.#write(key, _valueSize(value));
    this.#steps.push((op) => op.set(key, value, options));
    return this;
  }

  /** Records a deletion. */
  delete(key: Deno.KvKey): this {
    this.#write(key, 0);
    this.#steps.push((op) => op.delete(key));
    return this;
  }

  /** Records an enqueue; the keys it may write if undelivered count as written. */
  enqueue(
    value: unknown,
    options?: { delay?: number; keysIfUndelivered?: Deno.KvKey[]; backoffSchedule?: number[] },
  ): this {
    this.bytes += _valueSize(value);
    for (const key of options?.keysIfUndelivered ?? []) {
      this.bytes += _keySize(key);
      this.#written.add(kvKeyId(key));
    }
    this.#steps.push((op) => op.enqueue(value, options));
    return this;
  }

  /** A footprint is never committed: its steps are made on a real commit by {@link applyTo}. */
  commit(): Promise<Deno.KvCommitResult | Deno.KvCommitError> {
    return Promise.reject(
      new Error("Cannot commit a footprint: it records a write for a shared commit"),
    );
  }

  /** Makes the recorded checks and mutations on `op`, in the order they were recorded. */
  applyTo(op: Deno.AtomicOperation): void {
    for (const step of this.#steps) step(op);
  }

  /**
   * Whether this footprint and `other` must not share a commit: one checks
   * a key the other writes, or both write one key (sums of one key aside).
   */
  conflictsWith(other: CommitFootprint): boolean {
    return _meets(other.#checked, this.#written, this.#summed) ||
      _meets(other.#written, this.#checked, this.#written, this.#summed) ||
      _meets(other.#summed, this.#checked, this.#written) ||
      _meets(this.#checked, other.#summed);
  }

  /** Adds the keys, counts and sizes of `other` to this footprint (not its steps). */
  include(other: CommitFootprint): void {
    this.checks += other.checks;
    this.mutations += other.mutations;
    this.keyBytes += other.keyBytes;
    this.bytes += other.bytes;
    for (const key of other.#checked) this.#checked.add(key);
    for (const key of other.#written) this.#written.add(key);
    for (const key of other.#summed) this.#summed.add(key);
  }

  #write(key: Deno.KvKey, valueBytes: number): void {
    const size = _keySize(key);
    this.mutations++;
    this.keyBytes += size;
    this.bytes += size + valueBytes;
    this.#written.add(kvKeyId(key));
  }

  #sum(key: Deno.KvKey): void {
    const size = _keySize(key);
    this.mutations++;
    this.keyBytes += size;
    this.bytes += size + 8;
    this.#summed.add(kvKeyId(key));
  }
}

/** Whether any key of `keys` is in one of `sets`. */
function _meets(keys: Set<string>, ...sets: Set<string>[]): boolean {
  for (const set of sets) {
    const [small, large] = keys.size <= set.size ? [keys, set] : [set, keys];
    for (const key of small) if (large.has(key)) return true;
  }
  return false;
}

/** An upper bound of the bytes `key` takes encoded. */
function _keySize(key: Deno.KvKey): number {
  let size = 0;
  for (const part of key) {
    if (typeof part === "string") size += 3 * part.length + 2;
    else if (part instanceof Uint8Array) size += 2 * part.length + 2;
    else size += 10;
  }
  return size;
}

/**
 * An estimate of the bytes `value` takes stored: its JSON text, or, for a
 * value JSON cannot take (a bigint), its JSON with binary parts counted by
 * their bytes. The runtime stores JSON data and bytes: bytes in a member of
 * a plain object (a stored object's data) count as their length; a typed
 * array deeper inside a value would count as its JSON (see the class's note
 * on a commit that still exceeds a limit).
 */
function _valueSize(value: unknown): number {
  if (value instanceof Uint8Array) return value.byteLength;
  if (value instanceof Deno.KvU64) return 8;
  if (_holdsBytes(value)) {
    // Counted member by member: the JSON of bytes is a slow text several times their size.
    let size = 2;
    for (const [key, member] of Object.entries(value)) {
      if (member !== undefined) size += JSON.stringify(key).length + 2 + _valueSize(member);
    }
    return size;
  }
  try {
    return JSON.stringify(value)?.length ?? 0;
  } catch {
    // A bigint somewhere: counted below.
  }
  let binary = 0;
  const text = JSON.stringify(value, (_key, part) => {
    if (typeof part === "bigint") return 0;
    if (ArrayBuffer.isView(part)) {
      binary += part.byteLength;
      return 0;
    }
    return part;
  });
  return (text?.length ?? 0) + binary;
}

/** Whether `value` is a plain object with bytes in a member of its own. */
function _holdsBytes(value: unknown): value is Record<string, unknown> {
  if (value === null || typeof value !== "object") return false;
  const proto = Object.getPrototypeOf(value);
  if (proto !== Object.prototype && proto !== null) return false;
  for (const key in value) {
    if ((value as Record<string, unknown>)[key] instanceof Uint8Array) return true;
  }
  return false;
}
