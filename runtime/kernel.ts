/**
 * The kernel: a facade that builds the parts over one store and connects
 * them; each part is a module of its own, tested without a kernel:
 *
 * - records: the process table with lineage and budgets
 *   (`process_table.ts`), images, capabilities, Object Memory, storage
 *   quotas, the journal and the audit log;
 * - authority: grant derivation, one pure function deciding what a
 *   spawned, forked or exec'd process holds (`grants.ts`), the ceilings of
 *   running processes (`ceilings.ts`), and the broker every syscall goes
 *   through, with the handler table of `syscalls/`;
 * - running: the scheduler (`scheduler.ts`: the cell cap, the executions,
 *   catching up with other kernels), where replay starts
 *   (`checkpoints.ts`), and the executions (`execution.ts`), which the
 *   kernel builds for the scheduler;
 * - lifecycle: spawn, child spawn, fork and exec (`lifecycle.ts`); ending,
 *   signalling, waiting for and recovering processes (`process_control.ts`);
 * - what processes share and wait on: waits, events, mailboxes, the human
 *   queue, snapshots, JIT tools, transcripts (`transcripts.ts`), the model
 *   providers (`model_providers.ts`) and the fs, shell and net providers.
 *
 * Its public members delegate to those parts; the syscall handlers and
 * services take the kernel as the narrow interface each declares.
 *
 * @module
 */

import { AuditLog } from "../broker/audit.ts";
import { type AskRequest, Broker, type CallContext, type PARKED } from "../broker/broker.ts";
import type { CapabilitySpec } from "../broker/capability.ts";
import { CapabilityStore } from "../broker/capability_store.ts";
import { SyscallError } from "../broker/errors.ts";
import {
  Journal,
  type JournalOptions,
  type JournalRecord,
  loadJournal,
} from "../broker/journal.ts";
import type { StoreChange } from "../broker/store_change.ts";
import { askedGrant, requestedGrant, requireWithinImageCeiling } from "./ceilings.ts";
import { CellPool, type EarlyStart } from "./cell_pool.ts";
import { type ReplayStart, replayStart, replayWithoutCheckpoint } from "./checkpoints.ts";
import { cellOptionsOf, DEFAULT_LIMITS, Execution, startOf } from "./execution.ts";
import { ExecSandbox, type ExecSandboxMode, sandboxUnavailable } from "./exec_sandbox.ts";
import { TopicEvents } from "./events.ts";
import { type FsProvider, LocalFs } from "./fs_provider.ts";
import { removeDeadHostFolders } from "./host_children.ts";
import { HumanQueue, type HumanResponder } from "./human_queue.ts";
import { ImageRegistry, type RegisteredImage } from "./image.ts";
import { ToolTables } from "./jit_tools.ts";
import {
  type ChildSpawnOptions,
  execImage,
  forkProcess,
  limitsOf,
  spawnChild,
  type SpawnOptions,
  spawnProcess,
} from "./lifecycle.ts";
import { Mailbox } from "./mailbox.ts";
import type { ModelProvider, ModelReply } from "./model.ts";
import { ModelProviders, ownModelOf } from "./model_providers.ts";
import { LocalNet, type NetProvider } from "./net_provider.ts";
import { ObjectMemory } from "./object_memory.ts";
import { ProcessControl } from "./process_control.ts";
import { ProgramEntries } from "./program_entries.ts";
import {
  type BudgetKey,
  type ProcessLimits,
  type ProcessRecord,
  type ProcessState,
  ProcessTable,
  type Usage,
} from "./process_table.ts";
import { type Admission, type Launch, type RunQueueStatus, Scheduler } from "./scheduler.ts";
import { LocalShell, type ShellProvider } from "./shell_provider.ts";
import { Snapshots } from "./snapshots.ts";
import { StorageQuotas } from "./storage_quota.ts";
import { openStore, type Store } from "./store.ts";
import { handlerTable } from "./syscalls/mod.ts";
import {
  type Conversation,
  type ConversationRequest,
  type TranscriptEntry,
  type TranscriptRef,
  Transcripts,
} from "./transcripts.ts";
import { Waits } from "./waits.ts";

