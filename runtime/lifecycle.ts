/**
 * How processes are made and remade: an operator's spawn, a child a
 * process spawns (a JIT tool call too), a fork, and an exec into another
 * image. Each takes its authority from {@link deriveGrants}, its budget
 * and limits from the process it is made from (never more), and commits
 * its grants with its record, or, for a fork, before it becomes runnable.
 *
 * @module
 */

import type { EarlyStart } from "./cell_pool.ts";
import { type CallContext, PARKED } from "../broker/broker.ts";
import type { Capability, CapabilitySpec } from "../broker/capability.ts";
import type { CapabilityStore } from "../broker/capability_store.ts";
import { SyscallError } from "../broker/errors.ts";
import {
  type ClaimedWrites,
  type ParkedAudit,
  putRecord,
  StaleWriteError,
} from "../broker/journal.ts";
import { parsePolicy, type PolicyRule, stackPolicy } from "../broker/policy.ts";
import { copyJournalToFork } from "./checkpoints.ts";
import type { FsProvider } from "./fs_provider.ts";
import { deriveGrants, type GrantImage, type GrantSource } from "./grants.ts";
import { imageModelId, type ImageRegistry, type RegisteredImage } from "./image.ts";
import { DEFAULT_MODEL_ID, modelIdOfSpec } from "./model_spec.ts";
import { type ObjectMemory, privateNamespace } from "./object_memory.ts";
import {
  type Budget,
  budgetLeft,
  narrowBudget,
  newSeed,
  type ProcessLimits,
  type ProcessRecord,
  type ProcessTable,
} from "./process_table.ts";
import type { Store } from "./store.ts";
import type { Admission } from "./scheduler.ts";
import type { ParkedCall, Waits } from "./waits.ts";

/** Largest process input, in JSON bytes (it lives in the process record). */
export const MAX_INPUT_CHARS = 32 * 1024;

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
  /** Who spawns it: an API token's name (default `local`, the operator on this machine). */
  principal?: string;
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
  /**
   * The parent's call that waits for the child to end (a JIT tool call):
   * the parent is blocked on it in the commit that makes the child, so a
   * crash leaves both or neither.
   */
  waitedBy?: ParkedCall;
  /**
   * The audit entry of the `waitedBy` call: it is committed in the commit
   * that makes the child, before anything the child does.
   */
  waitedByAudit?: ParkedAudit;
  /**
   * The parent's record as the caller just read it: the child is decided
   * and charged on it without reading it again (the create commit checks
   * it, so a parent changed since is read again and decided on anew).
   */
  parentEntry?: Deno.KvEntry<ProcessRecord>;
}

/** What making and remaking processes needs from the kernel. */
export interface LifecycleKernel {
  /** The store: a child's grants are checked against it, a fork's journal copied in it. */
  readonly store: Pick<Store, "kv">;
  /** The process table, where budgets are reserved too. */
  readonly processes: Pick<
    ProcessTable,
    "require" | "create" | "update" | "transition" | "reserve" | "charge"
  >;
  /** The registered images. */
  readonly images: Pick<ImageRegistry, "get">;
  /** The capability store. */
  readonly caps: Pick<
    CapabilityStore,
    "list" | "cachedHoldings" | "invalidate" | "prepareGrant" | "grant" | "revoke"
  >;
  /** The filesystem provider, for working directories. */
  readonly fs: Pick<FsProvider, "resolve" | "stat">;
  /** The Object Memory: a fork gets a copy of its parent's private namespace. */
  readonly objects: Pick<ObjectMemory, "copyNamespace">;
  /** The JIT tool tables: a fork gets a copy of its parent's. */
  readonly tools: { copy(from: number, to: number): Promise<void> };
  /** The waits: a parent that waits for its child blocks in the commit that makes it. */
  readonly waits: Pick<Waits, "recordsBefore" | "blocking">;
  /** Limits every process runs under, before an image's own. */
  readonly limits: ProcessLimits;
  /** The clock. */
  readonly now: () => number;
  /** The registered image of a process. */
  imageOf(proc: ProcessRecord): Promise<RegisteredImage>;
  /** The model a process calls when it names none (`provider/name`). */
  ownModelOf(proc: ProcessRecord, image: RegisteredImage): string;
  /** Runs a runnable process, now or once a cell frees up. */
  start(pid: number): void;
  /** A place to run a process made already `running`, when one is free now. */
  admit(): Admission | undefined;
  /** Starts the program of a root process of `image` while it is being made. */
  startEarly(
    image: RegisteredImage,
    made: Pick<ProcessRecord, "input" | "seed" | "createdAt" | "startedAt" | "principal">,
  ): EarlyStart;
}

