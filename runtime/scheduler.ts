/**
 * The scheduler: the run queue of runnable processes and the executions
 * running, and
 * which processes this host looks after — those it started, or every one
 * once it serves the store — catching up with the transitions other
 * kernels commit to the store: an execution whose process left `running`
 * elsewhere stops, a process made runnable elsewhere starts here.
 *
 * The run queue admits runnable processes oldest first, at the rate the
 * host can run them: at most `maxStarting` starts in flight (a start ends
 * once its program is in its Worker) and at most `maxRunning` programs
 * holding a Worker (starting, running, or blocked and lingering). A process
 * leaving its Worker admits the next one in line; one ended or paused while
 * it queues leaves the queue. Recovery of many runnable processes goes
 * through it like every other start, so a host resumes them at the rate
 * Workers start rather than starting them all at once.
 *
 * It builds no execution itself: its host prepares and launches one (see
 * {@link SchedulerHost}), and it decides when.
 *
 * @module
 */

import type { EarlyStart } from "./cell_pool.ts";
import type { JournalRecord } from "../broker/journal.ts";
import { END_STATES, type ProcessRecord, type ProcessTable } from "./process_table.ts";

/** A running program, as the scheduler drives it. */
export interface ScheduledExecution {
  /** The process it runs. */
  readonly pid: number;
  /** The journal seq of the call its program is blocked in while it lingers. */
  readonly waitingSeq: number | undefined;
  /** Stops the program's Worker (aborting calls in flight with `abortCalls`). */
  stop(reason: string, options?: { abortCalls?: boolean }): void;
  /** Resolves once the Worker is gone and no call of it is in flight. */
  settled(): Promise<void>;
  /** Resolves once the Worker is gone. */
  readonly done: Promise<void>;
  /** Tells the execution its process has ended, so it reports nothing more. */
  markEnded(): void;
  /** Answers the blocked call from its finished journal record in place; false when it cannot. */
  wake(recorded: JournalRecord, current: ProcessRecord): Promise<boolean>;
}

/** A place among the starts held for a process being made (see `Scheduler.admit`). */
export interface Admission {
  /**
   * Runs the process made `running` in the place held. `fresh`: it was made
   * in that very commit and has run nowhere, so it has no journal and no
   * checkpoint to read. `early`: its program, started while it was being
   * made, which its run takes over (or ends, when it does not run here).
   */
  launch(record: ProcessRecord, options?: { fresh?: boolean; early?: EarlyStart }): void;
  /** Gives the place back: the process was not made. */
  cancel(): void;
}

/** An execution ready to start. */
export interface Launch<E> {
  /** The execution, registered as the process's before it starts. */
  execution: E;
  /** Starts its program. */
  start(): Promise<void>;
}

/** What the scheduler needs from its host. */
export interface SchedulerHost<E extends ScheduledExecution> {
  /** The process table. */
  readonly processes: Pick<
    ProcessTable,
    "get" | "update" | "list" | "subscribe" | "transition" | "follow" | "unfollow"
  >;
  /** The parked calls: their timer runs once a process is started. */
  readonly waits: { start(): void };
  /** The clock. */
  readonly now: () => number;
  /** Ends a process that could not run as `failed`. */
  finish(pid: number, state: "failed", outcome: { error: { message: string } }): Promise<void>;
  /**
   * Gets ready to run a runnable process (not yet claimed: what fails here,
   * such as a missing image, fails it from `runnable`), and returns what
   * launches it once it is `running`.
   */
  prepare(
    record: ProcessRecord,
    options?: { fresh?: boolean; early?: EarlyStart },
  ): Promise<(running: ProcessRecord) => Promise<Launch<E>>>;
  /** The journal record of call `seq` of `pid`, if any (what a wake-up answers with). */
  waitRecord(pid: number, seq: number): Promise<JournalRecord | undefined>;
}

/** Settings of a {@link Scheduler}. */
export interface SchedulerOptions {
  /** Most programs holding a Worker at once (starting, running or lingering); more queue. */
  maxRunning: number;
  /** Most starts in flight at once (default {@link DEFAULT_MAX_STARTING}); more queue. */
  maxStarting?: number;
  /** Whether this host runs processes at all (a CLI verb's kernel does not). */
  runs: boolean;
  /** How long a blocked process keeps its Worker, in ms (0: it parks at once). */
  waitGraceMs: number;
}

