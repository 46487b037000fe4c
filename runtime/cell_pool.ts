/**
 * The host's cells: which cell each program's Worker runs in.
 *
 * A cell hosts the Workers of one trust group only. The group is a name the
 * kernel gives each process (by default its process tree; see
 * `docs/threat_model.md`): a cell opened for one group is never given to
 * another, warm or cold, even once it is empty. A placement that asks to be
 * `alone` gets a cell of its own, used once.
 *
 * Warm cells are started ahead of need with the pool's limits and belong
 * to no group until a placement takes one; the pool then starts another.
 * Each cell also keeps Workers loaded ahead of need, so a placement in a
 * cell already running only waits for its program's import.
 *
 * An empty group cell is kept {@link IDLE_CELL_MS} ms for the next program
 * of its group, then killed.
 *
 * A pool runs at most `maxCells` cells serving groups. A placement that
 * needs another cell when that many run waits, oldest first, until one
 * ends: an empty cell then ends at once rather than idling, and the pool
 * asks its owner to make room (`needRoom`: the kernel parks the blocked
 * processes that kept their Workers). A placement never fails because the
 * pool is full.
 *
 * A program may start while its process is still being made
 * ({@link CellPool.placeEarly}): its Worker runs it at once, and what it
 * says is held until the process is made and takes it over. A new process
 * tree's group is named only then, so its cell is of a group no one else
 * can name meanwhile; a process that is not made after all ends its Worker,
 * and the cell it took for itself with it.
 *
 * @module
 */

import { Cell, type CellOptions, type Slot, type SlotMessage } from "./cell.ts";
import type { StartProgram } from "./guest/cell_protocol.ts";

/** Most cells a pool starts at once to refill its warm cells. */
const REFILL_AT_ONCE = 2;
/** How long after the latest take a pool starts refilling, in ms. */
const REFILL_DELAY_MS = 50;
/** How long an empty cell waits for another program of its group, in ms. */
export const IDLE_CELL_MS = 1_000;

/** Where a program's Worker may run. */
export interface Placement {
  /** Its trust group: only programs of one group share a cell. */
  group: string;
  /** Its limits (it shares a cell whose limits are at least these). */
  limits: CellOptions;
  /** A cell of its own, used once. */
  alone?: boolean;
}

/**
 * A program started before its process is made (see
 * {@link CellPool.placeEarly}).
 */
export interface EarlyStart {
  /**
   * The process is made: its messages go to `onMessage` from now on, those
   * said before first. A cell taken for a group not yet named gets `group`.
   * Resolves with the program's slot; rejects when it could not be placed.
   */
  attach(onMessage: (message: SlotMessage) => void, group: string): Promise<Slot>;
  /** The process was not made: its Worker ends, and a cell taken for it alone too. */
  abandon(): void;
}

/** A row of the pool's cell table. */
export interface CellRow {
  /** The cell's OS pid. */
  osPid: number;
  /** The group it serves; undefined for a warm cell no group took yet. */
  group?: string;
  /** Slots open in it. */
  workers: number;
  /** Most slots it opens. */
  maxWorkers: number;
}

/** Options of a {@link CellPool}. */
export interface CellPoolOptions {
  /** Warm cells kept ready (default 0). */
  warm?: number;
  /** Limits of the warm cells (default: the cell's defaults). */
  limits?: CellOptions;
  /** Most Workers per cell (default 16). */
  maxWorkers?: number;
  /** Workers each cell keeps loaded ahead of need (default 1). */
  warmWorkers?: number;
  /** Most cells serving groups at once (default 16); more placements wait for room. */
  maxCells?: number;
  /** Called when a placement waits for room: the owner frees Workers it can spare. */
  needRoom?: () => void;
}

interface Entry {
  cell?: Cell;
  starting?: Promise<Cell>;
  group?: string;
  limits: CellOptions;
  /** Slots opened or being opened. */
  used: number;
  maxWorkers: number;
  idle?: ReturnType<typeof setTimeout>;
}

/**
 * The cells of a host.
 *
 * @example
 * ```ts ignore
 * const pool = new CellPool({ warm: 2, maxWorkers: 16 });
 * const slot = await pool.place({ group: "tree:1", limits: {} }, (m) => console.log(m));
 * ```
 */
