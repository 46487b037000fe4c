/**
 * The scheduler: which runnable processes run in a cell now and which
 * queue for one (at most `maxCells` at once), the executions running, and
 * which processes this host looks after — those it started, or every one
 * once it serves the store — catching up with the transitions other
 * kernels commit to the store: an execution whose process left `running`
 * elsewhere stops, a process made runnable elsewhere starts here.
 *
 * It builds no execution itself: its host prepares and launches one (see
 * {@link SchedulerHost}), and it decides when.
 *
 * @module
 */

import { END_STATES, type ProcessRecord, type ProcessTable } from "./process_table.ts";

/** A running program, as the scheduler drives it. */
export interface ScheduledExecution {
  /** Stops the program's cell (aborting calls in flight with `abortCalls`). */
  stop(reason: string, options?: { abortCalls?: boolean }): void;
  /** Resolves once the cell is gone. */
  settled(): Promise<void>;
  /** Tells the execution its process has ended, so it reports nothing more. */
  markEnded(): void;
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
  prepare(record: ProcessRecord): Promise<(running: ProcessRecord) => Promise<Launch<E>>>;
}

/** Settings of a {@link Scheduler}. */
export interface SchedulerOptions {
  /** Most cells (running programs) at once; more runnable processes queue. */
  maxCells: number;
  /** Whether this host runs processes at all (a CLI verb's kernel does not). */
  runs: boolean;
}

/**
 * The scheduler of one kernel.
 *
 * @example
 * ```ts ignore
 * const scheduler = new Scheduler(host, { maxCells: 16, runs: true });
 * scheduler.start(pid); // runs now, or once a cell frees up
 * await scheduler.close();
 * await scheduler.shutdown();
 * ```
 */
export class Scheduler<E extends ScheduledExecution> {
  /** Whether this host runs processes. */
  readonly runs: boolean;
  #host: SchedulerHost<E>;
  #maxCells: number;
  #executions = new Map<number, E>();
  #queue: number[] = [];
  #queued = new Set<number>();
  #starting = new Set<number>();
  #runs = new Set<Promise<void>>();
  #closed = false;
  /** Set by {@link serve}: every process of the store is this host's to run. */
  #serving = false;
  /** Processes this host started and that have not ended. */
  #hosted = new Set<number>();
  #reacting = new Set<Promise<void>>();

  /** A scheduler over `host`. */
  constructor(host: SchedulerHost<E>, options: SchedulerOptions) {
    this.#host = host;
    this.#maxCells = options.maxCells;
    this.runs = options.runs;
  }

  /** True once {@link close} began. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Runs a runnable process in a cell, now or when a cell frees up (at most
   * `maxCells` run at once). Returns at once. A process whose previous cell
   * is still stopping starts once that cell is gone.
   */
  start(pid: number): void {
    if (this.#closed || !this.runs || this.#queued.has(pid)) return;
    this.#hosted.add(pid);
    this.#host.waits.start();
    this.#queued.add(pid);
    this.#queue.push(pid);
    this.#pump();
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

  #pump(): void {
    const busy = (pid: number) => this.#executions.has(pid) || this.#starting.has(pid);
    while (
      this.#queue.length && this.#executions.size + this.#starting.size < this.#maxCells &&
      !this.#closed
    ) {
      const index = this.#queue.findIndex((pid) => !busy(pid));
      if (index < 0) return;
      const [pid] = this.#queue.splice(index, 1);
      this.#queued.delete(pid);
      // Claimed synchronously: no second run of the same pid can begin meanwhile.
      this.#starting.add(pid);
      const run = this.#run(pid)
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
    const { execution, start } = await launch(record);
    this.#executions.set(pid, execution);
    execution.settled().then(() => {
      if (this.#executions.get(pid) === execution) this.#executions.delete(pid);
      this.#pump();
    });
    await start();
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