/**
 * Creates a process for an operator and makes it runnable; with `start`, also
 * starts it (made `running` at once when the run queue has room, see
 * {@link LifecycleKernel.admit}).
 */
export async function spawnProcess(
  kernel: LifecycleKernel,
  options: SpawnOptions,
  how: { start?: boolean } = {},
): Promise<ProcessRecord> {
  _requireInputSize(options);
  const image = await _requireImage(kernel, options.image);
  const now = kernel.now();
  const workspace = await _realDir(options.workspace, "workspace");
  const { grants, model } = deriveGrants({
    kind: "spawn",
    image: _grantImage(image),
    workspace,
    requested: options.capabilities,
    model: options.model
      ? modelIdOfSpec(options.model)
      : imageModelId(image.image) ?? DEFAULT_MODEL_ID,
    now,
  });
  const cwd = options.cwd ? await kernel.fs.resolve(workspace, options.cwd) : workspace;
  const policy = [...parsePolicy(image.image.policy, "image"), ...(options.policy ?? [])];
  const admission = how.start ? kernel.admit() : undefined;
  const seed = newSeed();
  const principal = options.principal ?? "local";
  // To be made `running`, its program starts now, while its create commit is made.
  const early = admission &&
    kernel.startEarly(image, {
      input: options.input,
      seed,
      createdAt: now,
      startedAt: now,
      principal,
    });
  let record: ProcessRecord;
  try {
    record = await kernel.processes.create(
      {
        ppid: null,
        image: image.tag,
        digest: image.digest,
        cwd,
        workspace,
        input: options.input,
        seed,
        model: options.model,
        ownModel: model,
        policy,
        principal,
        onParentExit: "kill",
        budget: { ...image.image.budget, ...options.budget },
      },
      now,
      {
        runnable: true,
        running: admission !== undefined,
        setup: _grantsSetup(kernel, grants.map((g) => ({ ...g, grantedBy: "operator" }))),
      },
    );
  } catch (error) {
    admission?.cancel();
    early?.abandon();
    throw error;
  }
  if (admission) admission.launch(record, { fresh: true, early });
  else if (how.start) kernel.start(record.pid);
  return record;
}

/**
 * A call that makes a child for its caller to wait on met its caller
 * stopped (paused, or put back to runnable) before the child was made:
 * nothing was made, and the call has no outcome: the caller's next run
 * replays up to it and makes it again.
 */
export class CallerStopped extends Error {
  /** Creates the error for `pid`, now in `state`. */
  constructor(pid: number, state: string) {
    super(`Process ${pid} stopped (${state}) before its call made a child`);
    this.name = "CallerStopped";
  }
}

/** Creates a child of `ppid` with attenuated capabilities and starts it. */
export async function spawnChild(
  kernel: LifecycleKernel,
  ppid: number,
  options: ChildSpawnOptions,
): Promise<ProcessRecord> {
  _requireInputSize(options);
  const image = await _requireImage(kernel, options.image);
  // The child (a JIT tool call too) is charged to the children budgets in its create commit.
  return await _createChild(kernel, ppid, image, options);
}