export { MAX_INPUT_CHARS } from "./lifecycle.ts";
export type { ChildSpawnOptions, SpawnOptions } from "./lifecycle.ts";
export type { TranscriptEntry } from "./transcripts.ts";
export { DEFAULT_MAX_STARTING } from "./scheduler.ts";

/** Options of {@link Kernel.open}. */
export interface KernelOptions {
  /** An open store, or where to open one (see `openStore`). */
  store?: Store | string;
  /** The model provider for processes that name none of their own. */
  model?: ModelProvider;
  /**
   * Checks every syscall result against its declared type in
   * `SYSCALL_RESULTS` (for tests; default off).
   */
  checkResults?: boolean;
  /** Resolves a per-process model spec (`scripted:FILE`, `openai:NAME`). */
  resolveModel?: (spec: string) => Promise<ModelProvider>;
  /** The filesystem provider (default: the local host, with the store kept out of reach). */
  fs?: FsProvider;
  /** The shell provider for `exec.run` (default: local commands, argv only). */
  shell?: ShellProvider;
  /**
   * How `exec.run` confines commands (default `"bwrap"`: the OS sandbox of
   * `exec_sandbox.ts`; `"none"` runs them unconfined, and every `exec.run`
   * audit record says so), or a sandbox to use.
   */
  execSandbox?: ExecSandboxMode | ExecSandbox;
  /** The network provider for `net.fetch` (default: the host's network). */
  net?: NetProvider;
  /** The clock (default `Date.now`). */
  now?: () => number;
  /** Limits for every process; an image's `limits` override them. */
  limits?: Partial<ProcessLimits>;
  /** Group-commit settings. */
  journal?: JournalOptions;
  /** Answers human requests as they arrive (scripted, deny-all, a terminal). */
  human?: HumanResponder;
  /**
   * Most cells at once (default 16). A program that needs another cell then
   * waits in line for one; blocked processes that kept their Workers park
   * to make room.
   */
  maxCells?: number;
  /**
   * Most programs holding a Worker at once: starting, running, or blocked
   * and lingering (default `maxCells` x `cellWorkers`, what the cells hold).
   * More runnable processes wait in the run queue, oldest first.
   */
  maxRunning?: number;
  /**
   * Most starts in flight at once (default {@link DEFAULT_MAX_STARTING}):
   * the rate the run queue admits processes at, recovery included.
   */
  maxStarting?: number;
  /**
   * Cells kept started ahead of need, Worker up (default 0). A process with
   * the kernel's default limits takes one instead of starting a cold cell.
   */
  warmCells?: number;
  /** Most programs (Workers) one cell runs at once (default 16). */
  cellWorkers?: number;
  /**
   * `process`: every process runs in a cell of its own, as an image with
   * `isolation: "process"` does (default `shared`: a process tree shares).
   */
  isolation?: "shared" | "process";
  /**
   * Which processes may share a cell: `tree` (default), one process tree;
   * `principal`, every tree one principal (an API token, or the local
   * operator) started, for density. See `docs/threat_model.md`.
   */
  cellSharing?: CellSharing;
  /**
   * How long a process blocked in a call keeps its Worker, in ms (default
   * {@link DEFAULT_WAIT_GRACE_MS}; 0 parks at once). A wake-up within it
   * costs no replay; the wait is journaled before the process blocks either way.
   */
  waitGraceMs?: number;
  /**
   * Whether this kernel runs processes (default true). One that does not
   * (a CLI verb that answers, signals, spawns or restores) only changes the
   * store: it never starts an execution nor a timer, and what it makes
   * runnable is picked up by the host that serves the store, which follows
   * the store's transitions (see {@link Kernel.recover}).
   */
  runs?: boolean;
}

/** Which processes may share a cell (see {@link KernelOptions.cellSharing}). */
export type CellSharing = "tree" | "principal";

/** How the kernel places programs in cells, as `libos status` shows it. */
export interface CellPolicy {
  /** Which processes may share a cell. */
  sharing: CellSharing;
  /** `process` when every process gets a cell of its own. */
  isolation: "shared" | "process";
  /** Most Workers per cell. */
  workersPerCell: number;
  /** How long a blocked process keeps its Worker, in ms. */
  waitGraceMs: number;
}

