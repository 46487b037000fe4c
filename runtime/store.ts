/**
 * The store: Deno KV behind one small interface. A local SQLite file by
 * default, or a KV Connect URL when several hosts share one store. Nothing
 * here depends on `kv.enqueue`, which KV Connect does not offer.
 *
 * Key prefixes are owned by the module that writes them; `docs/storage.md`
 * lists them all.
 *
 * @module
 */

import { dirname, resolve } from "node:path";

/** An open store. */
export interface Store {
  /** The underlying Deno KV handle. */
  readonly kv: Deno.Kv;
  /**
   * The absolute path of the KV file, or undefined for a URL or an in-memory
   * store. The filesystem provider keeps this path and its directory out of
   * every grantable scope.
   */
  readonly path?: string;
  /** Closes the handle. */
  close(): void;
}

/** Options for {@link openStore}. */
export interface OpenStoreOptions {
  /** Create the parent directory of a file path when missing (default true). */
  createDir?: boolean;
}

/**
 * How long an operation on a store file waits, in all, while another OS
 * process holds the file's write lock (SQLite answers "database is
 * locked" at once instead of waiting).
 */
const LOCKED_WAIT_MS = 30_000;

/** True for SQLite's refusal while another connection writes: nothing was applied. */
function _isLocked(error: unknown): boolean {
  return error instanceof Error && /database is locked/i.test(error.message);
}

/**
 * `attempt()`, tried again after a short randomized pause while the store
 * file is locked, until {@link LOCKED_WAIT_MS} have passed. The first try
 * costs nothing more than a rejection handler.
 */
function _whileLocked<T>(attempt: () => Promise<T>, deadline?: number): Promise<T> {
  return attempt().catch(async (error) => {
    const until = deadline ?? Date.now() + LOCKED_WAIT_MS;
    if (!_isLocked(error) || Date.now() > until) throw error;
    await new Promise((resolve) => setTimeout(resolve, 1 + Math.random() * 16));
    return _whileLocked(attempt, until);
  });
}

/** An atomic operation on a shared store file whose commit waits out the file's lock. */
class _SharedAtomic {
  #op: Deno.AtomicOperation;

  constructor(op: Deno.AtomicOperation) {
    this.#op = op;
  }

  check(...checks: Deno.AtomicCheck[]): this {
    this.#op.check(...checks);
    return this;
  }

  mutate(...mutations: Deno.KvMutation[]): this {
    this.#op.mutate(...mutations);
    return this;
  }

  sum(key: Deno.KvKey, n: bigint): this {
    this.#op.sum(key, n);
    return this;
  }

  min(key: Deno.KvKey, n: bigint): this {
    this.#op.min(key, n);
    return this;
  }

  max(key: Deno.KvKey, n: bigint): this {
    this.#op.max(key, n);
    return this;
  }

  set(key: Deno.KvKey, value: unknown, options?: { expireIn?: number }): this {
    this.#op.set(key, value, options);
    return this;
  }

  delete(key: Deno.KvKey): this {
    this.#op.delete(key);
    return this;
  }

  enqueue(value: unknown, options?: Parameters<Deno.AtomicOperation["enqueue"]>[1]): this {
    this.#op.enqueue(value, options);
    return this;
  }

  commit(): Promise<Deno.KvCommitResult | Deno.KvCommitError> {
    return _whileLocked(() => this.#op.commit());
  }
}

/** A list over a shared store file whose reads wait out the file's lock. */
class _SharedList<T> implements AsyncIterableIterator<Deno.KvEntry<T>> {
  #iterator: Deno.KvListIterator<T>;

  constructor(iterator: Deno.KvListIterator<T>) {
    this.#iterator = iterator;
  }

  get cursor(): string {
    return this.#iterator.cursor;
  }

