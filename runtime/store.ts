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
 * Opens a store: `":memory:"` for a throwaway one, an `http(s)://` KV Connect
 * URL, or a file path (default `.libos/libos.db` under the current directory,
 * or the `LIBOS_KV` environment variable when set).
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
  if (/^https?:\/\//.test(where)) {
    const kv = await Deno.openKv(where);
    return { kv, close: () => kv.close() };
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