export class CellPool {
  readonly #size: number;
  readonly #limits: CellOptions;
  readonly #maxWorkers: number;
  readonly #warmWorkers: number;
  readonly #maxCells: number;
  readonly #needRoom: () => void;
  /** Placements waiting for room for a new cell, oldest first. */
  readonly #waiting: { admit: () => void; refuse: (error: Error) => void }[] = [];
  /** Room handed to a waiting placement that has not taken it yet. */
  #handedOver = 0;
  /** Set once the host shuts down: a placement that would wait for room is refused. */
  #refusing = false;
  readonly #ready: Cell[] = [];
  readonly #entries = new Set<Entry>();
  #starting = 0;
  #started = 0;
  #taken = 0;
  #refill: ReturnType<typeof setTimeout> | undefined;
  #closed = false;
  #filled: Promise<void> | undefined;
  #onFilled: (() => void) | undefined;
  /** Groups named for programs started before their process was made, counted. */
  #unnamed = 0;

  /** Keeps `options.warm` cells ready. */
  constructor(options: CellPoolOptions = {}) {
    const size = options.warm ?? 0;
    if (!Number.isSafeInteger(size) || size < 0) {
      throw new RangeError(`Cannot keep ${size} warm cells: expected a whole number >= 0`);
    }
    const maxWorkers = options.maxWorkers ?? 16;
    if (!Number.isSafeInteger(maxWorkers) || maxWorkers < 1) {
      throw new RangeError(
        `Cannot run ${maxWorkers} Workers per cell: expected a whole number >= 1`,
      );
    }
    this.#size = size;
    this.#limits = { ...options.limits };
    this.#maxWorkers = maxWorkers;
    this.#warmWorkers = options.warmWorkers ?? 1;
    const maxCells = options.maxCells ?? 16;
    if (!Number.isSafeInteger(maxCells) || maxCells < 1) {
      throw new RangeError(`Cannot run ${maxCells} cells at once: expected a whole number >= 1`);
    }
    this.#maxCells = maxCells;
    this.#needRoom = options.needRoom ?? (() => {});
    this.#fill();
  }

  /** How many warm cells the pool has started in all (each taken one is replaced). */
  get started(): number {
    return this.#started;
  }

  /** How many warm cells placements have taken in all. */
  get taken(): number {
    return this.#taken;
  }

  /** How many warm cells are ready now. */
  get ready(): number {
    return this.#ready.length;
  }

  /** The OS pids of the warm cells ready now, oldest first. */
  get readyPids(): number[] {
    return this.#ready.map((cell) => cell.osPid);
  }

  /** Most Workers per cell. */
  get maxWorkers(): number {
    return this.#maxWorkers;
  }

  /** Most cells serving groups at once. */
  get maxCells(): number {
    return this.#maxCells;
  }

  /** Placements waiting for room for a new cell. */
  get waiting(): number {
    return this.#waiting.length;
  }

  /** The cells that serve a group now. */
  table(): CellRow[] {
    const rows: CellRow[] = [];
    for (const e of this.#entries) {
      if (!e.cell || e.cell.dead) continue;
      rows.push({
        osPid: e.cell.osPid,
        group: e.group,
        workers: e.cell.open,
        maxWorkers: e.maxWorkers,
      });
    }
    return rows;
  }