/**
 * `proc.fork`: a child running the same image from the same point. It
 * gets a copy of the parent's private object namespace, attenuated copies
 * of the parent's capabilities (or the subset asked for), and a copy of
 * the parent's journal up to the fork, so it replays to the fork and sees
 * `{ pid: 0 }` where the parent sees the child's pid.
 */
export async function forkProcess(
  kernel: LifecycleKernel,
  ctx: CallContext,
  options: { capabilities?: readonly string[]; input?: unknown },
): Promise<ProcessRecord> {
  await kernel.processes.reserve(ctx.pid, "children", { least: 1 });
  const parent = await kernel.processes.require(ctx.pid);
  const parentImage = await kernel.imageOf(parent);
  const { grants, model } = deriveGrants({
    kind: "fork",
    workspace: parent.workspace,
    requested: options.capabilities,
    source: await _grantSource(kernel, parent, parentImage),
    now: kernel.now(),
  });
  const child = await kernel.processes.create({
    ppid: parent.pid,
    principal: parent.principal,
    root: parent.root ?? parent.pid,
    image: parent.image,
    digest: parent.digest,
    cwd: parent.cwd,
    workspace: parent.workspace,
    input: options.input ?? parent.input,
    model: parent.model,
    ownModel: model,
    policy: parent.policy,
    onParentExit: "kill",
    budget: budgetLeft(parent, kernel.now()),
    limits: limitsOf(kernel.limits, parent, parentImage),
    forkedFrom: parent.pid,
    replayFrom: parent.replayFrom,
    seed: parent.seed,
    startedAt: parent.startedAt,
  }, kernel.now());
  for (const { spec, parent: from, expiresAt } of grants) {
    await kernel.caps.grant(child.pid, spec, {
      grantedBy: `pid:${parent.pid}`,
      parent: from,
      expiresAt,
      now: kernel.now(),
    });
  }
  await kernel.caps.grant(child.pid, privateNamespace(child.pid), {
    grantedBy: "kernel",
    now: kernel.now(),
  });
  await kernel.objects.copyNamespace(`proc/${parent.pid}`, `proc/${child.pid}`, {
    chargeTo: child.pid,
  });
  await kernel.tools.copy(parent.pid, child.pid);
  await copyJournalToFork(kernel.store.kv, parent, child.pid, ctx, kernel.now);
  const runnable = await kernel.processes.transition(child.pid, "runnable", {
    reason: `forked from ${parent.pid}`,
  });
  kernel.start(runnable.pid);
  return runnable;
}

/**
 * `proc.exec`: the process keeps its pid and runs another image from its
 * start. Capabilities beyond the new image's ceiling are revoked; replay
 * starts after the exec call.
 */