/** How far a kernel's run queue has got, as `libos status` shows it. */
export interface RunQueue extends RunQueueStatus {
  /** Cells serving groups now. */
  cells: number;
  /** Most cells at once. */
  maxCells: number;
  /** Admitted starts waiting for room for a new cell. */
  waitingForCell: number;
}

/** How long a blocked process keeps its Worker by default, in ms. */
export const DEFAULT_WAIT_GRACE_MS = 1_000;

/**
 * How often a kernel that runs processes reads the transition counter of a
 * store file for changes other OS processes made (SQLite has no
 * cross-process watch): half of it is the median delay of a wake-up.
 */
const FILE_FEED_POLL_MS = 40;

/** The same for a KV Connect store, where `kv.watch` does the work and this is a safety net. */
const WATCHED_FEED_POLL_MS = 1000;

/**
 * The kernel.
 *
 * @example
 * ```ts ignore
 * const kernel = await Kernel.open({ store: ":memory:", model });
 * await kernel.images.register(image);
 * const proc = await kernel.run({ image: "demo@1.0.0", workspace: "./ws" });
 * console.log(proc.state, proc.result);
 * await kernel.close();
 * ```
 */
export class Kernel {
  /** The store everything lives in. */
  readonly store: Store;
  /** The process table. */
  readonly processes: ProcessTable;
  /** The registered images. */
  readonly images: ImageRegistry;
  /** The capabilities every process holds. */
  readonly caps: CapabilityStore;
  /** The object memory. */
  readonly objects: ObjectMemory;
  /** The storage quotas of objects, transcripts, checkpoints and the journal. */
  readonly quotas: StorageQuotas;
  /** The audit log. */
  readonly audit: AuditLog;
  /** The syscall journal, replayed when a process resumes. */
  readonly journal: Journal;
  /** The broker every syscall goes through. */
  readonly broker: Broker;
  /** The file system `fs.*` syscalls act on. */
  readonly fs: FsProvider;
  /** What `exec.run` runs commands with. */
  readonly shell: ShellProvider;
  /** The sandbox commands run in; undefined when the operator chose `--exec-sandbox none`. */
  readonly sandbox: ExecSandbox | undefined;
  /** What `net.fetch` makes requests with. */
  readonly net: NetProvider;
  /** The parked syscalls and what completes them. */
  readonly waits: Waits;
  /** The topic events of `event.*`. */
  readonly events: TopicEvents;
  /** The process mailboxes of `msg.*`. */
  readonly mailbox: Mailbox;
  /** The human queue: questions and permission requests. */
  readonly humans: HumanQueue;
  /** Snapshots of process subtrees. */
  readonly snapshots: Snapshots;
  /** The per-process JIT tool tables. */
  readonly tools: ToolTables;
  /** What each image's processes run (a module's types erased once per host). */
  readonly entries: ProgramEntries = new ProgramEntries();
  /** Limits every process runs under, before an image's own. */
  readonly limits: ProcessLimits;
  /** Warm cells, started ahead of need. */
  readonly cells: CellPool;
  /** The clock. */
  readonly now: () => number;
  #models: ModelProviders;
  #scheduler: Scheduler<Execution>;
  #isolation: "shared" | "process";
  #cellSharing: CellSharing;
  /**
   * Processes resumed elsewhere because their cell died for another's
   * sake, and whether their next run gets a cell of its own.
   */
  #resumed = new Map<number, { alone: boolean }>();
  #control: ProcessControl;
  #transcripts: Transcripts;
  #ownsStore: boolean;
  #ownsSandbox: boolean;

