/**
 * Test helpers that watch the atomic commits made on a KV handle: record
 * each one that lands with the keys it writes, or commit something of the
 * test's own just before the next one (as if it had raced the code under
 * test, after that code read what its commit checks).
 *
 * @module
 */

/** One committed atomic operation. */
export interface SeenCommit {
  /** The keys it set, deleted or summed, in order. */
  keys: Deno.KvKey[];
}

/** What {@link watchCommits} gives. */
export interface CommitWatch {
  /** The commits that landed so far. */
  commits: SeenCommit[];
  /** Stops watching. */
  stop(): void;
}

/** The result of a commit. */
type Committed = Deno.KvCommitResult | Deno.KvCommitError;

/**
 * Wraps the atomic operations `kv` makes from now on: their commit goes
 * through `onCommit`, with the keys the operation writes. Returns what
 * stops wrapping new operations.
 */
function wrapAtomic(
  kv: Deno.Kv,
  onCommit: (keys: Deno.KvKey[], commit: () => Promise<Committed>) => Promise<Committed>,
): () => void {
  const own = Object.hasOwn(kv, "atomic");
  const original = kv.atomic;
  kv.atomic = function (): Deno.AtomicOperation {
    const op = original.call(kv);
    const keys: Deno.KvKey[] = [];
    const { set, delete: remove, sum, commit } = op;
    op.set = (key, value, options) => (keys.push(key), set.call(op, key, value, options));
    op.delete = (key) => (keys.push(key), remove.call(op, key));
    op.sum = (key, n) => (keys.push(key), sum.call(op, key, n));
    op.commit = () => onCommit(keys, () => commit.call(op));
    return op;
  };
  return () => {
    if (own) kv.atomic = original;
    else delete (kv as { atomic?: unknown }).atomic;
  };
}

/**
 * Records every atomic commit that lands on `kv` (with the keys it writes)
 * until `stop` is called.
 */
export function watchCommits(kv: Deno.Kv): CommitWatch {
  const commits: SeenCommit[] = [];
  const stop = wrapAtomic(kv, async (keys, commit) => {
    const result = await commit();
    if (result.ok) commits.push({ keys });
    return result;
  });
  return { commits, stop };
}

/**
 * Runs `action` (which may commit to `kv` itself) just before the next
 * atomic commit on `kv` is sent (with `writing`, the next one whose written
 * keys it accepts), once, handing it those keys; resolves when it has run.
 */
export function beforeNextCommit(
  kv: Deno.Kv,
  action: (keys: Deno.KvKey[]) => Promise<void>,
  writing: (keys: Deno.KvKey[]) => boolean = () => true,
): Promise<void> {
  return new Promise((resolve, reject) => {
    let fired = false;
    const stop = wrapAtomic(kv, async (keys, commit) => {
      if (fired || !writing(keys)) return await commit();
      fired = true;
      stop();
      try {
        await action(keys);
        resolve();
      } catch (error) {
        reject(error);
      }
      return await commit();
    });
  });
}

/** What {@link watchReads} gives. */
export interface ReadWatch {
  /** The keys read so far, one entry per key per read (a `list` gives its prefix or start). */
  keys: Deno.KvKey[];
  /** Stops watching. */
  stop(): void;
}

/** Records every key `kv.get` and `kv.getMany` read on `kv`, and every `kv.list` asked, until `stop`. */
export function watchReads(kv: Deno.Kv): ReadWatch {
  const keys: Deno.KvKey[] = [];
  const own = { get: Object.hasOwn(kv, "get"), getMany: Object.hasOwn(kv, "getMany") };
  const { get, getMany, list } = kv;
  const ownList = Object.hasOwn(kv, "list");
  kv.get = function (key: Deno.KvKey, options?: { consistency?: Deno.KvConsistencyLevel }) {
    keys.push(key);
    return get.call(kv, key, options);
  } as Deno.Kv["get"];
  kv.getMany = function (
    many: readonly Deno.KvKey[],
    options?: { consistency?: Deno.KvConsistencyLevel },
  ) {
    keys.push(...many);
    return getMany.call(kv, many, options);
  } as Deno.Kv["getMany"];
  kv.list = function (selector: Deno.KvListSelector, options?: Deno.KvListOptions) {
    keys.push("prefix" in selector ? selector.prefix : selector.start);
    return list.call(kv, selector, options);
  } as Deno.Kv["list"];
  const restore = (name: "get" | "getMany" | "list", original: unknown, wasOwn: boolean) => {
    if (wasOwn) (kv as unknown as Record<string, unknown>)[name] = original;
    else delete (kv as unknown as Record<string, unknown>)[name];
  };
  return {
    keys,
    stop: () => {
      restore("get", get, own.get);
      restore("getMany", getMany, own.getMany);
      restore("list", list, ownList);
    },
  };
}
