/**
 * Private, throwaway Deno caches (`DENO_DIR`) for the subprocesses that
 * handle untrusted code: cells, and the `deno check` of a JIT tool. Deno
 * writes into its cache whatever such code makes it load (the emit of every
 * `data:` or `blob:` TypeScript module, V8 code cache and module analysis
 * entries, Cache API storage), with no quota. In the host's own cache that
 * would be a write to the host's disk that no capability allows, kept
 * forever; here it goes to a directory that is removed when the subprocess
 * ends.
 *
 * The paths through which untrusted code grows a cache are also blocked
 * before the subprocess starts: a file stands where Deno would create the
 * `gen/data` and `gen/blob` emit directories and the origin storage
 * (`location_data`), and a directory where it would create its SQLite
 * caches. Deno then keeps those in memory (measured on Deno 2.9.6: a cell
 * starts as fast as with a shared cache, and 400 imported `data:` modules
 * leave nothing on disk). What is left to write is the emit of the trusted
 * modules the subprocess starts with.
 *
 * @module
 */

import { join } from "node:path";
import { makeHostTempDir } from "./host_children.ts";

/** Where Deno would create a directory of emits or storage: a file stands there. */
const BLOCKED_DIRS = ["gen/data", "gen/blob", "location_data"];
/** Where Deno would create a growing SQLite cache: a directory stands there. */
const BLOCKED_FILES = [
  "v8_code_cache_v2",
  "dep_analysis_cache_v2",
  "node_analysis_cache_v2",
  "check_cache_v2",
  "fast_check_cache_v2",
];

/**
 * Creates a private Deno cache directory (see the module documentation).
 * The caller removes it with {@link removePrivateDenoDir} once the
 * subprocess has ended.
 *
 * @example
 * ```ts ignore
 * const denoDir = await makePrivateDenoDir();
 * try {
 *   await new Deno.Command(Deno.execPath(), { args, clearEnv: true, env: { DENO_DIR: denoDir } })
 *     .output();
 * } finally {
 *   await removePrivateDenoDir(denoDir);
 * }
 * ```
 */
export async function makePrivateDenoDir(): Promise<string> {
  const dir = await makeHostTempDir("libos-deno-");
  try {
    // Made side by side (the blockers under `gen` once it exists): the
    // directory is complete when this resolves, in three rounds of file
    // operations instead of one per entry.
    await settleAll([
      Deno.mkdir(join(dir, "gen")).then(() =>
        settleAll(
          BLOCKED_DIRS.filter((path) => path.startsWith("gen/"))
            .map((path) => Deno.writeFile(join(dir, path), new Uint8Array())),
        )
      ),
      ...BLOCKED_DIRS.filter((path) => !path.startsWith("gen/"))
        .map((path) => Deno.writeFile(join(dir, path), new Uint8Array())),
      ...BLOCKED_FILES.map((path) => Deno.mkdir(join(dir, path))),
    ]);
  } catch (error) {
    await removePrivateDenoDir(dir);
    throw error;
  }
  return dir;
}

/** Waits for every operation to end, then throws the first failure (none is left running). */
async function settleAll(operations: Promise<unknown>[]): Promise<void> {
  const failed = (await Promise.allSettled(operations)).find((result) =>
    result.status === "rejected"
  );
  if (failed) throw (failed as PromiseRejectedResult).reason;
}

/** Removes a directory made by {@link makePrivateDenoDir}; a missing one is fine. */
export async function removePrivateDenoDir(dir: string): Promise<void> {
  await Deno.remove(dir, { recursive: true }).catch(() => {});
}