/**
 * Starts in flight at once by default: enough to keep a cell's Worker
 * starts busy on a small host, few enough that a burst of starts does not
 * starve the programs already started of CPU.
 */
export const DEFAULT_MAX_STARTING = 16;

/** How far the run queue has got, as `libos status` shows it. */
export interface RunQueueStatus {
  /** Runnable processes waiting for their turn. */
  queued: number;
  /** Starts in flight. */
  starting: number;
  /** Programs holding a Worker (starting, running or lingering). */
  running: number;
  /** Blocked processes that keep their Worker for now. */
  lingering: number;
  /** Most starts in flight at once. */
  maxStarting: number;
  /** Most programs holding a Worker at once. */
  maxRunning: number;
}

/**
 * The scheduler of one kernel.
 *
 * @example
 * ```ts ignore
 * const scheduler = new Scheduler(host, { maxRunning: 256, runs: true, waitGraceMs: 1000 });
 * scheduler.start(pid); // runs now, or once its turn in the run queue comes
 * await scheduler.close();
 * await scheduler.shutdown();
 * ```
 */
export class Scheduler<E extends ScheduledExecution> {
  /** Whether this host runs processes. */
  readonly runs: boolean;
  #host: SchedulerHost<E>;
  #maxRunning: number;
  #maxStarting: number;
  #executions = new Map<number, E>();
  #queue: number[] = [];
  #queued = new Set<number>();
  #starting = new Set<number>();
  /** Places held by {@link admit} for processes being made. */
  #admitted = 0;
  #runs = new Set<Promise<void>>();
  #closed = false;
  /** Set by {@link serve}: every process of the store is this host's to run. */
  #serving = false;
  /** Processes this host started and that have not ended. */
  #hosted = new Set<number>();
  /**
   * Processes launched in the commit that made them, until their execution
   * is registered: true once a transition of theirs was seen meanwhile
   * (see {@link #launch}).
   */
  #fresh = new Map<number, boolean>();
  #watchingFresh = false;
  #reacting = new Set<Promise<void>>();
  /** Blocked processes that keep their Worker for a while, by pid. */
  #lingering = new Map<number, { execution: E; timer: ReturnType<typeof setTimeout> }>();
  /** How long a blocked process keeps its Worker, in ms. */
  readonly waitGraceMs: number;

  /** A scheduler over `host`. */
  constructor(host: SchedulerHost<E>, options: SchedulerOptions) {
    this.#host = host;
    this.#maxRunning = positive(options.maxRunning, "programs running");
    this.#maxStarting = positive(options.maxStarting ?? DEFAULT_MAX_STARTING, "starts in flight");
    this.runs = options.runs;
    this.waitGraceMs = options.waitGraceMs;
  }

  /** True once {@link close} began. */
  get closed(): boolean {
    return this.#closed;
  }

  /** How far the run queue has got. */
  get runQueue(): RunQueueStatus {
    return {
      queued: this.#queue.length,
      starting: this.#starting.size,
      running: this.#running(),
      lingering: this.#lingering.size,
      maxStarting: this.#maxStarting,
      maxRunning: this.#maxRunning,
    };
  }

