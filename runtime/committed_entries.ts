/**
 * What this host last committed under some keys, each with the versionstamp
 * of its commit: the entry the next change of such a key checks in its
 * commit instead of reading the key back.
 *
 * Such an entry is only a guess of what is stored. A change that uses it
 * checks its versionstamp in the change's own commit, so when another host
 * (or a path of this one that does not record here) changed the key since,
 * that commit fails, nothing of it is written, and the change is prepared
 * again from a fresh read. Nothing decided from an entry is final before
 * that commit: a refusal decided from one (a version that does not match, a
 * quota that would be passed) is confirmed from a fresh read before it is
 * answered.
 *
 * An entry is handed out once ({@link CommittedEntries.take} removes it):
 * the change that takes it records what it wrote
 * ({@link CommittedEntries.record}) once its commit reports a versionstamp.
 * A change that fails, or is committed by a path that does not record,
 * leaves nothing behind, so the next change of that key reads the store.
 * A call may look at an entry without taking it
 * ({@link CommittedEntries.peek}) to plan the change whose commit checks it.
 *
 * @module
 */

import { kvKeyId } from "../broker/kv_key_id.ts";

/** Most entries kept; past it the oldest are dropped. */
const DEFAULT_LIMIT = 4096;

/**
 * Entries committed by this host, to check instead of reading back.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { CommittedEntries } from "./committed_entries.ts";
 * const kv = await Deno.openKv(":memory:");
 * const entries = new CommittedEntries<number>();
 * const first = await entries.take(kv, ["counter"]); // read from the store
 * const result = await kv.atomic().check(first).set(["counter"], 1).commit();
 * assert(result.ok);
 * entries.record(["counter"], 1, result.versionstamp);
 * const next = await entries.take(kv, ["counter"]); // no read
 * assert(next.value === 1 && next.versionstamp === result.versionstamp);
 * kv.close();
 * ```
 */
export class CommittedEntries<T> {
  #entries = new Map<string, Deno.KvEntry<T>>();
  /** The versionstamps of the commits that changed forgotten keys otherwise. */
  #forgotten = new Map<string, string>();
  #limit: number;

  /** Keeps at most `limit` entries. */
  constructor(limit: number = DEFAULT_LIMIT) {
    this.#limit = limit;
  }

  /**
   * The entry of `key` this host last committed, removed from the cache,
   * or, when there is none or `fresh` is set, the entry read from `kv` now.
   */
  async take(
    kv: Deno.Kv,
    key: Deno.KvKey,
    options: { fresh?: boolean } = {},
  ): Promise<Deno.KvEntryMaybe<T>> {
    return (await this.takeMany(kv, [key], options))[0];
  }

  /** {@link take} for several keys, reading those not cached together. */
  async takeMany(
    kv: Deno.Kv,
    keys: readonly Deno.KvKey[],
    options: { fresh?: boolean } = {},
  ): Promise<Deno.KvEntryMaybe<T>[]> {
    const out: (Deno.KvEntryMaybe<T> | undefined)[] = keys.map((key) => {
      const id = kvKeyId(key);
      const cached = this.#entries.get(id);
      this.#entries.delete(id);
      return options.fresh ? undefined : cached;
    });
    const missing = keys.filter((_, i) => out[i] === undefined);
    const read: Deno.KvEntryMaybe<T>[] = [];
    for (let i = 0; i < missing.length; i += 10) {
      read.push(...await kv.getMany<T[]>(missing.slice(i, i + 10)));
    }
    let next = 0;
    return out.map((entry) => entry ?? read[next++]);
  }

  /**
   * Records that a commit with `versionstamp` set `key` to `value`. An
   * older versionstamp than the one already recorded is ignored.
   */
  record(key: Deno.KvKey, value: T, versionstamp: string): void {
    const id = kvKeyId(key);
    const known = this.#entries.get(id)?.versionstamp ?? this.#forgotten.get(id);
    if (known !== undefined && known > versionstamp) return;
    this.#forgotten.delete(id);
    this.#entries.delete(id);
    if (this.#entries.size >= this.#limit) {
      this.#entries.delete(this.#entries.keys().next().value!);
    }
    this.#entries.set(id, { key, value, versionstamp });
  }

  /**
   * The entry of `key` this host last committed, left in the cache, or
   * undefined: for what a change may decide before its commit checks it
   * (never a refusal, which is decided from the store).
   */
  peek(key: Deno.KvKey): Deno.KvEntry<T> | undefined {
    return this.#entries.get(kvKeyId(key));
  }

  /**
   * Forgets the entry of `key`, if any. Given the versionstamp of a commit
   * that changed the key otherwise, an entry of an older commit recorded
   * after this (its commit answered late) is ignored as well.
   */
  forget(key: Deno.KvKey, versionstamp?: string): void {
    const id = kvKeyId(key);
    this.#entries.delete(id);
    if (versionstamp === undefined) return;
    this.#forgotten.delete(id);
    if (this.#forgotten.size >= this.#limit) {
      this.#forgotten.delete(this.#forgotten.keys().next().value!);
    }
    this.#forgotten.set(id, versionstamp);
  }
}
