/**
 * The kernel: the process table, images, capabilities, Object Memory,
 * journal and audit over one store, the broker with the kernel's syscall
 * handlers, and the executions that run programs in cells.
 *
 * @module
 */

import { AuditLog } from "../broker/audit.ts";
import { type AskRequest, Broker, type CallContext, PARKED } from "../broker/broker.ts";
import { type Capability, type CapabilitySpec, formatCapability } from "../broker/capability.ts";
import { CapabilityStore } from "../broker/capability_store.ts";
import { SyscallError } from "../broker/errors.ts";
import { escapeGlob } from "../broker/glob.ts";
import {
  Journal,
  type JournalOptions,
  type JournalRecord,
  loadJournal,
  putRecord,
} from "../broker/journal.ts";
import { parsePolicy, type PolicyRule, stackPolicy } from "../broker/policy.ts";
import { readChunked, writeChunked } from "./chunks.ts";
import { CellPool } from "./cell_pool.ts";
import { cellOptionsOf, DEFAULT_LIMITS, Execution, type ProcessLimits } from "./execution.ts";
import { type FsProvider, LocalFs } from "./fs_provider.ts";
import {
  deriveGrants,
  type GrantImage,
  type GrantSource,
  imageCeiling,
  isWithinCeiling,
  parseGrant,
} from "./grants.ts";
import { imageModelId, ImageRegistry, type RegisteredImage } from "./image.ts";
import type { Message, ModelProvider } from "./model.ts";
import { DEFAULT_MODEL_ID, modelIdOfSpec, specOfModelId } from "./model_spec.ts";
import { ObjectMemory, privateNamespace } from "./object_memory.ts";
import { StorageQuotas } from "./storage_quota.ts";
import { TopicEvents } from "./events.ts";
import { HumanQueue, type HumanResponder } from "./human_queue.ts";
import { Mailbox } from "./mailbox.ts";
import { Waits } from "./waits.ts";
import { Snapshots } from "./snapshots.ts";
import {
  type Budget,
  type BudgetKey,
  budgetLeft,
  END_STATES,
  narrowBudget,
  type ProcessRecord,
  type ProcessState,
  ProcessTable,
  type Usage,
} from "./process_table.ts";
import { openStore, type Store } from "./store.ts";
import { copyCheckpoint } from "./syscalls/ckpt.ts";
import { handlerTable } from "./syscalls/mod.ts";
import { ToolTables } from "./jit_tools.ts";
import { LocalShell, type ShellProvider } from "./shell_provider.ts";
import { removeDeadHostFolders } from "./host_children.ts";
import { ExecSandbox, type ExecSandboxMode, sandboxUnavailable } from "./exec_sandbox.ts";
import { type Launch, Scheduler } from "./scheduler.ts";
import { LocalNet, type NetProvider } from "./net_provider.ts";

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
  /** Most cells (running programs) at once; more runnable processes queue (default 16). */
  maxCells?: number;
  /**
   * Cells kept started ahead of need, Worker up (default 0). A process with
   * the kernel's default limits takes one instead of starting a cold cell.
   */
  warmCells?: number;
  /**
   * Whether this kernel runs processes (default true). One that does not
   * (a CLI verb that answers, signals, spawns or restores) only changes the
   * store: it never starts an execution nor a timer, and what it makes
   * runnable is picked up by the host that serves the store, which follows
   * the store's transitions (see {@link Kernel.recover}).
   */
  runs?: boolean;
}

/**
 * How often a kernel that runs processes reads the transition counter of a
 * store file for changes other OS processes made (SQLite has no
 * cross-process watch): half of it is the median delay of a wake-up.
 */
const FILE_FEED_POLL_MS = 40;

/** The same for a KV Connect store, where `kv.watch` does the work and this is a safety net. */
const WATCHED_FEED_POLL_MS = 1000;

/** What an operator (CLI, HTTP, library) asks for when spawning. */
export interface SpawnOptions {
  /** `name@version` or digest of a registered image. */
  image: string;
  /** The workspace root: relative fs scopes resolve against it. */
  workspace: string;
  /** The process's input. */
  input?: unknown;
  /** Capabilities in text form (default: the image's ceiling). */
  capabilities?: readonly string[];
  /** Operator policy rules, added to the image's. */
  policy?: readonly PolicyRule[];
  /** Model spec, e.g. `scripted:turns.json`. */
  model?: string;
  /** Working directory (default: the workspace root). */
  cwd?: string;
  /** Resource budgets of the process. */
  budget?: Budget;
}

