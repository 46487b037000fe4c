/**
 * Makes a program's clock and randomness replay-safe. The clock reads the
 * journal time of the latest syscall reply (so a replay sees the times the
 * first run saw), never the wall clock; randomness comes from a PRNG seeded
 * per process. `crypto.getRandomValues` and `crypto.randomUUID` are
 * therefore predictable from the seed: a program that needs secrets must
 * not make them itself.
 *
 * @example
 * ```ts
 * import { seededRandom } from "./determinism.ts";
 * const a = seededRandom(7), b = seededRandom(7);
 * console.assert(a() === b());
 * ```
 *
 * @module
 */

/** The globals {@link determinize} replaces; in the Worker, `globalThis`. */
export interface DeterminismScope {
  /** Replaced by a `Date` whose `now()` and no-argument constructor read the replay clock. */
  Date: DateConstructor;
  /** Its `random` is replaced by the seeded PRNG. */
  Math: { random(): number };
  /** Its `now` is replaced by the replay clock's time since the start. */
  performance: { now(): number };
  /** Its `getRandomValues` and `randomUUID` are replaced by seeded ones. */
  crypto: Pick<Crypto, "getRandomValues" | "randomUUID">;
}

/** The replay clock of a determinized scope. */
export interface ReplayClock {
  /** The clock's time, in ms since the epoch. */
  now(): number;
  /** Moves the clock to `at` (the journal time of a reply); it never goes back. */
  advance(at: number): void;
}

/**
 * A PRNG (mulberry32) of numbers in [0, 1); the same seed gives the same
 * sequence.
 */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return (): number => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Replaces the clock and randomness of `scope` for good (the properties are
 * made non-configurable and read-only). The clock starts at `epoch`, the
 * process's start time; randomness is seeded with `seed`.
 */
export function determinize(scope: DeterminismScope, epoch: number, seed: number): ReplayClock {
  let clock = epoch;
  const next = seededRandom(seed);
  const RealDate = scope.Date;
  class ReplayDate extends RealDate {
    constructor(...args: unknown[]) {
      super(...((args.length ? args : [clock]) as [string]));
    }
    static override now(): number {
      return clock;
    }
  }
  const define = (target: object, name: string, value: unknown) =>
    Object.defineProperty(target, name, { value, configurable: false, writable: false });
  define(scope, "Date", ReplayDate);
  define(scope.Math, "random", next);
  define(scope.performance, "now", () => clock - epoch);
  define(
    scope.crypto,
    "getRandomValues",
    <T extends ArrayBufferView | null>(array: T): T => {
      if (array) {
        const bytes = new Uint8Array(array.buffer, array.byteOffset, array.byteLength);
        for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(next() * 256);
      }
      return array;
    },
  );
  define(scope.crypto, "randomUUID", () => {
    const b = scope.crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${
      h.slice(20)
    }`;
  });
  return {
    now: () => clock,
    advance(at: number): void {
      if (at > clock) clock = at;
    },
  };
}