  next(): Promise<IteratorResult<Deno.KvEntry<T>, undefined>> {
    return _whileLocked(() => this.#iterator.next());
  }

  [Symbol.asyncIterator](): this {
    return this;
  }
}

/**
 * Makes `kv`, a handle on a store file that other OS processes (a host,
 * CLI verbs) write too, try again every read, write and commit that SQLite
 * refuses because another process holds the write lock (see
 * {@link _whileLocked}). A refused commit was rolled back, so trying it
 * again applies it once.
 */
function _shareFileKv(kv: Deno.Kv): Deno.Kv {
  const { get, getMany, set, delete: remove, list, atomic } = Deno.Kv.prototype;
  const shared = kv as { -readonly [K in keyof Deno.Kv]: Deno.Kv[K] };
  shared.get =
    ((...args: Parameters<Deno.Kv["get"]>) => _whileLocked(() => get.apply(kv, args))) as Deno.Kv[
      "get"
    ];
  shared.getMany =
    ((...args: Parameters<Deno.Kv["getMany"]>) =>
      _whileLocked(() => getMany.apply(kv, args))) as Deno.Kv["getMany"];
  shared.set = (...args) => _whileLocked(() => set.apply(kv, args));
  shared.delete = (...args) => _whileLocked(() => remove.apply(kv, args));
  shared.list =
    ((...args: Parameters<Deno.Kv["list"]>) =>
      new _SharedList(list.apply(kv, args))) as unknown as Deno.Kv["list"];
  shared.atomic = () => new _SharedAtomic(atomic.call(kv)) as unknown as Deno.AtomicOperation;
  return kv;
}

/** What `--kv` accepts, for error messages. */
const KNOWN_LOCATIONS = 'a file path, ":memory:", or an http:// or https:// KV Connect URL';

/**
 * The URL scheme `location` starts with (`postgres:`, `file:`), or undefined
 * for a plain path. A drive letter on Windows (`C:\`) is a path.
 */
function _schemeOf(location: string): string | undefined {
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(location)?.[1];
  if (scheme === undefined) return undefined;
  if (Deno.build.os === "windows" && /^[a-z]:[\\/]/i.test(location)) return undefined;
  return scheme.toLowerCase();
}

/**
 * Opens a store: `":memory:"` for a throwaway one, an `http(s)://` KV Connect
 * URL, or a file path (default `.libos/libos.db` under the current directory,
 * or the `LIBOS_KV` environment variable when set). Any other URL scheme
 * (`postgres://…`, `file:…`, `redis:…`) is refused before anything is
 * created on disk; a file whose name has a colon is reached as `./name`.
 *
 * @example
 * ```ts
 * import { openStore } from "./store.ts";
 * const store = await openStore(":memory:");
 * await store.kv.set(["hello"], "world");
 * store.close();
 * ```
 */
export async function openStore(
  location?: string,
  options: OpenStoreOptions = {},
): Promise<Store> {
  const where = location ?? Deno.env.get("LIBOS_KV") ?? ".libos/libos.db";
  if (where === ":memory:") {
    const kv = await Deno.openKv(":memory:");
    return { kv, close: () => kv.close() };
  }
  if (/^https?:\/\//i.test(where)) {
    const kv = await Deno.openKv(where);
    return { kv, close: () => kv.close() };
  }
  const scheme = _schemeOf(where);
  if (scheme !== undefined) {
    // A password in the URL stays out of the message.
    const shown = where.replace(/^([^/]*\/\/[^/@:]*):[^/@]*@/, "$1:***@");
    throw new Error(
      `Cannot open store "${shown}": unsupported scheme "${scheme}:"; expected ${KNOWN_LOCATIONS}`,
    );
  }
  const path = resolve(where);
  try {
    if (options.createDir ?? true) {
      await Deno.mkdir(dirname(path), { recursive: true });
    }
    const kv = await _whileLocked(() => Deno.openKv(path));
    return { kv: _shareFileKv(kv), path, close: () => kv.close() };
  } catch (error) {
    throw new Error(`Cannot open store "${where}": ${(error as Error).message.split("\n")[0]}`);
  }
}