  /**
   * Opens a Worker for a program placed by `placement`, whose messages go
   * to `onMessage`: in a cell of its group with room, else a warm cell the
   * group takes, else a new cell. With `start`, the program starts as soon
   * as it has its Worker (see `Cell.openSlot`).
   */
  async place(
    placement: Placement,
    onMessage: (message: SlotMessage) => void,
    start?: StartProgram,
  ): Promise<Slot> {
    if (this.#closed) throw new Error("Cannot start a program: the host is shutting down");
    for (let attempt = 1;; attempt++) {
      const entry = await this.#entryWithRoom(placement);
      try {
        const cell = entry.cell ?? await entry.starting!;
        return await cell.openSlot(onMessage, placement.limits, start);
      } catch (error) {
        entry.used--;
        this.#release(entry);
        // A cell that died under us (killed with its group) is not this program's failure.
        if (attempt >= 3 || this.#closed) throw error;
      }
    }
  }

  /**
   * Starts a program whose process is still being made: placed as
   * {@link place} does, its start sent with the open, what it says held
   * until {@link EarlyStart.attach}. Without a group (a new process tree,
   * whose name is its root's pid), it takes a cell of a group named only
   * by `attach`, which no other placement can name meanwhile. When the pool
   * has no room for it now, nothing starts early: `attach` places it then,
   * and a process not made waits for no room.
   */
  placeEarly(
    placement: Omit<Placement, "group"> & { group?: string },
    start: StartProgram,
  ): EarlyStart {
    const named = placement.group === undefined
      ? undefined
      : { ...placement, group: placement.group };
    const room = (named && this.#groupEntryWithRoom(named)) || this.#roomForCell(false);
    if (this.#closed || !room) {
      // It would wait for room: it is placed once its process is made, as any other.
      return {
        attach: (onMessage, group) => this.place({ ...placement, group }, onMessage, start),
        abandon: () => {},
      };
    }
    const unnamed = placement.group === undefined ? `unnamed:${++this.#unnamed}` : undefined;
    const held: SlotMessage[] = [];
    let deliver: ((message: SlotMessage) => void) | undefined;
    const placed = this.place(
      { ...placement, group: placement.group ?? unnamed! },
      (message) => deliver ? deliver(message) : held.push(message),
      start,
    );
    placed.catch(() => {}); // attach or abandon reports it
    return {
      attach: async (onMessage, group) => {
        const slot = await placed;
        if (unnamed !== undefined) this.#name(slot, unnamed, group);
        deliver = onMessage;
        for (const message of held.splice(0)) onMessage(message);
        return slot;
      },
      abandon: () => {
        placed.then((slot) => {
          const entry = this.#entryOf(slot);
          // A cell taken for this program alone ran nothing else: it ends with it.
          const own = unnamed !== undefined &&
            (entry?.group === unnamed || entry?.group === `${unnamed}:alone`);
          if (entry && own) return this.#end(entry);
          slot.close();
          slot.ended.then(() => this.released(slot));
        }, () => {});
      },
    };
  }

  /** Gives the entry of `slot`'s cell, of the group `unnamed`, the group `group`. */
  #name(slot: Slot, unnamed: string, group: string): void {
    const entry = this.#entryOf(slot);
    if (entry?.group === unnamed) entry.group = group;
    else if (entry?.group === `${unnamed}:alone`) entry.group = `${group}:alone`;
  }

  /** The entry of the cell `slot` runs in. */
  #entryOf(slot: Slot): Entry | undefined {
    for (const e of this.#entries) if (e.cell === slot.cell) return e;
    return undefined;
  }

  /**
   * The entry a placement opens its slot in, counted as used: once the pool
   * is full, after the placements that waited before it.
   */
  async #entryWithRoom(placement: Placement): Promise<Entry> {
    let handedOver = false;
    for (;;) {
      const entry = this.#entryFor(placement, handedOver);
      if (handedOver) this.#handedOver--;
      if (entry) {
        // Room handed over but not needed (a cell of its group had a slot) goes to the next.
        if (handedOver) this.#admitWaiting();
        return entry;
      }
      if (this.#refusing) throw new Error("Cannot start a program: the host is shutting down");
      await new Promise<void>((admit, refuse) => {
        this.#waiting.push({ admit, refuse });
        this.#reclaimIdle();
        this.#needRoom();
      });
      handedOver = true;
    }
  }

  /** True when a new cell fits: room for it, and no earlier placement waiting (unless `mine`). */
  #roomForCell(mine: boolean): boolean {
    if (!mine && this.#waiting.length + this.#handedOver > 0) return false;
    return this.#entries.size + this.#handedOver < this.#maxCells + (mine ? 1 : 0);
  }

  /** Hands the room there is to the placements waiting longest. */
  #admitWaiting(): void {
    while (this.#waiting.length && this.#entries.size + this.#handedOver < this.#maxCells) {
      this.#handedOver++;
      this.#waiting.shift()!.admit();
    }
  }

  /** Ends every empty cell now, rather than after its idle time: placements wait for room. */
  #reclaimIdle(): void {
    for (const e of [...this.#entries]) {
      if (e.used === 0) this.#end(e);
    }
    this.#admitWaiting();
  }

  /** Resolves once every warm cell of the pool is ready (for measurements and tests). */
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

  /**
   * Refuses every placement waiting for room, and each that would wait from
   * now on (the host is shutting down: its starts must not wait for cells
   * only the shutdown frees).
   */
  refuseWaiting(): void {
    this.#refusing = true;
    for (const waiter of this.#waiting.splice(0)) {
      waiter.refuse(new Error("Cannot start a program: the host is shutting down"));
    }
  }

  /** Kills every cell and starts no more. */
  async close(): Promise<void> {
    this.#closed = true;
    this.refuseWaiting();
    if (this.#refill !== undefined) clearTimeout(this.#refill);
    const cells = this.#ready.splice(0);
    for (const e of this.#entries) {
      if (e.idle !== undefined) clearTimeout(e.idle);
      const cell = e.cell ?? await e.starting?.catch(() => undefined);
      if (cell) cells.push(cell);
    }
    for (const cell of cells) cell.kill("The host is shutting down");
    await Promise.all(cells.map((cell) => cell.exited));
    this.#settle();
  }

  /**
   * The cell entry a placement opens its slot in, counted as used; undefined
   * when it needs a new cell and there is no room for one (`handedOver`:
   * room was handed to it).
   */
  #entryFor(placement: Placement, handedOver: boolean): Entry | undefined {
    const shared = this.#groupEntryWithRoom(placement);
    if (shared) {
      shared.used++;
      if (shared.idle !== undefined) clearTimeout(shared.idle);
      shared.idle = undefined;
      return shared;
    }
    if (!this.#roomForCell(handedOver)) return undefined;
    const maxWorkers = placement.alone ? 1 : this.#maxWorkers;
    const group = placement.alone ? `${placement.group}:alone` : placement.group;
    const entry: Entry = { group, limits: { ...placement.limits }, used: 1, maxWorkers };
    // A warm cell may run many Workers, so its memory cap is wide: a lone
    // program gets a cell started for it alone.
    const warm = placement.alone ? undefined : this.#take(placement);
    if (warm) entry.cell = warm;
    else {
      entry.starting = Cell.spawn({
        ...placement.limits,
        maxWorkers,
        warmWorkers: this.#warmWorkers,
      });
      entry.starting.then((cell) => {
        entry.cell = cell;
        this.#watch(entry, cell);
      }, () => this.#forget(entry));
    }
    if (entry.cell) this.#watch(entry, entry.cell);
    this.#entries.add(entry);
    return entry;
  }

  /** A cell of the placement's group with room for it, unless it is to be alone. */
  #groupEntryWithRoom(placement: Placement): Entry | undefined {
    if (placement.alone) return undefined;
    for (const e of this.#entries) {
      if (
        e.group === placement.group && e.used < e.maxWorkers && !e.cell?.dead &&
        fits(placement.limits, e.limits)
      ) return e;
    }
    return undefined;
  }

  /** Forgets a cell's entry when the cell ends. */
  #watch(entry: Entry, cell: Cell): void {
    cell.exited.then(() => {
      if (entry.idle !== undefined) clearTimeout(entry.idle);
      this.#forget(entry);
    });
  }

  /** Drops an entry whose cell ended (or never started): its room goes to a waiting placement. */
  #forget(entry: Entry): void {
    if (this.#entries.delete(entry)) this.#admitWaiting();
  }

  /** Ends an empty entry's cell now. */
  #end(entry: Entry): void {
    if (entry.idle !== undefined) clearTimeout(entry.idle);
    entry.idle = undefined;
    this.#forget(entry);
    entry.cell?.kill("The cell is no longer needed");
    // A cell still starting is killed once it is up.
    entry.starting?.then((cell) => cell.kill("The cell is no longer needed"), () => {});
  }