  /**
   * Puts a runnable process in the run queue: it runs in a Worker once its
   * turn comes (see the module doc). Returns at once. A process whose
   * previous Worker is still stopping starts once that one is gone.
   */
  start(pid: number): void {
    if (this.#closed || !this.runs || this.#queued.has(pid)) return;
    if (this.#lingering.has(pid)) return this.#wake(pid);
    this.#hosted.add(pid);
    this.#host.waits.start();
    this.#queued.add(pid);
    this.#queue.push(pid);
    this.#pump();
  }

  /**
   * Holds a place among the starts for a process about to be made already
   * `running` (its create commit is its claim, see `ProcessTable.create`):
   * undefined when it would have to queue (this host runs no processes, is
   * closed, others wait, or the bounds are reached), and the process is then
   * made `runnable` and started as usual. The place counts against the
   * bounds until `launch` runs the process made or `cancel` gives it back
   * (its creation failed).
   */
  admit(): Admission | undefined {
    if (
      this.#closed || !this.runs || this.#queue.length ||
      this.#starting.size + this.#admitted >= this.#maxStarting ||
      this.#running() >= this.#maxRunning
    ) return undefined;
    this.#admitted++;
    let held = true;
    const release = (): boolean => {
      if (!held) return false;
      held = false;
      this.#admitted--;
      return true;
    };
    return {
      launch: (record, options = {}) => {
        if (!release()) return options.early?.abandon();
        const pid = record.pid;
        this.#hosted.add(pid);
        this.#starting.add(pid);
        if (!this.#closed) this.#host.waits.start();
        if (options.fresh) this.#watchFresh(pid);
        const launched = this.#launchClaimed(record, options.fresh === true, options.early);
        this.#track(pid, launched);
        launched.finally(() => this.#fresh.delete(pid));
      },
      cancel: () => {
        if (release()) this.#pump();
      },
    };
  }

  /**
   * Notes every transition of `pid`, launched in the commit that made it,
   * from now until its execution is registered. Called in the same turn as
   * that commit resolved, so no transition committed after it is missed:
   * this host's own are told as they commit, and others' as the feed brings
   * them (one it brings later finds the execution registered).
   */
  #watchFresh(pid: number): void {
    if (!this.#watchingFresh) {
      this.#watchingFresh = true;
      this.#host.processes.subscribe((_, event) => {
        if (this.#fresh.has(event.pid)) this.#fresh.set(event.pid, true);
      });
    }
    this.#fresh.set(pid, false);
  }

  /** True while `pid` is blocked and keeps its Worker (see {@link linger}). */
  isLingering(pid: number): boolean {
    return this.#lingering.has(pid);
  }

  /** The execution running `pid`, if any. */
  executionOf(pid: number): E | undefined {
    return this.#executions.get(pid);
  }

  /** Stops the cell of `pid`, if it has one, and waits until it is gone. */
  async stopExecution(pid: number): Promise<void> {
    const execution = this.#executions.get(pid);
    if (!execution) return;
    execution.stop("The operator stopped the process");
    await execution.settled();
  }

  /**
   * Notes that `pid` is ending: its execution, if any, reports nothing
   * more, and it is no longer this host's to start again.
   */
  ending(pid: number): void {
    this.#executions.get(pid)?.markEnded();
    this.#hosted.delete(pid);
    this.#dequeue(pid);
  }

  /**
   * Takes `pid` out of the run queue, if it waits there (it was paused):
   * it queues again, at the back, when it is started again.
   */
  dequeue(pid: number): void {
    this.#dequeue(pid);
  }

  #dequeue(pid: number): void {
    if (!this.#queued.delete(pid)) return;
    const at = this.#queue.indexOf(pid);
    if (at >= 0) this.#queue.splice(at, 1);
  }

  /**
   * The host needs room (its cells are full and a start waits for one):
   * every blocked process that kept its Worker gives it up. Each replays
   * when woken.
   */
  makeRoom(): void {
    for (const pid of [...this.#lingering.keys()]) this.#park(pid);
  }

  /** Makes every process of the store this host's to run, from now on. */
  serve(): void {
    this.#serving = true;
  }

  /**
   * Follows the transitions other kernels commit to the store (see
   * `ProcessTable.follow`), catching up with each one.
   */
  async follow(feed: { watch?: boolean; pollMs?: number }): Promise<void> {
    this.#host.processes.subscribe((_, event, foreign) => {
      if (foreign) this.#react(event.pid);
    });
    await this.#host.processes.follow(feed);
  }

  /** Resolves once no live (not exited, failed or killed) process remains in the store. */
  idle(): Promise<void> {
    const processes = this.#host.processes;
    return new Promise((resolve) => {
      let checking = false;
      let again = false;
      const check = async () => {
        if (checking) {
          again = true;
          return;
        }
        checking = true;
        do {
          again = false;
          const live = (await processes.list()).some((p) => !END_STATES.has(p.state));
          if (!live) {
            unsubscribe();
            resolve();
            return;
          }
        } while (again);
        checking = false;
      };
      const unsubscribe = processes.subscribe((_, event) => {
        if (END_STATES.has(event.to)) check();
      });
      check();
    });
  }

  /**
   * Stops taking work: nothing starts from now on and other kernels'
   * transitions are no longer followed. Resolves once no catch-up is in
   * progress.
   */
  async close(): Promise<void> {
    this.#closed = true;
    await this.#host.processes.unfollow();
    while (this.#reacting.size) await Promise.allSettled([...this.#reacting]);
  }

  /**
   * After {@link close}: lets the runs that were starting finish starting,
   * stops every execution (aborting its calls in flight), waits until all
   * are gone, and puts each process that was running back as runnable: it
   * replays from its journal on the next start.
   */
  async shutdown(): Promise<void> {
    while (this.#runs.size) await Promise.allSettled([...this.#runs]);
    for (const { timer } of this.#lingering.values()) clearTimeout(timer);
    this.#lingering.clear();
    const running = [...this.#executions.entries()];
    for (const [, execution] of running) {
      execution.stop("The host is shutting down", { abortCalls: true });
    }
    await Promise.all(running.map(([, e]) => e.settled()));
    for (const [pid] of running) {
      const record = await this.#host.processes.get(pid);
      if (record?.state === "running") {
        await this.#host.processes.transition(pid, "runnable", { reason: "the host shut down" });
      }
    }
  }

  /**
   * Keeps the Worker of a process blocked in a call for `waitGraceMs`: a
   * wake-up within it answers the call in place, with no replay. Parks it
   * at once when there is no grace, when the call is not a wait (an exec
   * parks too), or when the host needs the room.
   */
  linger(execution: E): void {
    const pid = execution.pid;
    if (this.waitGraceMs <= 0 || this.#closed || this.#lingering.has(pid)) {
      return execution.stop("The process is waiting");
    }
    // Only a wait lingers: not a call that parks for another reason, nor
    // one already woken (it replays, which is always right).
    const lingering = (async () => {
      const record = await this.#host.processes.get(pid);
      if (
        record?.state === "blocked" && record.waitSeq === execution.waitingSeq &&
        !this.#closed && !this.#lingering.has(pid)
      ) return this.#lingerNow(execution);
      execution.stop("The process is waiting");
    })().catch(() => execution.stop("The process is waiting"));
    this.#runs.add(lingering);
    lingering.finally(() => this.#runs.delete(lingering));
  }

  #lingerNow(execution: E): void {
    const pid = execution.pid;
    const timer = setTimeout(() => this.#park(pid), this.waitGraceMs);
    this.#lingering.set(pid, { execution, timer });
    execution.done.then(() => {
      const entry = this.#lingering.get(pid);
      if (entry?.execution !== execution) return;
      clearTimeout(entry.timer);
      this.#lingering.delete(pid);
    });
    // Woken before it began to linger (the wait was already satisfied).
    const queued = this.#queue.indexOf(pid);
    if (queued >= 0) {
      this.#queue.splice(queued, 1);
      this.#queued.delete(pid);
      this.#wake(pid);
    } else this.#pump();
  }

  /** A lingering process gives its Worker up: it parks, and replays when woken. */
  #park(pid: number): void {
    this.#unlinger(pid)?.execution.stop("The process is waiting");
  }

  /** Answers a lingering process's call in its own Worker, or replays it when that cannot be done. */
  #wake(pid: number): void {
    const { execution } = this.#unlinger(pid)!;
    const processes = this.#host.processes;
    this.#answer(pid, execution, async () => {
      let claimed = false;
      const current = await processes.update(pid, (p) => {
        claimed = p.state === "runnable";
        return claimed ? { state: "running" } : {};
      });
      if (!claimed) return undefined;
      const seq = execution.waitingSeq;
      const recorded = seq === undefined ? undefined : await this.#host.waitRecord(pid, seq);
      return { current, recorded };
    });
  }

  /**
   * Answers in place the call of a lingering process that the commit ending
   * its wait also made `running` (see {@link isLingering}): `current` is its
   * record as committed, `recorded` the call's finished journal record. When
   * it stopped lingering meanwhile (its grace ran out), it is put back as
   * runnable and replays.
   */
  resumeClaimed(current: ProcessRecord, recorded: JournalRecord): void {
    const pid = current.pid;
    const entry = this.#lingering.get(pid);
    if (entry?.execution.waitingSeq === recorded.seq) {
      this.#unlinger(pid);
      return this.#answer(pid, entry.execution, () => Promise.resolve({ current, recorded }));
    }
    this.#inBackground(pid, () => this.#requeue(pid));
  }

  /** Puts a `running` process back to `runnable` and starts it: it replays in a new run. */
  async #requeue(pid: number): Promise<void> {
    await this.#host.processes.update(
      pid,
      (p) => p.state === "running" ? { state: "runnable" } : {},
    );
    this.start(pid);
  }

  /** Runs `work` for `pid` as one of the host's runs; a failure of it fails the process. */
  #inBackground(pid: number, work: () => Promise<void>): void {
    const run = work().catch((error) =>
      this.#host.finish(pid, "failed", { error: { message: (error as Error).message } })
        .catch(() => {})
    );
    this.#runs.add(run);
    run.finally(() => this.#runs.delete(run));
  }

  /** Takes `pid` off the lingering list, its timer cleared. */
  #unlinger(pid: number): { execution: E } | undefined {
    const entry = this.#lingering.get(pid);
    if (!entry) return undefined;
    clearTimeout(entry.timer);
    this.#lingering.delete(pid);
    return entry;
  }