  private constructor(store: Store, ownsStore: boolean, options: KernelOptions) {
    this.store = store;
    this.#ownsStore = ownsStore;
    this.now = options.now ?? Date.now;
    const kv = store.kv;
    this.processes = new ProcessTable(kv);
    this.images = new ImageRegistry(kv);
    this.caps = new CapabilityStore(kv);
    this.quotas = new StorageQuotas(kv, this.processes);
    this.objects = new ObjectMemory(kv, { meter: this.quotas });
    this.audit = new AuditLog(kv);
    this.journal = new Journal(kv, this.audit, options.journal);
    this.#transcripts = new Transcripts(kv, this.quotas);
    this.fs = options.fs ??
      new LocalFs({ reserved: store.path ? [store.path] : [] });
    this.shell = options.shell ?? new LocalShell();
    const sandbox = options.execSandbox ?? "bwrap";
    this.sandbox = sandbox === "none"
      ? undefined
      : sandbox === "bwrap"
      ? new ExecSandbox()
      : sandbox;
    this.#ownsSandbox = sandbox === "bwrap";
    this.net = options.net ?? new LocalNet();
    this.limits = { ...DEFAULT_LIMITS, ...options.limits };
    this.#models = new ModelProviders({ model: options.model, resolve: options.resolveModel });
    this.cells = new CellPool({
      warm: options.warmCells ?? 0,
      limits: cellOptionsOf(this.limits),
      maxWorkers: options.cellWorkers,
      maxCells: options.maxCells,
      needRoom: () => this.#scheduler.makeRoom(),
    });
    this.#isolation = options.isolation ?? "shared";
    this.#cellSharing = options.cellSharing ?? "tree";
    this.waits = new Waits(this);
    this.events = new TopicEvents(this);
    this.mailbox = new Mailbox(this);
    this.humans = new HumanQueue(this, options.human);
    this.snapshots = new Snapshots(this);
    this.tools = new ToolTables(this);
    this.#scheduler = new Scheduler({
      processes: this.processes,
      waits: this.waits,
      now: this.now,
      finish: (pid, state, outcome) => this.finish(pid, state, outcome),
      prepare: (record, options) => this.#prepare(record, options),
      waitRecord: async (pid, seq) =>
        (await this.store.kv.get<JournalRecord>(["journal", pid, seq])).value ?? undefined,
    }, {
      maxRunning: options.maxRunning ?? this.cells.maxCells * this.cells.maxWorkers,
      maxStarting: options.maxStarting,
      runs: options.runs ?? true,
      waitGraceMs: options.waitGraceMs ?? DEFAULT_WAIT_GRACE_MS,
    });
    this.#control = new ProcessControl({
      store,
      processes: this.processes,
      journal: this.journal,
      caps: this.caps,
      waits: this.waits,
      scheduler: this.#scheduler,
    });
    this.broker = new Broker({
      caps: this.caps,
      journal: this.journal,
      now: this.now,
      ask: (ctx, request) => this.#askHuman(ctx, request),
      journalMeter: {
        admit: (ctx, name) => this.#admitJournal(ctx.pid, name),
        charge: (ctx, bytes) => this.quotas.chargeJournal(ctx.pid, bytes),
      },
      handlers: handlerTable(this),
      checkResults: options.checkResults,
    });
  }

  /**
   * Opens a kernel over a store. One that runs processes follows the
   * transitions other kernels commit to the store from then on, so what
   * they wake (an answer, a signal, a new process) reaches it.
   */
  static async open(options: KernelOptions = {}): Promise<Kernel> {
    await removeDeadHostFolders(); // what a host killed before it could clean up left behind
    const owns = typeof options.store !== "object";
    const store = typeof options.store === "object"
      ? options.store
      : await openStore(options.store);
    const kernel = new Kernel(store, owns, options);
    // A throwaway store this kernel opened has no other writer to follow.
    if (kernel.#scheduler.runs && options.store !== ":memory:") {
      await kernel.#scheduler.follow(
        store.path !== undefined
          ? { pollMs: FILE_FEED_POLL_MS }
          : { watch: true, pollMs: WATCHED_FEED_POLL_MS },
      );
    }
    return kernel;
  }

  /** True once {@link close} began. */
  get closed(): boolean {
    return this.#scheduler.closed;
  }

  /** Registered image of a process (with its entry source). */
  async imageOf(proc: ProcessRecord): Promise<RegisteredImage> {
    const image = await this.images.get(proc.digest);
    if (!image) {
      throw new SyscallError("ENOENT", `Cannot find image "${proc.image}" of process ${proc.pid}`);
    }
    return image;
  }

  /**
   * The model a process calls when it names none and may always call, as
   * `provider/name` (see `model_providers.ts`).
   */
  ownModelOf(proc: ProcessRecord, image: RegisteredImage): string {
    return ownModelOf(proc, image);
  }

  // Lifecycle (lifecycle.ts, process_control.ts).

  /**
   * Creates a process for an operator and makes it runnable. Does not start
   * it, unless `how.start`: then it starts, made `running` in its create
   * commit when the run queue has room (no claim commit follows).
   */
  spawn(options: SpawnOptions, how: { start?: boolean } = {}): Promise<ProcessRecord> {
    return spawnProcess(this, options, how);
  }

  /** Creates a child of `ppid` with attenuated capabilities and starts it. */
  spawnChild(ppid: number, options: ChildSpawnOptions): Promise<ProcessRecord> {
    return spawnChild(this, ppid, options);
  }

  /**
   * `proc.fork`: a child running the same image from the same point, with
   * copies of the caller's private namespace, capabilities (or the subset
   * asked for) and journal up to the fork, where it sees `{ pid: 0 }`.
   */
  fork(
    ctx: CallContext,
    options: { capabilities?: readonly string[]; input?: unknown },
  ): Promise<ProcessRecord> {
    return forkProcess(this, ctx, options);
  }

  /**
   * `proc.exec`: the process keeps its pid and runs another image from its
   * start. Capabilities beyond the new image's ceiling are revoked; replay
   * starts after the exec call.
   */
  exec(ctx: CallContext, options: { image: string; input?: unknown }): Promise<typeof PARKED> {
    return execImage(this, ctx, options);
  }

  /** Spawns, starts and waits for a process: the `libos run` path. */
  async run(options: SpawnOptions): Promise<ProcessRecord> {
    this.#requireRuns("run a process");
    const proc = await this.spawn(options, { start: true });
    return await this.waitFor(proc.pid);
  }

  /**
   * Ends a process in `state` (idempotent: an ended process stays as it
   * is), stops its cell, and applies `onParentExit` to its children.
   */
  finish(
    pid: number,
    state: Extract<ProcessState, "exited" | "failed" | "killed">,
    outcome: { result?: unknown; error?: { code?: string; message: string }; reason?: string } = {},
  ): Promise<void> {
    return this.#control.finish(pid, state, outcome).finally(() => this.#transcripts.forget(pid));
  }

  /** Resolves with the record once `pid` is in an end state. */
  waitFor(pid: number, options: { timeoutMs?: number } = {}): Promise<ProcessRecord> {
    return this.#control.waitFor(pid, options);
  }

  /**
   * Delivers a signal. `terminate` and `kill` end the process as `killed`
   * (`onParentExit` then applies to its children); `pause` stops its cell
   * (it replays on `resume`) or holds it while blocked; `interrupt` fails
   * its blocked syscall with `EINTR`.
   */
  signal(
    pid: number,
    signal: "pause" | "resume" | "interrupt" | "terminate" | "kill",
    options: { by?: string } = {},
  ): Promise<void> {
    return this.#control.signal(pid, signal, options);
  }

  // Running (scheduler.ts).

  /**
   * Puts a runnable process in the run queue: it runs in a Worker once its
   * turn comes (see `scheduler.ts`). Returns at once. A process whose
   * previous Worker is still stopping starts once that one is gone.
   */
  start(pid: number): void {
    this.#scheduler.start(pid);
  }

  /**
   * Holds a place to run a process about to be made already `running`, or
   * undefined when it would have to queue (see `Scheduler.admit`).
   */
  admit(): Admission | undefined {
    return this.#scheduler.admit();
  }

  /** Stops the cell of `pid`, if it has one, and waits until it is gone. */
  stopExecution(pid: number): Promise<void> {
    return this.#scheduler.stopExecution(pid);
  }

  /** The execution running `pid`, if any (for tests and diagnostics). */
  executionOf(pid: number): Execution | undefined {
    return this.#scheduler.executionOf(pid);
  }

  /** Resolves once no live (not exited, failed or killed) process remains in the store. */
  idle(): Promise<void> {
    return this.#scheduler.idle();
  }

  /**
   * Makes this kernel the host of the whole store and resumes every live
   * process: running ones (their host died) replay from their journals,
   * runnable ones start, blocked ones are checked for conditions that came
   * true meanwhile and otherwise wait for them. Starts the timer. From
   * then on, a process another kernel makes runnable (an answer, a signal,
   * a spawn from the CLI) starts here too. Returns how many processes it
   * started.
   */
  async recover(): Promise<number> {
    this.#requireRuns("serve the store");
    return await this.#control.recover();
  }

  /**
   * Keeps the Worker of a process blocked in a call for the grace period:
   * a wake-up within it answers the call in place, with no replay.
   */
  linger(execution: Execution): void {
    this.#scheduler.linger(execution);
  }

  /** True while `pid` is blocked and keeps its Worker on this host. */
  isLingering(pid: number): boolean {
    return this.#scheduler.isLingering(pid);
  }

  /**
   * Answers in its Worker the call of a lingering process that the commit
   * ending its wait also made `running` (see `Waits.childEnded`).
   */
  resumeClaimed(current: ProcessRecord, recorded: JournalRecord): void {
    this.#scheduler.resumeClaimed(current, recorded);
  }

  /**
   * Runs a `running` process again from its journal, in another cell: its
   * cell died for another program's sake. With `alone`, in a cell of its
   * own (the cell could not tell which of its programs it died of).
   */
  async resumeElsewhere(pid: number, options: { alone: boolean }): Promise<void> {
    let requeued = false;
    await this.processes.update(pid, (p) => {
      requeued = p.state === "running";
      return requeued ? { state: "runnable" } : {};
    });
    if (!requeued) return;
    this.#resumed.set(pid, { alone: options.alone });
    this.start(pid);
  }

  /**
   * How far the run queue has got, with the cells in use and the starts
   * waiting for one; undefined for a kernel that runs no processes.
   */
  get runQueue(): RunQueue | undefined {
    if (!this.#scheduler.runs) return undefined;
    return {
      ...this.#scheduler.runQueue,
      cells: this.cells.table().length,
      maxCells: this.cells.maxCells,
      waitingForCell: this.cells.waiting,
    };
  }

  /** How this kernel places programs in cells. */
  get cellPolicy(): CellPolicy {
    return {
      sharing: this.#cellSharing,
      isolation: this.#isolation,
      workersPerCell: this.cells.maxWorkers,
      waitGraceMs: this.#scheduler.waitGraceMs,
    };
  }

  /**
   * Starts the program of a new root process of `image` before its create
   * commit, as it will run once made (`made`: what its record will say), so
   * the cell's work overlaps the commit; its calls wait until the process is
   * made and its run takes the program over (see `CellPool.placeEarly`).
   * With the default sharing its cell is of a group named only then: the
   * tree, whose name is the root's pid.
   */
  startEarly(
    image: RegisteredImage,
    made: Pick<ProcessRecord, "input" | "seed" | "createdAt" | "startedAt" | "principal">,
  ): EarlyStart {
    const limits = limitsOf(this.limits, {}, image);
    return this.cells.placeEarly({
      group: this.#cellSharing === "principal" ? this.#principalGroup(made) : undefined,
      alone: this.#alone(image),
      limits: cellOptionsOf(limits),
    }, startOf(made, this.entries.entryOf(image)));
  }

  /** Whether programs of `image` run each in a cell of its own. */
  #alone(image: RegisteredImage): boolean {
    return image.image.isolation === "process" || this.#isolation === "process";
  }

  /**
   * The trust group of a process: its process tree, named by its root, or
   * with `cellSharing: "principal"`
   * every tree its principal started. Only one group's programs share a cell.
   */
  #groupOf(record: ProcessRecord): string {
    if (this.#cellSharing === "principal") return this.#principalGroup(record);
    return `tree:${record.root ?? record.pid}`;
  }

  /** The trust group of the trees of `record`'s principal. */
  #principalGroup(record: Pick<ProcessRecord, "principal">): string {
    return `principal:${record.principal ?? "local"}`;
  }

  /**
   * Gets ready to run a runnable process: its image, before it is claimed;
   * then, once it is `running`, its execution, replaying from its latest
   * checkpoint. A `fresh` process (made running in its create commit by this
   * host, so it has run nowhere) has neither journal nor checkpoint: none is
   * read.
   */
  async #prepare(
    record: ProcessRecord,
    options: { fresh?: boolean; early?: EarlyStart } = {},
  ): Promise<(running: ProcessRecord) => Promise<Launch<Execution>>> {
    const image = await this.imageOf(record);
    return async (running) => {
      const limits = limitsOf(this.limits, running, image);
      const resumed = this.#resumed.get(running.pid);
      this.#resumed.delete(running.pid);
      // Outcomes of calls the run its cell took with it left in flight are
      // read back, not redone (a wait already flushed before it parked).
      if (resumed) await this.journal.flush();
      let start: ReplayStart = options.fresh
        ? { firstSeq: 1 }
        : await replayStart(this.store.kv, running);
      const entry = this.entries.entryOf(image);
      // The agent loop's checkpoint references its transcript: it resumes from
      // the messages, or, when the transcript does not match, without it.
      let checkpoint = start.checkpoint;
      if (entry.kind === "agent" && checkpoint !== undefined) {
        checkpoint = await this.#transcripts.resumeAgent(running.pid, checkpoint);
        if (checkpoint === undefined) {
          start = await replayWithoutCheckpoint(this.store.kv, running, start);
        }
      }
      const { firstSeq } = start;
      const journal = options.fresh
        ? new Map<number, JournalRecord>()
        : await loadJournal(this.store.kv, running.pid, firstSeq);
      const execution = new Execution(this, running, limits, { firstSeq, journal });
      const placement = {
        group: this.#groupOf(running),
        alone: resumed?.alone === true || this.#alone(image),
      };
      return {
        execution,
        start: () => execution.start(entry, placement, { checkpoint, early: options.early }),
      };
    };
  }

  // Authority (grants.ts, process_table.ts).

  /** Parses a capability for `pid` and checks it against its image's ceiling (for `cap.request`). */
  withinCeiling(pid: number, text: string): Promise<CapabilitySpec> {
    return requestedGrant(this, pid, text);
  }

  /**
   * `EPERM` unless `spec` lies within the ceiling of `pid`'s image, in every
   * attribute (for a capability given to a running process).
   */
  requireWithinCeilingOf(
    pid: number,
    spec: CapabilitySpec & { expiresAt?: number },
  ): Promise<void> {
    return requireWithinImageCeiling(this, pid, spec);
  }

  /** Asks a human for a one-target grant for a call the caller's policy asks about. */
  async #askHuman(ctx: CallContext, request: AskRequest): Promise<typeof PARKED> {
    return await this.humans.permission(ctx, {
      name: request.name,
      args: request.args,
      capability: await askedGrant(this, ctx.pid, request),
      reason: `policy "${request.rule.pattern}" asks`,
    });
  }

  /** `EPERM` unless `child` is a child of `pid`. */
  requireChild(pid: number, child: number, action: string): Promise<void> {
    return this.processes.requireChild(pid, child, action);
  }

  /** `EPERM` unless `target` is a descendant of `pid`; `action` names the call in the message. */
  requireDescendant(pid: number, target: number, action = "signal"): Promise<void> {
    return this.processes.requireDescendant(pid, target, action);
  }

  /**
   * Reserves `key` usage for `pid` and every ancestor in one commit, as
   * much of `want.most` as every budget on the way has left and at least
   * `want.least`, else `EBUDGET` and nothing is charged (see
   * `ProcessTable.reserve`). Returns the amount; settle with {@link charge}.
   */
  reserve(pid: number, key: BudgetKey, want: { least: number; most?: number }): Promise<number> {
    return this.processes.reserve(pid, key, want);
  }

  /**
   * Charges usage to `pid` and every ancestor in one atomic commit, without
   * a limit: what was spent beyond a reservation, or (negative) the unused
   * part of one given back.
   */
  charge(pid: number, usage: Partial<Usage>): Promise<void> {
    return this.processes.charge(pid, usage);
  }

  /**
   * The change that charges usage to `pid` and every ancestor, for the
   * commit of what it paid for; usage of a key in `within` must fit every
   * budget on the way (`EBUDGET`). See `ProcessTable.prepareCharge`.
   */
  prepareCharge(
    pid: number,
    usage: Partial<Usage>,
    options?: { within?: readonly BudgetKey[] },
  ): Promise<StoreChange<void>> {
    return this.processes.prepareCharge(pid, usage, options);
  }

  /**
   * Lets `pid` add to the journal unless its subtree or tree has used its
   * `journalBytes` quota; then the process fails with `EBUDGET` (a program
   * that kept calling would add a refusal per call).
   */
  async #admitJournal(pid: number, name: string): Promise<void> {
    try {
      await this.quotas.admitJournal(pid, `Cannot ${name}`);
    } catch (error) {
      if (error instanceof SyscallError && error.code === "EBUDGET") {
        await this.finish(pid, "failed", { error: { code: error.code, message: error.message } });
      }
      throw error;
    }
  }

  // What processes share.

  /** Posts an event from outside (library, HTTP), waking processes waiting on its topic. */
  postEvent(topic: string, data?: unknown): Promise<{ seq: number }> {
    return this.events.post(topic, data, null);
  }

  /**
   * The whole conversation of a `model.complete` request of `pid`: its
   * messages, after the transcript messages it references (checked against
   * the stored transcript, `EINVAL` when they differ).
   */
  resolveConversation(pid: number, request: ConversationRequest): Promise<Conversation> {
    return this.#transcripts.resolve(pid, request);
  }

  /**
   * The change that appends an exchange of `pid` to its transcript, charged
   * to its `storageBytes` quota in the same commit (`EBUDGET` over the
   * quota), for the commit of the call's journal record; its result is the
   * reference to the conversation through the reply when the transcript
   * holds exactly it.
   */
  prepareTranscript(
    pid: number,
    request: ConversationRequest,
    reply: ModelReply,
  ): Promise<StoreChange<TranscriptRef | undefined>> {
    return this.#transcripts.prepareRecord(pid, request, reply);
  }

  /** The transcript of a process: the messages exchanged with the model. */
  transcript(pid: number): Promise<TranscriptEntry[]> {
    return this.#transcripts.read(pid);
  }

  /**
   * The model provider a process uses: the one its model spec names (the
   * operator's `--model`, inherited by its descendants); else the kernel's
   * own provider; else, with a resolver, the provider of the model it calls.
   * Fails with one line for a provider that cannot be resolved.
   */
  modelFor(proc: ProcessRecord): Promise<ModelProvider> {
    return this.#models.forProcess(proc, (p) => this.imageOf(p));
  }

  /**
   * How commands are confined on this host: `bwrap`, `none` (the operator's
   * choice) or `unavailable`, with a one-line detail.
   */
  async execSandboxStatus(): Promise<{ mode: "bwrap" | "none" | "unavailable"; detail: string }> {
    if (!this.sandbox) {
      return {
        mode: "none",
        detail: "commands run unconfined as the host user (--exec-sandbox none)",
      };
    }
    const status = await this.sandbox.status();
    return status.ok
      ? {
        mode: "bwrap",
        detail: `commands run in a bubblewrap sandbox (${status.bwrap}; process limit by ${
          status.processLimit === "cgroup" ? "a pids cgroup" : "RLIMIT_NPROC"
        })`,
      }
      : { mode: "unavailable", detail: `${sandboxUnavailable(status)}; exec.run is refused` };
  }

  /** Stops every running program, flushes the journal and closes the store (if the kernel opened it). */
  async close(): Promise<void> {
    if (this.closed) return;
    await this.#scheduler.close();
    // Starts waiting for a cell would wait for cells only the shutdown frees.
    this.cells.refuseWaiting();
    this.waits.stop();
    await this.waits.settled();
    // Park what was running: it replays from its journal on the next start.
    await this.#scheduler.shutdown();
    await this.cells.close();
    await this.journal.close();
    if (this.#ownsSandbox) await this.sandbox?.close();
    if (this.#ownsStore) this.store.close();
  }

  #requireRuns(action: string): void {
    if (!this.#scheduler.runs) {
      throw new SyscallError("EINVAL", `Cannot ${action}: this kernel was opened with runs: false`);
    }
  }
}