/** What `proc.spawn` asks for. */
export interface ChildSpawnOptions {
  /** `name@version` or digest of a registered image. */
  image: string;
  /** The child's input. */
  input?: unknown;
  /** Capabilities in text form for the child. */
  capabilities?: readonly string[];
  /** Policy rules added to the image's. */
  policy?: readonly PolicyRule[];
  /** The child's working directory. */
  cwd?: string;
  /** What happens to the child when the caller ends. */
  onParentExit?: "kill" | "orphan";
  /** Set for a JIT tool call: audited under the tool (and charged to the children budget). */
  tool?: { name: string; digest: string };
}

/** Largest process input, in JSON bytes (it lives in the process record). */
export const MAX_INPUT_CHARS = 32 * 1024;

/** One transcript entry: a message exchanged with the model. */
export type TranscriptEntry = Message;

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
  /** Limits every process runs under, before an image's own. */
  readonly limits: ProcessLimits;
  /** Warm cells, started ahead of need. */
  readonly cells: CellPool;
  /** The clock. */
  readonly now: () => number;
  #model: ModelProvider | undefined;
  #resolveModel: ((spec: string) => Promise<ModelProvider>) | undefined;
  #models = new Map<string, Promise<ModelProvider>>();
  #scheduler: Scheduler<Execution>;
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
    this.#model = options.model;
    this.#resolveModel = options.resolveModel;
    this.cells = new CellPool(options.warmCells ?? 0, cellOptionsOf(this.limits));
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
      prepare: (record) => this.#prepare(record),
    }, { maxCells: options.maxCells ?? 16, runs: options.runs ?? true });
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

  /** Registered image of a process (with its entry source). */
  async imageOf(proc: ProcessRecord): Promise<RegisteredImage> {
    const image = await this.images.get(proc.digest);
    if (!image) {
      throw new SyscallError("ENOENT", `Cannot find image "${proc.image}" of process ${proc.pid}`);
    }
    return image;
  }

  /** Creates a process for an operator and makes it runnable. Does not start it. */
  async spawn(options: SpawnOptions): Promise<ProcessRecord> {
    if (JSON.stringify(options.input ?? null).length > MAX_INPUT_CHARS) {
      throw new SyscallError(
        "EINVAL",
        `Cannot spawn "${options.image}": its input is over ${MAX_INPUT_CHARS} bytes`,
      );
    }
    const image = await this.#requireImage(options.image);
    const workspace = await this.#realDir(options.workspace, "workspace");
    const { grants, model } = deriveGrants({
      kind: "spawn",
      image: _grantImage(image),
      workspace,
      requested: options.capabilities,
      model: options.model
        ? modelIdOfSpec(options.model)
        : imageModelId(image.image) ?? DEFAULT_MODEL_ID,
      now: this.now(),
    });
    const cwd = options.cwd ? await this.fs.resolve(workspace, options.cwd) : workspace;
    return await this.processes.create(
      {
        ppid: null,
        image: image.tag,
        digest: image.digest,
        cwd,
        workspace,
        input: options.input,
        model: options.model,
        ownModel: model,
        policy: [...parsePolicy(image.image.policy, "image"), ...(options.policy ?? [])],
        onParentExit: "kill",
        budget: { ...image.image.budget, ...options.budget },
      },
      this.now(),
      {
        runnable: true,
        setup: this.#grantsSetup(grants.map((g) => ({ ...g, grantedBy: "operator" })), []),
      },
    );
  }

  /** Creates a child of `ppid` with attenuated capabilities and starts it. */
  async spawnChild(ppid: number, options: ChildSpawnOptions): Promise<ProcessRecord> {
    if (JSON.stringify(options.input ?? null).length > MAX_INPUT_CHARS) {
      throw new SyscallError(
        "EINVAL",
        `Cannot spawn "${options.image}": its input is over ${MAX_INPUT_CHARS} bytes`,
      );
    }
    await this.processes.require(ppid);
    const image = await this.#requireImage(options.image);
    // Reserve the child (a JIT tool call too) in the budget first; give it back if creation fails.
    await this.reserve(ppid, "children", { least: 1 });
    try {
      return await this.#createChild(ppid, image, options);
    } catch (error) {
      await this.charge(ppid, { children: -1 });
      throw error;
    }
  }

  async #createChild(
    ppid: number,
    image: RegisteredImage,
    options: ChildSpawnOptions,
  ): Promise<ProcessRecord> {
    const parent = await this.processes.require(ppid);
    const parentImage = await this.imageOf(parent);
    const { grants, model } = deriveGrants({
      kind: "child",
      image: _grantImage(image),
      workspace: parent.workspace,
      requested: options.capabilities,
      source: await this.#grantSource(parent, parentImage),
      now: this.now(),
    });
    const cwd = options.cwd ? await this.fs.resolve(parent.cwd, options.cwd) : parent.cwd;
    if (options.cwd && (await this.fs.stat(cwd)).kind !== "dir") {
      throw new SyscallError("EINVAL", `Cannot spawn in "${options.cwd}": not a directory`);
    }
    // The parents of derived grants must still exist when the child is made.
    const checks: Deno.KvEntryMaybe<unknown>[] = [];
    for (let i = 0; i < grants.length; i += 10) {
      checks.push(
        ...await this.store.kv.getMany(grants.slice(i, i + 10).map((g) => ["cap", g.parent!.id])),
      );
    }
    if (checks.some((entry) => entry.value === null)) {
      throw new SyscallError(
        "EPERM",
        "Cannot spawn: a capability it would derive from was revoked",
      );
    }
    const record = await this.processes.create(
      {
        ppid,
        image: image.tag,
        digest: image.digest,
        cwd,
        workspace: parent.workspace,
        input: options.input,
        model: parent.model,
        ownModel: model,
        policy: stackPolicy(
          parent.policy,
          parsePolicy(image.image.policy, "image"),
          options.policy ?? [],
        ),
        onParentExit: options.onParentExit ?? "kill",
        budget: narrowBudget(image.image.budget ?? {}, budgetLeft(parent, this.now())),
        limits: this.#limitsOf(parent, parentImage),
        tool: options.tool,
      },
      this.now(),
      {
        runnable: true,
        setup: this.#grantsSetup(
          grants.map(({ spec, parent: from }) => ({
            spec,
            grantedBy: `pid:${ppid}`,
            parent: from,
          })),
          checks,
        ),
      },
    );
    this.start(record.pid);
    return record;
  }

  /** Mutations that grant `grants` and the private namespace to a process being created. */
  #grantsSetup(
    grants: readonly { spec: CapabilitySpec; grantedBy: string; parent?: Capability }[],
    checks: Deno.AtomicCheck[],
  ): (op: Deno.AtomicOperation, pid: number) => void {
    return (op, pid) => {
      for (const check of checks) op.check(check);
      for (const { spec, grantedBy, parent } of grants) {
        this.caps.prepareGrant(pid, spec, { grantedBy, parent, now: this.now() }).apply(op);
      }
      this.caps.prepareGrant(pid, privateNamespace(pid), { grantedBy: "kernel", now: this.now() })
        .apply(op);
    };
  }

  /** True once {@link close} began. */
  get closed(): boolean {
    return this.#scheduler.closed;
  }

  /**
   * Runs a runnable process in a cell, now or when a cell frees up (at most
   * `maxCells` run at once). Returns at once. A process whose previous cell
   * is still stopping starts once that cell is gone.
   */
  start(pid: number): void {
    this.#scheduler.start(pid);
  }

  /**
   * Gets ready to run a runnable process: its image, before it is claimed;
   * then, once it is `running`, its execution, replaying from its latest
   * checkpoint.
   */
  async #prepare(
    record: ProcessRecord,
  ): Promise<(running: ProcessRecord) => Promise<Launch<Execution>>> {
    const image = await this.imageOf(record);
    return async (running) => {
      const limits = this.#limitsOf(running, image);
      const { firstSeq, checkpoint } = await this.#replayStart(running);
      const journal = await loadJournal(this.store.kv, running.pid, firstSeq);
      const execution = new Execution(this, running, limits, { firstSeq, journal });
      const entry = image.image.entry === "libos:agent"
        ? {
          kind: "agent" as const,
          config: { system: image.image.system, tools: image.image.tools },
        }
        : { kind: "module" as const, source: image.entrySource ?? "" };
      return { execution, start: () => execution.start(entry, checkpoint) };
    };
  }

  /** Where replay of a process starts: after its latest checkpoint, or at `replayFrom`. */
  async #replayStart(record: ProcessRecord): Promise<{ firstSeq: number; checkpoint?: unknown }> {
    const from = record.replayFrom ?? 1;
    const latest = this.store.kv.list<{ seq: number }>(
      { start: ["ckpt", record.pid, from], end: ["ckpt", record.pid, Number.MAX_SAFE_INTEGER] },
      { reverse: true, limit: 1 },
    );
    for await (const entry of latest) {
      const state = await readChunked(this.store.kv, ["ckpt_state", record.pid, entry.value.seq]);
      const done =
        (await this.store.kv.get<JournalRecord>(["journal", record.pid, entry.value.seq])).value;
      // A checkpoint counts once its call has a journal record.
      if (done && state !== undefined) return { firstSeq: entry.value.seq + 1, checkpoint: state };
    }
    return { firstSeq: from };
  }

  /** Stops the cell of `pid`, if it has one, and waits until it is gone. */
  stopExecution(pid: number): Promise<void> {
    return this.#scheduler.stopExecution(pid);
  }

  /** The execution running `pid`, if any (for tests and diagnostics). */
  executionOf(pid: number): Execution | undefined {
    return this.#scheduler.executionOf(pid);
  }

  /** Spawns, starts and waits for a process: the `libos run` path. */
  async run(options: SpawnOptions): Promise<ProcessRecord> {
    this.#requireRuns("run a process");
    const proc = await this.spawn(options);
    this.start(proc.pid);
    return await this.waitFor(proc.pid);
  }

  /**
   * Ends a process in `state` (idempotent: an ended process stays as it
   * is), stops its cell, and applies `onParentExit` to its children.
   */
  async finish(
    pid: number,
    state: Extract<ProcessState, "exited" | "failed" | "killed">,
    outcome: { result?: unknown; error?: { code?: string; message: string }; reason?: string } = {},
  ): Promise<void> {
    this.#scheduler.ending(pid);
    const current = await this.processes.get(pid);
    if (!current || END_STATES.has(current.state)) return;
    // What the process did is in the journal and audit before it is seen to end.
    await this.journal.flush();
    const patch: Partial<ProcessRecord> = {};
    if (outcome.result !== undefined) patch.result = outcome.result;
    if (outcome.error) patch.error = outcome.error;
    try {
      await this.processes.transition(pid, state, {
        patch,
        reason: outcome.reason ?? outcome.error?.message,
      });
    } catch (error) {
      if (!(error instanceof SyscallError)) throw error;
    }
    this.#scheduler.executionOf(pid)?.stop(`The process ${state}`);
    this.caps.invalidate(pid);
    const ended = await this.processes.require(pid);
    for await (const waiter of this.store.kv.list({ prefix: ["wait_child", pid] })) {
      const [, , parent, seq] = waiter.key as [string, number, number, number];
      await this.waits.complete(parent, seq, {
        ok: true,
        value: { pid, state: ended.state, result: ended.result, error: ended.error },
      });
    }
    for (const child of await this.processes.children(pid)) {
      const record = await this.processes.get(child);
      if (record && !END_STATES.has(record.state) && record.onParentExit === "kill") {
        await this.finish(child, "killed", { reason: `Its parent ${pid} ${state}` });
      }
    }
  }

  /** Resolves with the record once `pid` is in an end state. */
  waitFor(pid: number, options: { timeoutMs?: number } = {}): Promise<ProcessRecord> {
    return new Promise((resolve, reject) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const unsubscribe = this.processes.subscribe((record) => {
        if (record.pid === pid && END_STATES.has(record.state)) done(record);
      });
      const done = (record: ProcessRecord) => {
        unsubscribe();
        if (timer !== undefined) clearTimeout(timer);
        resolve(record);
      };
      if (options.timeoutMs !== undefined) {
        timer = setTimeout(() => {
          unsubscribe();
          reject(new SyscallError("ETIMEDOUT", `Cannot wait for process ${pid}: timed out`));
        }, options.timeoutMs);
      }
      this.processes.require(pid).then((record) => {
        if (END_STATES.has(record.state)) done(record);
      }, (error) => {
        unsubscribe();
        if (timer !== undefined) clearTimeout(timer);
        reject(error);
      });
    });
  }

  /**
   * Delivers a signal. `terminate` and `kill` end the process as `killed`
   * (`onParentExit` then applies to its children); `pause` stops its cell
   * (it replays on `resume`) or holds it while blocked; `interrupt` fails
   * its blocked syscall with `EINTR`.
   */
  async signal(
    pid: number,
    signal: "pause" | "resume" | "interrupt" | "terminate" | "kill",
    options: { by?: string } = {},
  ): Promise<void> {
    const record = await this.processes.require(pid);
    const by = options.by ?? "operator";
    if (END_STATES.has(record.state)) {
      throw new SyscallError("EINVAL", `Cannot signal process ${pid}: it has ${record.state}`);
    }
    if (signal === "terminate" || signal === "kill") {
      await this.finish(pid, "killed", { reason: `${signal} signal from ${by}` });
      return;
    }
    if (signal === "pause") {
      if (record.state === "paused") return;
      await this.processes.update(pid, (p) => ({
        state: "paused",
        pausedFrom: p.state === "blocked" ? "blocked" : "runnable",
      }), { reason: `pause signal from ${by}` });
      this.#scheduler.executionOf(pid)?.stop("The process was paused");
      return;
    }
    if (signal === "resume") {
      if (record.state !== "paused") {
        throw new SyscallError(
          "EINVAL",
          `Cannot resume process ${pid}: it is ${record.state}, not paused`,
        );
      }
      const next = await this.processes.update(pid, (p) => ({
        state: p.pausedFrom === "blocked" ? "blocked" : "runnable",
        pausedFrom: undefined,
      }), { reason: `resume signal from ${by}` });
      if (next.state === "runnable") this.start(pid);
      return;
    }
    if (
      record.state !== "blocked" && !(record.state === "paused" && record.pausedFrom === "blocked")
    ) {
      throw new SyscallError(
        "EINVAL",
        `Cannot interrupt process ${pid}: it is not blocked in a syscall`,
      );
    }
    await this.waits.complete(pid, record.waitSeq!, {
      ok: false,
      error: { code: "EINTR", message: `Interrupted by a signal from ${by}` },
    });
  }

  /** Posts an event from outside (library, HTTP), waking processes waiting on its topic. */
  postEvent(topic: string, data?: unknown): Promise<{ seq: number }> {
    return this.events.post(topic, data, null);
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
    this.#scheduler.serve();
    let started = 0;
    this.waits.start();
    for (const record of await this.processes.list()) {
      if (record.state === "running" && !this.#scheduler.executionOf(record.pid)) {
        await this.processes.transition(record.pid, "runnable", { reason: "the host restarted" });
        this.start(record.pid);
        started++;
      } else if (record.state === "runnable") {
        this.start(record.pid);
        started++;
      } else if (record.state === "created") {
        // A fork or snapshot fork that the host died in the middle of.
        await this.finish(record.pid, "failed", {
          error: { message: "Its creation was interrupted by a host restart" },
        });
      } else if (record.state === "blocked" && record.waitSeq !== undefined) {
        const wait =
          (await this.store.kv.get<JournalRecord>(["journal", record.pid, record.waitSeq])).value;
        if (wait?.wait) await this.waits.recheck(record.pid, record.waitSeq, wait.wait);
      }
    }
    return started;
  }

  /** Resolves once no live (not exited, failed or killed) process remains in the store. */
  idle(): Promise<void> {
    return this.#scheduler.idle();
  }

  /**
   * `proc.fork`: a child running the same image from the same point. It
   * gets a copy of the parent's private object namespace, attenuated copies
   * of the parent's capabilities (or the subset asked for), and a copy of
   * the parent's journal up to the fork, so it replays to the fork and sees
   * `{ pid: 0 }` where the parent sees the child's pid.
   */
  async fork(
    ctx: CallContext,
    options: { capabilities?: readonly string[]; input?: unknown },
  ): Promise<ProcessRecord> {
    await this.reserve(ctx.pid, "children", { least: 1 });
    const parent = await this.processes.require(ctx.pid);
    const parentImage = await this.imageOf(parent);
    const { grants, model } = deriveGrants({
      kind: "fork",
      workspace: parent.workspace,
      requested: options.capabilities,
      source: await this.#grantSource(parent, parentImage),
      now: this.now(),
    });
    const child = await this.processes.create({
      ppid: parent.pid,
      image: parent.image,
      digest: parent.digest,
      cwd: parent.cwd,
      workspace: parent.workspace,
      input: options.input ?? parent.input,
      model: parent.model,
      ownModel: model,
      policy: parent.policy,
      onParentExit: "kill",
      budget: budgetLeft(parent, this.now()),
      limits: this.#limitsOf(parent, parentImage),
      forkedFrom: parent.pid,
      replayFrom: parent.replayFrom,
      seed: parent.seed,
      startedAt: parent.startedAt,
    }, this.now());
    for (const { spec, parent: from, expiresAt } of grants) {
      await this.caps.grant(child.pid, spec, {
        grantedBy: `pid:${parent.pid}`,
        parent: from,
        expiresAt,
        now: this.now(),
      });
    }
    await this.#grantPrivateNamespace(child.pid);
    await this.objects.copyNamespace(`proc/${parent.pid}`, `proc/${child.pid}`, {
      chargeTo: child.pid,
    });
    await this.tools.copy(parent.pid, child.pid);
    await this.#copyJournal(parent, child.pid, ctx);
    const runnable = await this.processes.transition(child.pid, "runnable", {
      reason: `forked from ${parent.pid}`,
    });
    this.start(runnable.pid);
    return runnable;
  }

  async #copyJournal(parent: ProcessRecord, child: number, ctx: CallContext): Promise<void> {
    const kv = this.store.kv;
    const { firstSeq } = await this.#replayStart(parent);
    if (firstSeq > (parent.replayFrom ?? 1)) {
      await copyCheckpoint(kv, parent.pid, child, firstSeq - 1);
    }
    const records = [...(await loadJournal(kv, parent.pid, firstSeq)).values()]
      .filter((r) => r.seq < ctx.seq)
      .map((r) => ({ ...r, pid: child }));
    records.push({
      pid: child,
      seq: ctx.seq,
      name: "proc.fork",
      argsDigest: ctx.argsDigest,
      effect: "effect",
      phase: "done",
      at: this.now(),
      ok: true,
      value: { pid: 0 },
    });
    for (let i = 0; i < records.length; i += 20) {
      const op = kv.atomic();
      for (const record of records.slice(i, i + 20)) putRecord(op, record);
      await op.commit();
    }
  }

  /**
   * `proc.exec`: the process keeps its pid and runs another image from its
   * start. Capabilities beyond the new image's ceiling are revoked; replay
   * starts after the exec call.
   */
  async exec(
    ctx: CallContext,
    options: { image: string; input?: unknown },
  ): Promise<typeof PARKED> {
    const target = await this.#requireImage(options.image);
    const proc = await this.processes.require(ctx.pid);
    const image = await this.imageOf(proc);
    // The process runs on under the new image with nothing its old one lacked.
    const limits = this.#limitsOf(proc, image);
    const { revoke, model } = deriveGrants({
      kind: "exec",
      image: _grantImage(target),
      workspace: proc.workspace,
      source: await this.#grantSource(proc, image),
      now: this.now(),
    });
    for (const cap of revoke) await this.caps.revoke(cap.id);
    const op = this.store.kv.atomic();
    putRecord(op, {
      pid: ctx.pid,
      seq: ctx.seq,
      name: "proc.exec",
      argsDigest: ctx.argsDigest,
      effect: "effect",
      phase: "done",
      at: this.now(),
      ok: true,
      value: null,
    });
    await op.commit();
    await this.processes.update(ctx.pid, (p) => ({
      state: "runnable",
      image: target.tag,
      digest: target.digest,
      input: options.input ?? p.input,
      replayFrom: ctx.seq + 1,
      ownModel: model,
      policy: stackPolicy(p.policy, parsePolicy(target.image.policy, "image")),
      budget: narrowBudget(p.budget, target.image.budget ?? {}),
      limits,
    }), { reason: `exec ${target.tag}` });
    this.start(ctx.pid);
    return PARKED;
  }

  /** Parses a capability for `pid` and checks it against its image's ceiling (for `cap.request`). */
  async withinCeiling(pid: number, text: string): Promise<CapabilitySpec> {
    const { proc, image, ceiling } = await this.#ceilingOf(pid);
    const spec = parseGrant(text, proc.workspace);
    if (!isWithinCeiling(spec, ceiling, this.now())) {
      throw new SyscallError(
        "EPERM",
        `Cannot grant "${formatCapability(spec)}": beyond the ceiling of image "${image.tag}"`,
      );
    }
    return spec;
  }

  async #askHuman(ctx: CallContext, request: AskRequest): Promise<typeof PARKED> {
    const { op, rule, name, args } = request;
    // The grant a human may mint is for this one target, literally: glob
    // characters in its name (a file named `**`) match only themselves.
    const spec: CapabilitySpec = {
      resource: op.resource,
      rights: [op.right],
      scope: escapeGlob(op.target),
    };
    const { image, ceiling } = await this.#ceilingOf(ctx.pid);
    if (!isWithinCeiling(spec, ceiling, this.now())) {
      throw new SyscallError(
        "EPERM",
        `Cannot ${name} "${op.target}": policy "${rule.pattern}" asks, but no human may grant what image "${image.tag}" never allows`,
      );
    }
    return await this.humans.permission(ctx, {
      name,
      args,
      capability: spec,
      reason: `policy "${rule.pattern}" asks`,
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
   * `EBUDGET` when `pid` or an ancestor has spent all of its `key` budget. A
   * quick refusal before work that {@link reserve} charges afterwards.
   */
  checkBudget(pid: number, key: BudgetKey): Promise<void> {
    return this.processes.checkBudget(pid, key);
  }

  /** True when `pid` or an ancestor has a `key` budget (budgets never change once set). */
  isBudgeted(pid: number, key: BudgetKey): Promise<boolean> {
    return this.processes.isBudgeted(pid, key);
  }

  /**
   * Reserves `key` usage for `pid` and charges it to `pid` and every
   * ancestor, in one commit checked against each of their versionstamps: as
   * much of `want.most` (default `want.least`) as every budget on the way
   * has left, and at least `want.least`, else `EBUDGET` and nothing is
   * charged. Concurrent reservations cannot together exceed a budget.
   * Returns the amount reserved; settle with {@link charge}.
   */
  reserve(
    pid: number,
    key: BudgetKey,
    want: { least: number; most?: number },
  ): Promise<number> {
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
   * The model a process calls when it names none and may always call, as
   * `provider/name`: set when it was made (the operator's `--model`, else
   * its image's model, else its parent's), or for a record that predates
   * that, its image's.
   */
  ownModelOf(proc: ProcessRecord, image: RegisteredImage): string {
    return proc.ownModel ?? imageModelId(image.image) ?? DEFAULT_MODEL_ID;
  }

  /** The limits a process runs under: its image's over the kernel's, never above its ceiling. */
  #limitsOf(proc: ProcessRecord, image: RegisteredImage): ProcessLimits {
    const limits = { ...this.limits, ...image.image.limits };
    for (const key of Object.keys(limits) as (keyof ProcessLimits)[]) {
      const ceiling = proc.limits?.[key];
      if (ceiling !== undefined && ceiling < limits[key]) limits[key] = ceiling;
    }
    return limits;
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

  /**
   * The model provider a process uses: the one its model spec names (the
   * operator's `--model`, inherited by its descendants); else the kernel's
   * own provider; else, with a resolver, the provider of the model it calls
   * (an image's `{ "provider": "openai", "name": N }` is `openai:N`). Fails
   * with one line for a provider that cannot be resolved.
   */
  async modelFor(proc: ProcessRecord): Promise<ModelProvider> {
    if (proc.model) return await this.#provider(proc.model);
    if (this.#model) return this.#model;
    const own = this.ownModelOf(proc, await this.imageOf(proc));
    if (!this.#resolveModel || own === DEFAULT_MODEL_ID) {
      throw new SyscallError(
        "ENOSYS",
        "Cannot complete: no model provider is configured (give --model, or name a model in the image)",
      );
    }
    return await this.#provider(specOfModelId(own));
  }

  #provider(spec: string): Promise<ModelProvider> {
    if (!this.#resolveModel) {
      return Promise.reject(
        new SyscallError("ENOSYS", `Cannot use model "${spec}": no model resolver is configured`),
      );
    }
    let provider = this.#models.get(spec);
    if (!provider) {
      provider = this.#resolveModel(spec);
      this.#models.set(spec, provider);
    }
    return provider;
  }

  /**
   * Appends to a process's transcript the messages it sent that are new,
   * then the reply, charged to its `storageBytes` quota in the same commit
   * (`EBUDGET`, and nothing recorded, over the quota).
   */
  async recordTranscript(pid: number, messages: readonly Message[], reply: Message): Promise<void> {
    const countKey = ["transcript_len", pid];
    for (;;) {
      const entry = await this.store.kv.get<number>(countKey);
      const stored = entry.value ?? 0;
      const fresh = [...messages.slice(stored), reply];
      const charge = await this.quotas.prepare(
        [{ pid, bytes: JSON.stringify(fresh).length }],
        `Cannot record the transcript of process ${pid}`,
      );
      const op = this.store.kv.atomic().check(entry).set(countKey, stored + fresh.length);
      fresh.forEach((message, i) => writeChunked(op, ["transcript", pid, stored + i], message));
      charge(op);
      if ((await op.commit()).ok) return;
    }
  }

  /** The transcript of a process: the messages exchanged with the model. */
  async transcript(pid: number): Promise<TranscriptEntry[]> {
    const count = (await this.store.kv.get<number>(["transcript_len", pid])).value ?? 0;
    const out: TranscriptEntry[] = [];
    for (let i = 0; i < count; i++) {
      const message = await readChunked(this.store.kv, ["transcript", pid, i]);
      if (message) out.push(message as TranscriptEntry);
    }
    return out;
  }

  /** Stops every running program, flushes the journal and closes the store (if the kernel opened it). */
  async close(): Promise<void> {
    if (this.closed) return;
    await this.#scheduler.close();
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
      throw new SyscallError(
        "EINVAL",
        `Cannot ${action}: this kernel was opened with runs: false`,
      );
    }
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

  async #requireImage(ref: string): Promise<RegisteredImage> {
    const image = await this.images.get(ref);
    if (!image) {
      throw new SyscallError("ENOENT", `Cannot spawn "${ref}": no such image is registered`);
    }
    return image;
  }

  async #realDir(path: string, what: string): Promise<string> {
    try {
      const real = await Deno.realPath(path);
      if (!(await Deno.stat(real)).isDirectory) throw new Error("not a directory");
      return real;
    } catch (error) {
      throw new SyscallError(
        "ENOENT",
        `Cannot use ${what} "${path}": ${
          error instanceof Deno.errors.NotFound ? "it does not exist" : (error as Error).message
        }`,
      );
    }
  }

  /** A process, its image, and that image's ceiling for the process's workspace. */
  async #ceilingOf(
    pid: number,
  ): Promise<{ proc: ProcessRecord; image: RegisteredImage; ceiling: CapabilitySpec[] }> {
    const proc = await this.processes.require(pid);
    const image = await this.imageOf(proc);
    return { proc, image, ceiling: imageCeiling(image.image.capabilities, proc.workspace) };
  }

  /**
   * `EPERM` unless `spec` lies within the ceiling of `pid`'s image, in every
   * attribute (for a capability given to a running process).
   */
  async requireWithinCeilingOf(
    pid: number,
    spec: CapabilitySpec & { expiresAt?: number },
  ): Promise<void> {
    const { image, ceiling } = await this.#ceilingOf(pid);
    if (!isWithinCeiling(spec, ceiling, this.now())) {
      throw new SyscallError(
        "EPERM",
        `Cannot give "${
          formatCapability(spec)
        }" to process ${pid}: beyond the ceiling of image "${image.tag}"`,
      );
    }
  }

  /** `proc` as the source of a grant derivation: its image, model, capabilities and policy. */
  async #grantSource(proc: ProcessRecord, image: RegisteredImage): Promise<GrantSource> {
    return {
      pid: proc.pid,
      image: _grantImage(image),
      model: this.ownModelOf(proc, image),
      held: await this.caps.list(proc.pid, this.now()),
      policy: proc.policy,
    };
  }

  async #grantPrivateNamespace(pid: number): Promise<void> {
    await this.caps.grant(pid, privateNamespace(pid), { grantedBy: "kernel", now: this.now() });
  }
}

/** A registered image as grant derivation sees it. */
function _grantImage(image: RegisteredImage): GrantImage {
  return {
    tag: image.tag,
    digest: image.digest,
    capabilities: image.image.capabilities,
    model: imageModelId(image.image),
  };
}