  /**
   * Answers the blocked call of `execution` in place once `claim` made its
   * process `running` (undefined: it was not, and the Worker is given up);
   * when the record holds no reply, the process replays in a new run.
   */
  #answer(
    pid: number,
    execution: E,
    claim: () => Promise<{ current: ProcessRecord; recorded?: JournalRecord } | undefined>,
  ): void {
    this.#inBackground(pid, async () => {
      const claimed = await claim();
      if (!claimed) return execution.stop("The process is waiting");
      const { current, recorded } = claimed;
      if (recorded && await execution.wake(recorded, current)) return;
      // It could not be answered in place: it replays in a new run.
      execution.stop("The process is waiting");
      await this.#requeue(pid);
    });
  }

  /** Programs holding a Worker or starting (a start counts once it is an execution too). */
  #running(): number {
    let starting = 0;
    for (const pid of this.#starting) if (!this.#executions.has(pid)) starting++;
    return this.#executions.size + starting + this.#admitted;
  }

  /** Admits the oldest queued processes the bounds leave room for. */
  #pump(): void {
    const busy = (pid: number) => this.#executions.has(pid) || this.#starting.has(pid);
    // The host needs room: a blocked process that kept its Worker gives it up.
    if (this.#queue.length && this.#running() >= this.#maxRunning) {
      const [oldest] = this.#lingering.keys();
      if (oldest !== undefined) this.#park(oldest);
    }
    while (
      this.#queue.length && !this.#closed &&
      this.#starting.size + this.#admitted < this.#maxStarting &&
      this.#running() < this.#maxRunning
    ) {
      const index = this.#queue.findIndex((pid) => !busy(pid));
      if (index < 0) return;
      const [pid] = this.#queue.splice(index, 1);
      this.#queued.delete(pid);
      // Claimed synchronously: no second run of the same pid can begin meanwhile.
      this.#starting.add(pid);
      this.#track(pid, this.#run(pid));
    }
  }

  /** Follows a start of `pid` in flight: a failure fails the process; its end frees its place. */
  #track(pid: number, started: Promise<void>): void {
    const run = started
      .catch((error) =>
        this.#host.finish(pid, "failed", { error: { message: (error as Error).message } })
          .catch(() => {})
      )
      .finally(() => {
        this.#starting.delete(pid);
        this.#runs.delete(run);
        this.#pump();
      });
    this.#runs.add(run);
  }

  async #run(pid: number): Promise<void> {
    const processes = this.#host.processes;
    const initial = await processes.get(pid);
    if (initial?.state !== "runnable" || this.#executions.has(pid) || this.#closed) return;
    const launch = await this.#host.prepare(initial);
    let claimed = false;
    const record = await processes.update(pid, (p) => {
      claimed = p.state === "runnable";
      return claimed ? { state: "running", startedAt: p.startedAt ?? this.#host.now() } : {};
    });
    if (!claimed) return;
    await this.#launch(pid, launch, record);
  }

  /**
   * Runs a process its create commit made `running` on this host (see
   * {@link admit}); when the host closed meanwhile, puts it back to
   * `runnable`, as {@link shutdown} does for the processes it stops.
   */
  async #launchClaimed(record: ProcessRecord, fresh: boolean, early?: EarlyStart): Promise<void> {
    let started = false;
    try {
      started = await this.#launchOnce(record, fresh, early);
    } finally {
      // A program started early whose run did not take it over ends here.
      if (!started) early?.abandon();
    }
  }

  /** {@link #launchClaimed}, true once its run has taken over `early`. */
  async #launchOnce(record: ProcessRecord, fresh: boolean, early?: EarlyStart): Promise<boolean> {
    const launch = this.#closed ? undefined : await this.#host.prepare(record, { fresh, early });
    if (!launch || this.#closed) {
      const now = await this.#host.processes.get(record.pid);
      if (now?.state === "running") {
        await this.#host.processes.transition(record.pid, "runnable", {
          reason: "the host shut down",
        });
      }
      return false;
    }
    return await this.#launch(record.pid, launch, record);
  }

  /** Registers and starts the execution `launch` makes; true once its program is started. */
  async #launch(
    pid: number,
    launch: (running: ProcessRecord) => Promise<Launch<E>>,
    record: ProcessRecord,
  ): Promise<boolean> {
    const { execution, start } = await launch(record);
    this.#executions.set(pid, execution);
    execution.settled().then(() => {
      if (this.#executions.get(pid) === execution) this.#executions.delete(pid);
      this.#pump();
    });
    // A transition committed before the execution was registered (a kill
    // of the process or its parent while it was being prepared) found no
    // execution to stop: read the state again now that later ones will.
    // A process launched in the commit that made it is read again only if
    // one was seen since that commit. One being ended (its end not yet
    // committed) does not start.
    if (!this.#hosted.has(pid)) {
      this.#fresh.delete(pid);
      execution.markEnded();
      execution.stop("The process is ending");
      return false;
    }
    if (this.#fresh.get(pid) === false) {
      this.#fresh.delete(pid);
      await start();
      return true;
    }
    this.#fresh.delete(pid);
    const now = await this.#host.processes.get(pid);
    if (now?.state !== "running") {
      if (!now || END_STATES.has(now.state)) execution.markEnded();
      execution.stop(`The process is ${now?.state ?? "gone"}`);
      return false;
    }
    await start();
    return true;
  }

  /**
   * Catches up with a transition another kernel committed: an execution
   * here of a process that is no longer `running` (killed, paused, put
   * back by a restore) stops, and a process that is now `runnable` starts
   * when this host serves the store or started it before.
   */
  #react(pid: number): void {
    if (this.#closed) return;
    const execution = this.#executions.get(pid);
    if (!execution && !this.#serving && !this.#hosted.has(pid)) return;
    const reaction = (async () => {
      const record = await this.#host.processes.get(pid);
      if (!record || this.#closed) return;
      // The execution was there before the read: its process left `running` since.
      if (execution && this.#executions.get(pid) === execution && record.state !== "running") {
        if (END_STATES.has(record.state)) execution.markEnded();
        execution.stop(`The process is ${record.state}`);
      }
      if (END_STATES.has(record.state)) this.#hosted.delete(pid);
      if (record.state === "runnable" && (this.#serving || this.#hosted.has(pid))) {
        this.start(pid);
      }
    })().catch((error) => {
      if (!this.#closed) {
        console.error(`libos: catching up with process ${pid} failed: ${(error as Error).message}`);
      }
    }).finally(() => this.#reacting.delete(reaction));
    this.#reacting.add(reaction);
  }
}

/** `value` when it is a whole number >= 1, else a RangeError naming `what`. */
function positive(value: number, what: string): number {
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new RangeError(`Cannot allow ${value} ${what} at once: expected a whole number >= 1`);
  }
  return value;
}
