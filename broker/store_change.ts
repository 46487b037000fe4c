/**
 * A change of the host's store (an object, a topic event, a message, a
 * capability) prepared for one atomic KV commit: the checks and mutations
 * that make it, and what it answers once it is committed.
 *
 * The module that owns the keys prepares the change (it alone writes them,
 * see `docs/storage.md`); whoever commits it may add more to the same
 * commit. The broker commits a syscall's change together with the call's
 * journal and audit records and the checks of the call's authority, so such
 * a call costs one commit and is never half done; {@link commitStoreChange}
 * commits one alone.
 *
 * @module
 */

/** A change of the store, prepared for one atomic commit. */
export interface StoreChange<T = unknown> {
  /** What the change answers once it is committed. */
  readonly result: T;
  /**
   * Adds the change's checks and mutations to `op`. A check that fails
   * fails the whole commit: the change is then prepared again.
   */
  apply(op: Deno.AtomicOperation): void;
  /**
   * Removes what preparing the change wrote outside its commit (the chunks
   * of a large object, which nothing refers to until the commit); called
   * when the change was not committed.
   */
  discard?(): Promise<void>;
  /**
   * Called with the versionstamp of the commit that stored the change, once
   * it is committed and before its waiters wake: every key the change set
   * now has that versionstamp, so what it wrote may be checked by the next
   * change of those keys without reading them back.
   */
  committed?(versionstamp: string): void;
  /** Wakes the processes that wait for what the change stored; called once it is committed. */
  wake?(): Promise<void>;
}

/**
 * Commits a change alone: prepares it, commits it, and after a failed check
 * (a concurrent write won) prepares and commits it again. Returns the
 * result of the change that was committed, after waking its waiters.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { commitStoreChange } from "./store_change.ts";
 * const kv = await Deno.openKv(":memory:");
 * const next = await commitStoreChange(kv, async () => {
 *   const counter = await kv.get<number>(["example_counter"]);
 *   const value = (counter.value ?? 0) + 1;
 *   return { result: value, apply: (op) => op.check(counter).set(["example_counter"], value) };
 * });
 * assert(next === 1);
 * kv.close();
 * ```
 */
export async function commitStoreChange<T>(
  kv: Deno.Kv,
  prepare: () => Promise<StoreChange<T>>,
): Promise<T> {
  for (;;) {
    const change = await prepare();
    const op = kv.atomic();
    change.apply(op);
    let committed: Deno.KvCommitResult | Deno.KvCommitError | undefined;
    try {
      committed = await op.commit();
    } finally {
      if (!committed?.ok) await change.discard?.();
    }
    if (committed.ok) {
      change.committed?.(committed.versionstamp);
      await change.wake?.();
      return change.result;
    }
  }
}
