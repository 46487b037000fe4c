/**
 * What a process runs, by its image: the agent loop, or its entry module.
 * An entry module whose TypeScript is only types is handed to its Worker as
 * JavaScript once this host has erased its types (`type_erasure.ts`), so
 * the Worker transpiles nothing; until then, and for a module whose
 * TypeScript means something at run time, it is its TypeScript as stored.
 *
 * @module
 */

import type { ProgramEntry } from "./guest/cell_protocol.ts";
import type { RegisteredImage } from "./image.ts";
import { eraseTypes } from "./type_erasure.ts";

/** Most entry modules a host keeps the JavaScript of; past it the copies are dropped. */
const KNOWN_JAVASCRIPT = 256;

/**
 * Largest entry module erased, in UTF-16 code units: erasing parses it
 * twice on the host's thread (some 4 ms per KiB), which a larger one would
 * hold up; it runs as TypeScript.
 */
export const MAX_ERASED_SOURCE = 16 * 1024;

/**
 * The program entries of a host's images.
 *
 * @example
 * ```ts ignore
 * const entries = new ProgramEntries();
 * const entry = entries.entryOf(image); // TypeScript the first time, JavaScript once erased
 * ```
 */
export class ProgramEntries {
  /**
   * The JavaScript of entry modules by entry digest, once erased on this
   * host (null: the module's TypeScript is not only types).
   */
  #javascript = new Map<string, string | null>();
  /** Erasures under way, by entry digest. */
  #erasing = new Map<string, Promise<void>>();

  /**
   * What a process of `image` runs: the agent loop; or its entry module,
   * as JavaScript once this host has erased its types, else as stored (and
   * the erasure starts, for the processes after this one).
   */
  entryOf(image: RegisteredImage): ProgramEntry {
    if (image.image.entry === "libos:agent") {
      return { kind: "agent", config: { system: image.image.system, tools: image.image.tools } };
    }
    const source = image.entrySource ?? "";
    const javascript = image.entryDigest === undefined
      ? null
      : this.#javascript.get(image.entryDigest);
    if (javascript) return { kind: "module", source: javascript, javascript: true };
    if (javascript === undefined) this.erase(image);
    return { kind: "module", source };
  }

  /** Erases the types of `image`'s entry module, once per host and entry; resolves when done. */
  erase(image: RegisteredImage): Promise<void> {
    const digest = image.entryDigest;
    if (digest === undefined || this.#javascript.has(digest)) return Promise.resolve();
    if ((image.entrySource ?? "").length > MAX_ERASED_SOURCE) {
      this.#javascript.set(digest, null);
      return Promise.resolve();
    }
    let erasing = this.#erasing.get(digest);
    if (!erasing) {
      erasing = eraseTypes(image.entrySource ?? "").then((javascript) => {
        if (this.#javascript.size >= KNOWN_JAVASCRIPT) this.#javascript.clear();
        this.#javascript.set(digest, javascript ?? null);
      }).finally(() => this.#erasing.delete(digest));
      this.#erasing.set(digest, erasing);
    }
    return erasing;
  }
}