  /**
   * Releases a slot of `entry`'s cell: an entry with nothing open is killed
   * after {@link IDLE_CELL_MS}, or at once when it was a cell of its own.
   */
  #release(entry: Entry): void {
    if (entry.used > 0 || this.#closed) return;
    // Placements wait for room: an empty cell gives its room up at once.
    if (entry.maxWorkers === 1 || this.#waiting.length) return this.#end(entry);
    entry.idle = setTimeout(() => {
      entry.idle = undefined;
      if (entry.used === 0) this.#end(entry);
    }, IDLE_CELL_MS);
  }

  /** Called by the owner of a slot once it has ended. */
  released(slot: Slot): void {
    const entry = this.#entryOf(slot);
    if (entry) {
      entry.used--;
      this.#release(entry);
    }
  }

  /** A warm cell for a placement, or undefined. Starts a replacement. */
  #take(placement: Placement): Cell | undefined {
    if (!fits(placement.limits, this.#limits)) return undefined;
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

  #fill(): void {
    while (
      !this.#closed && this.#ready.length + this.#starting < this.#size &&
      this.#starting < REFILL_AT_ONCE
    ) {
      this.#starting++;
      this.#started++;
      Cell.spawn({
        ...this.#limits,
        maxWorkers: this.#maxWorkers,
        warmWorkers: this.#warmWorkers,
      }).then((cell) => {
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
        // a loop: placements start cold cells until the next take refills.
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

/**
 * True when a program with `limits` may run in a cell started with `cell`:
 * its memory limit and largest message are at most the cell's (a slot
 * enforces its own below them). Output is kept per cell.
 */
function fits(limits: CellOptions, cell: CellOptions): boolean {
  return (limits.memoryMb ?? 256) <= (cell.memoryMb ?? 256) &&
    (limits.maxMessageBytes ?? 1 << 20) <= (cell.maxMessageBytes ?? 1 << 20);
}
