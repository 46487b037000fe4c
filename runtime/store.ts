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

/** Runs `attempt` again, after a short randomized pause, while the store file is locked. */
async function _whileLocked<T>(attempt: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + LOCKED_WAIT_MS;
  for (let pause = 1;; pause = Math.min(pause * 2, 32)) {
    try {
      return await attempt();
    } catch (error) {
      if (!_isLocked(error) || Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, pause * (0.5 + Math.random())));
    }
  }
}

/**
 * A KV handle over a store file that other OS processes (a host, CLI
 * verbs) write too: every read, write and commit that SQLite refuses
 * because another process holds the write lock is tried again, up to
 * {@link LOCKED_WAIT_MS}. A refused commit was rolled back, so trying it
 * again applies it once.
 */
function _sharedFileKv(kv: Deno.Kv): Deno.Kv {
  const retried = new Set<PropertyKey>(["get", "getMany", "set", "delete"]);
  return new Proxy(kv, {
    get(target, property) {
      if (property === "atomic") {
        return () => {
          const op = target.atomic();
          const commit = op.commit.bind(op);
          op.commit = () => _whileLocked(commit);
          return op;
        };
      }
      if (property === "list") {
        return (...args: Parameters<Deno.Kv["list"]>) => {
          const iterator = target.list(...args);
          const next = iterator.next.bind(iterator);
          const patched: typeof iterator = new Proxy(iterator, {
            get(it, key) {
              if (key === "next") return () => _whileLocked(next);
              if (key === Symbol.asyncIterator) return () => patched;
              const value = Reflect.get(it, key, it);
              return typeof value === "function" ? value.bind(it) : value;
            },
          });
          return patched;
        };
      }
      const value = Reflect.get(target, property, target);
      if (typeof value !== "function") return value;
      const bound = value.bind(target);
      return retried.has(property)
        ? (...args: unknown[]) => _whileLocked(() => bound(...args))
        : bound;
    },
  });
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
    return { kv: _sharedFileKv(kv), path, close: () => kv.close() };
  } catch (error) {
    throw new Error(`Cannot open store "${where}": ${(error as Error).message.split("\n")[0]}`);
  }
}