export async function execImage(
  kernel: LifecycleKernel,
  ctx: CallContext,
  options: { image: string; input?: unknown },
): Promise<typeof PARKED> {
  const target = await _requireImage(kernel, options.image);
  const proc = await kernel.processes.require(ctx.pid);
  const image = await kernel.imageOf(proc);
  // The process runs on under the new image with nothing its old one lacked.
  const limits = limitsOf(kernel.limits, proc, image);
  const { revoke, model } = deriveGrants({
    kind: "exec",
    image: _grantImage(target),
    workspace: proc.workspace,
    source: await _grantSource(kernel, proc, image),
    now: kernel.now(),
  });
  for (const cap of revoke) await kernel.caps.revoke(cap.id);
  const op = kernel.store.kv.atomic();
  putRecord(op, {
    pid: ctx.pid,
    seq: ctx.seq,
    name: "proc.exec",
    argsDigest: ctx.argsDigest,
    effect: "effect",
    phase: "done",
    at: kernel.now(),
    ok: true,
    value: null,
  });
  await op.commit();
  await kernel.processes.update(ctx.pid, (p) => ({
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
  kernel.start(ctx.pid);
  return PARKED;
}

/**
 * The limits a process runs under: its image's over `base` (the kernel's),
 * never above the ceiling its record carries (the limits of the process it
 * was made from).
 */
export function limitsOf(
  base: ProcessLimits,
  proc: Pick<ProcessRecord, "limits">,
  image: RegisteredImage,
): ProcessLimits {
  const limits = { ...base, ...image.image.limits };
  for (const key of Object.keys(limits) as (keyof ProcessLimits)[]) {
    const ceiling = proc.limits?.[key];
    if (ceiling !== undefined && ceiling < limits[key]) limits[key] = ceiling;
  }
  return limits;
}

/**
 * Makes a child of `ppid`, deciding its grants on the parent's
 * capabilities as they are now: when one changed between that read and the
 * create commit (revoked, say), nothing was made and it decides again.
 */
async function _createChild(
  kernel: LifecycleKernel,
  ppid: number,
  image: RegisteredImage,
  options: ChildSpawnOptions,
): Promise<ProcessRecord> {
  for (let attempt = options;; attempt = { ...options, parentEntry: undefined }) {
    try {
      return await _createChildOnce(kernel, ppid, image, attempt);
    } catch (error) {
      if (!(error instanceof StaleWriteError)) throw error;
    }
  }
}

async function _createChildOnce(
  kernel: LifecycleKernel,
  ppid: number,
  image: RegisteredImage,
  options: ChildSpawnOptions,
): Promise<ProcessRecord> {
  const known = options.parentEntry?.value.pid === ppid ? options.parentEntry : undefined;
  const parent = known?.value ?? await kernel.processes.require(ppid);
  const parentImage = await kernel.imageOf(parent);
  // With the parent's entry as just read, this host's copy of its
  // capabilities serves too: the create commit checks they are unchanged,
  // and when they are not, nothing is made and the next attempt reads them.
  const cached = known && kernel.caps.cachedHoldings(ppid, kernel.now());
  const { grants, model } = deriveGrants({
    kind: "child",
    image: _grantImage(image),
    workspace: parent.workspace,
    requested: options.capabilities,
    source: await _grantSource(kernel, parent, parentImage, cached?.capabilities),
    now: kernel.now(),
  });
  const cwd = options.cwd ? await kernel.fs.resolve(parent.cwd, options.cwd) : parent.cwd;
  if (options.cwd && (await kernel.fs.stat(cwd)).kind !== "dir") {
    throw new SyscallError("EINVAL", `Cannot spawn in "${options.cwd}": not a directory`);
  }
  // The parents of derived grants must still exist when the child is made.
  const checks: Deno.KvEntryMaybe<unknown>[] = [];
  for (let i = 0; i < grants.length; i += 10) {
    checks.push(
      ...await kernel.store.kv.getMany(grants.slice(i, i + 10).map((g) => ["cap", g.parent!.id])),
    );
  }
  if (checks.some((entry) => entry.value === null)) {
    // Decided from this host's copy, which is behind: decided again from the store.
    if (cached) {
      kernel.caps.invalidate(ppid);
      throw new StaleWriteError();
    }
    throw new SyscallError(
      "EPERM",
      "Cannot spawn: a capability it would derive from was revoked",
    );
  }
  const checked: Deno.AtomicCheck[] = cached ? [...checks, cached.check] : checks;
  const waitedBy = options.waitedBy;
  // With room to run it now, the child is made `running`: its create commit is its claim.
  const admission = kernel.admit();
  // A parent that blocks on the child: its buffered journal records go into the create commit.
  let before: ClaimedWrites | undefined;
  // What blocks the parent on the child `pid` (the same each time it is asked for that pid).
  let block: { pid: number } & ReturnType<LifecycleKernel["waits"]["blocking"]> | undefined;
  const blocking = (pid: number) =>
    block?.pid === pid
      ? block
      : (block = { pid, ...kernel.waits.blocking(waitedBy!, { kind: "child", pid }) });
  let record: ProcessRecord;
  try {
    const records = waitedBy && await kernel.waits.recordsBefore(ppid, options.waitedByAudit);
    before = records || undefined;
    record = await kernel.processes.create(
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
        principal: parent.principal,
        root: parent.root ?? parent.pid,
        // What the parent has left once this child is charged to it (in the create commit).
        budget: narrowBudget(
          image.image.budget ?? {},
          budgetLeft(
            { ...parent, usage: { ...parent.usage, children: parent.usage.children + 1 } },
            kernel.now(),
          ),
        ),
        limits: limitsOf(kernel.limits, parent, parentImage),
        tool: options.tool,
      },
      kernel.now(),
      {
        runnable: true,
        running: admission !== undefined,
        chargeParent: true,
        checks: checked,
        setup: (op, pid) => {
          _grantsSetup(
            kernel,
            grants.map(({ spec, parent: from }) => ({
              spec,
              grantedBy: `pid:${ppid}`,
              parent: from,
            })),
          )(op, pid);
          if (waitedBy) blocking(pid).apply(op);
        },
        parent: waitedBy && {
          change: (current, pid) => {
            // A caller that is no longer running makes no tool. One that will
            // run again (paused, or put back to runnable) makes the call again
            // then, so this run of it leaves no outcome behind.
            if (current.state === "paused" || current.state === "runnable") {
              throw new CallerStopped(ppid, current.state);
            }
            if (current.state !== "running") {
              throw new SyscallError(
                "EINTR",
                `Cannot finish ${waitedBy.name}: process ${ppid} is ${current.state}`,
              );
            }
            return blocking(pid).patch;
          },
          reason: `${waitedBy.name} waits on child`,
        },
        parentEntry: known,
        prepare: records && (async () => {
          await records.link();
          return {
            apply: records.apply,
            committed: (versionstamp) => {
              records.committed(versionstamp);
              block?.committed(versionstamp);
            },
          };
        }),
      },
    );
  } catch (error) {
    admission?.cancel();
    throw error;
  } finally {
    before?.release();
  }
  if (admission) admission.launch(record, { fresh: true });
  else kernel.start(record.pid);
  return record;
}

/** Mutations that grant `grants` and the private namespace to a process being created. */
function _grantsSetup(
  kernel: LifecycleKernel,
  grants: readonly { spec: CapabilitySpec; grantedBy: string; parent?: Capability }[],
): (op: Deno.AtomicOperation, pid: number) => void {
  return (op, pid) => {
    for (const { spec, grantedBy, parent } of grants) {
      kernel.caps.prepareGrant(pid, spec, { grantedBy, parent, now: kernel.now() }).apply(op);
    }
    kernel.caps.prepareGrant(pid, privateNamespace(pid), {
      grantedBy: "kernel",
      now: kernel.now(),
    }).apply(op);
  };
}

/**
 * `proc` as the source of a grant derivation: its image, model, capabilities
 * (`held`, when the caller has them already) and policy.
 */
async function _grantSource(
  kernel: LifecycleKernel,
  proc: ProcessRecord,
  image: RegisteredImage,
  held?: Capability[],
): Promise<GrantSource> {
  return {
    pid: proc.pid,
    image: _grantImage(image),
    model: kernel.ownModelOf(proc, image),
    held: held ?? await kernel.caps.list(proc.pid, kernel.now()),
    policy: proc.policy,
  };
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

function _requireInputSize(options: { image: string; input?: unknown }): void {
  if (JSON.stringify(options.input ?? null).length > MAX_INPUT_CHARS) {
    throw new SyscallError(
      "EINVAL",
      `Cannot spawn "${options.image}": its input is over ${MAX_INPUT_CHARS} bytes`,
    );
  }
}

async function _requireImage(kernel: LifecycleKernel, ref: string): Promise<RegisteredImage> {
  const image = await kernel.images.get(ref);
  if (!image) {
    throw new SyscallError("ENOENT", `Cannot spawn "${ref}": no such image is registered`);
  }
  return image;
}

async function _realDir(path: string, what: string): Promise<string> {
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
