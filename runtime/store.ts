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
    const kv = await Deno.openKv(path);
    return { kv, path, close: () => kv.close() };
  } catch (error) {
    throw new Error(`Cannot open store "${where}": ${(error as Error).message.split("\n")[0]}`);
  }
}
