/**
 * Warm cells: a few cells started ahead of need, each with its Worker up
 * and the libc loaded, so a process that starts (a spawn, a wake-up, a
 * recovery) only waits for its program's import. A cell still runs one
 * process, ever: a taken cell is never returned, and the pool starts
 * another in its place.
 *
 * Only processes with the pool's limits (memory, message and output sizes)
 * take a warm cell; any other starts a cold one.
 *
 * @module
 */

import { Cell, type CellOptions } from "./cell.ts";

/** Most cells a pool starts at once. */
const REFILL_AT_ONCE = 2;
/** How long after the latest take a pool starts refilling, in ms. */
const REFILL_DELAY_MS = 50;

/**
 * A pool of ready cells.
 *
 * @example
 * ```ts ignore
 * const pool = new CellPool(4, { memoryMb: 256 });
 * const cell = pool.take({ memoryMb: 256 }) ?? await Cell.spawn(undefined, { memoryMb: 256 });
 * cell.attach((message) => console.log(message));
 * ```
 */
export class CellPool {
  readonly #size: number;
  readonly #options: CellOptions;
  readonly #ready: Cell[] = [];
  #starting = 0;
  #started = 0;
  #taken = 0;
  #refill: ReturnType<typeof setTimeout> | undefined;
  #closed = false;
  #filled: Promise<void> | undefined;
  #onFilled: (() => void) | undefined;

  /** Keeps `size` cells with `options` ready (none when `size` is 0). */
  constructor(size: number, options: CellOptions) {
    if (!Number.isSafeInteger(size) || size < 0) {
      throw new RangeError(`Cannot keep ${size} warm cells: expected a whole number >= 0`);
    }
    this.#size = size;
    this.#options = { ...options };
    this.#fill();
  }

  /** How many cells the pool has started in all (each taken one is replaced). */
  get started(): number {
    return this.#started;
  }

  /** How many cells processes have taken from the pool in all. */
  get taken(): number {
    return this.#taken;
  }

  /** How many cells are ready now. */
  get ready(): number {
    return this.#ready.length;
  }

  /** The OS pids of the cells ready now, oldest first. */
  get readyPids(): number[] {
    return this.#ready.map((cell) => cell.osPid);
  }

  /**
   * A ready cell for a process with `options`, or undefined when none is
   * ready or the limits differ from the pool's. Starts a replacement.
   */
  take(options: CellOptions): Cell | undefined {
    if (!sameLimits(options, this.#options)) return undefined;
    const cell = this.#ready.shift();
    if (cell) this.#taken++;
    // Replacements start once takes pause, so a burst of starts is not
    // starved of CPU by the cells it triggers.
    if (this.#refill !== undefined) clearTimeout(this.#refill);
    this.#refill = setTimeout(() => {
      this.#refill = undefined;
      this.#fill();
    }, REFILL_DELAY_MS);
    return cell;
  }

  /** Resolves once every cell of the pool is ready (for measurements and tests). */
  full(): Promise<void> {
    if (this.#ready.length >= this.#size || this.#closed) return Promise.resolve();
    if (this.#refill !== undefined) {
      clearTimeout(this.#refill);
      this.#refill = undefined;
      this.#fill();
    }
    this.#filled ??= new Promise((resolve) => this.#onFilled = resolve);
    return this.#filled;
  }

  /** Kills the ready cells and starts no more. */
  async close(): Promise<void> {
    this.#closed = true;
    if (this.#refill !== undefined) clearTimeout(this.#refill);
    const cells = this.#ready.splice(0);
    for (const cell of cells) cell.kill("The host is shutting down");
    await Promise.all(cells.map((cell) => cell.exited));
    this.#settle();
  }

  #fill(): void {
    while (
      !this.#closed && this.#ready.length + this.#starting < this.#size &&
      this.#starting < REFILL_AT_ONCE
    ) {
      this.#starting++;
      this.#started++;
      Cell.spawn(undefined, this.#options).then((cell) => {
        this.#starting--;
        if (this.#closed) return cell.kill("The host is shutting down");
        this.#ready.push(cell);
        this.#fill();
        // A warm cell that dies while it waits (killed from outside) is replaced.
        cell.exited.then(() => {
          const at = this.#ready.indexOf(cell);
          if (at >= 0) {
            this.#ready.splice(at, 1);
            this.#fill();
          }
        });
        this.#settle();
      }, () => {
        // A cell that cannot start now (a loaded machine) is not retried in
        // a loop: processes start cold cells until the next take refills.
        this.#starting--;
        this.#settle();
      });
    }
  }

  #settle(): void {
    if (this.#onFilled && (this.#ready.length >= this.#size || this.#closed || !this.#starting)) {
      this.#onFilled();
      this.#onFilled = undefined;
      this.#filled = undefined;
    }
  }
}

function sameLimits(a: CellOptions, b: CellOptions): boolean {
  return a.memoryMb === b.memoryMb && a.maxMessageBytes === b.maxMessageBytes &&
    a.maxOutputBytes === b.maxOutputBytes;
}
