/**
 * The syscall broker: the authority boundary. Every call from a process
 * takes one path, readable top to bottom in {@link Broker.dispatch}:
 *
 *   validate (zod) → plan (resolve targets) → authorize (capabilities +
 *   policy) → journal intent → run through a provider → journal + audit →
 *   reply
 *
 * A call whose effect is a change of the store alone (an object, a topic
 * event, a message, a capability) does the last three in one commit: its
 * change with its journal and audit records, so it costs one commit and is
 * never half done. The commit of an effect (that one, or the intent of an
 * effect that runs through a provider) holds only while the caller's
 * capabilities are those that authorized it: a revocation committed in
 * between makes the call authorized again, and refused.
 *
 * The broker hands the journal the facts of each call (who, what, the
 * decision, how it ended); the journal's writer builds the call's record
 * and its audit entry from them.
 *
 * The broker owns no syscall semantics: a handler table (from the kernel)
 * says, per syscall, what authority a call needs and how to run it.
 *
 * @module
 */

import {
  isSyscallName,
  SYSCALL_ARGS,
  SYSCALL_RESULTS,
  type SyscallArgs,
  type SyscallName,
  type SyscallReply,
  type SyscallRequest,
} from "./abi.ts";
import { type AuditDecision, syscallLabel } from "./audit.ts";
import { allows, type Capability, type Operation } from "./capability.ts";
import type { CapabilityStore, Holdings } from "./capability_store.ts";
import { canonicalJson, sha256Hex } from "./digest.ts";
import { type ErrorCode, SyscallError, toSyscallError } from "./errors.ts";
import { describeIssue, issueMessage } from "./schema_errors.ts";
import {
  type After,
  type CallEnd,
  type Effect,
  type Journal,
  type JournalRecord,
  type ParkedAudit,
  StaleWriteError,
} from "./journal.ts";
import { decide, type PolicyRule } from "./policy.ts";
import type { StoreChange } from "./store_change.ts";

/** Who is calling, as the broker needs to know it. */
export interface CallContext {
  /** The calling process. */
  pid: number;
  /** The caller's image tag, for audit. */
  image: string;
  /** The caller's workspace root: relative policy scopes match under it. */
  workspace: string;
  /** The caller's policy rules (image, operator, spawner). */
  policy: readonly PolicyRule[];
  /** The JIT or built-in tool making the call, when known. */
  tool?: string;
  /**
   * The caller's working directory, when the caller's run tracks it (it
   * saves reading the process record); handlers read the record otherwise.
   */
  cwd?: string;
  /** The journal position of this call. */
  seq: number;
  /** Digest of `{ name, args }`, set by the broker before planning. */
  argsDigest: string;
  /**
   * The call's intent is already journaled (the host died while it ran):
   * it was authorized then, and any one-shot grant it used is spent, so it
   * runs again without a second authorization or intent.
   */
  redo?: boolean;
  /** False once the calling process has ended: its calls still in flight then have no effect. */
  alive?: () => boolean;
  /**
   * Aborts when the calling process stops for good (it exited, failed or
   * was killed) or the host closes: providers then stop the call's work
   * (kill the command's process group, cancel the request).
   */
  signal?: AbortSignal;
}

/** What every plan says about its call. */
export interface PlanBase {
  /** The authority the call needs; empty when it acts only on the caller's own state. */
  ops: Operation[];
  /** How the call touches the world. */
  effect: Effect;
  /** A short note every audit record of this call carries (e.g. how a command was confined). */
  note?: string;
  /**
   * What the call changes in its caller's run once it has succeeded (the
   * working directory, the end of the program); the broker journals it with
   * the outcome, so a replay applies it again.
   */
  after?: After;
}

/** A plan whose call runs through a provider. */
export interface RunPlan extends PlanBase {
  /**
   * Runs the call through its provider, with the capabilities that
   * authorized it. Operations the call meets only while it runs (a
   * redirect's target) go through `authorize`, on the broker's path.
   * Returns {@link PARKED} when it parked the process; `parked` is the
   * call's audit entry, which the commit that blocks the process may carry
   * (see `Journal.claim`): the broker then writes none after it.
   */
  run(grant: Grant, authorize: Authorize, parked: ParkedAudit): Promise<unknown>;
  /** A plan runs its call or prepares a change, never both. */
  prepare?: never;
}

/**
 * A plan whose call changes the store alone (an object, a topic event, a
 * message, a capability): the broker commits the change with the call's
 * journal and audit records in one commit, checked against the
 * capabilities that authorized it.
 */
export interface ChangePlan extends PlanBase {
  /**
   * Prepares the change with the capabilities that authorized it, reading
   * what it must check; called again (after the call is authorized again)
   * when a check of the commit failed. Throwing fails the call with nothing
   * written.
   */
  prepare(grant: Grant): Promise<StoreChange>;
  /** A plan runs its call or prepares a change, never both. */
  run?: never;
}

/** What a handler decides about one call before it runs. */
export type Plan = RunPlan | ChangePlan;

/**
 * Authorizes operations a running call meets (a redirect hop of
 * `net.fetch`) with the caller's lasting capabilities and policy, as the
 * broker authorizes a call's planned operations; a human's lasting grant
 * satisfies a policy that asks, but nothing may wait for a human now, so
 * `ask` is otherwise refused. Throws `EPERM` naming the operation and
 * `options.context`; returns the capabilities used, one per operation.
 */
export type Authorize = (
  ops: readonly Operation[],
  options: {
    /** Why the operation arises, shown after its target: `redirected from "…"`. */
    context: string;
    /** What cannot wait for a human, in the refusal: `a redirect`. */
    step: string;
  },
) => Promise<Capability[]>;

/** What authorization found. */
export interface Grant {
  decision: AuditDecision;
  /** The capabilities used, one per operation. */
  capabilities: Capability[];
}

/** The authority a call acts under: its grant, and how to check it is still current. */
interface _Authority {
  grant: Grant;
  /**
   * Adds to a commit the check that the caller's capabilities are those the
   * grant was decided on; absent when the call needed none.
   */
  unchanged?: (op: Deno.AtomicOperation) => void;
  /**
   * Decided from the capabilities this host last read, not from the store
   * (see `Broker.#authorize`): only its commit's check makes it exact.
   */
  cached?: boolean;
}

/** The facts of a call the journal's records need beside its context. */
interface _Called {
  name: string;
  args: unknown;
  /** When the call arrived. */
  at: number;
  /** The note of its plan. */
  note?: string;
}

/** The authority of a call replayed after its intent was journaled: authorized then. */
const _REDONE: _Authority = { grant: { decision: "allow", capabilities: [] } };

/** A handler: plans one syscall. */
export type Handler<N extends SyscallName> = (
  ctx: CallContext,
  args: SyscallArgs<N>,
) => Promise<Plan> | Plan;

/** The kernel's handlers, by syscall name. A missing one answers `ENOSYS`. */
export type HandlerTable = { [N in SyscallName]?: Handler<N> };

/** Collaborators of a {@link Broker}. */
export interface BrokerOptions {
  caps: CapabilityStore;
  journal: Journal;
  handlers: HandlerTable;
  /**
   * Called when policy says `ask` for an operation: parks the call until a
   * human answers and returns {@link PARKED}. Without it, `ask` fails closed
   * with `EPERM`.
   */
  ask?: (ctx: CallContext, request: AskRequest) => Promise<typeof PARKED>;
  /** The clock (default `Date.now`). */
  now?: () => number;
  /** Keeps the journal each process adds within its quota (default: no quota). */
  journalMeter?: JournalMeter;
  /**
   * Checks every result against its schema in `SYSCALL_RESULTS`: one a
   * handler returns, and one a call's journal record answers at replay
   * (which is how a call that waited gets its result); one that does not
   * fit fails the call with `EINVAL` naming the field (for tests and
   * debugging; default off).
   */
  checkResults?: boolean;
}

/** Keeps the journal and audit records a process adds within its quota. */
export interface JournalMeter {
  /**
   * Throws (`EBUDGET`) when the calling process may add no more records;
   * called before every syscall but `proc.exit`.
   */
  admit(ctx: CallContext, name: string): Promise<void>;
  /** Blind mutations that charge `bytes` of records to the calling process, for their commit. */
  charge(ctx: CallContext, bytes: number): Promise<(op: Deno.AtomicOperation) => void>;
}

/** What the broker hands to {@link BrokerOptions.ask}. */
export interface AskRequest {
  name: string;
  args: unknown;
  op: Operation;
  rule: PolicyRule;
  /** True when the caller holds a capability for the operation (policy asks anyway). */
  held: boolean;
}

/**
 * The value a handler's `run` returns when it parked its process: the call
 * has no reply yet; whoever completes the wait writes its result to the
 * journal, and the process replays up to it when it runs again.
 */
export const PARKED: unique symbol = Symbol("parked") as never;

/**
 * What a run returns when its outcome changes the store (the exchange a
 * `model.complete` adds to the caller's transcript, and the usage it
 * charges): the broker commits that change with the call's `done` journal
 * record and its audit record, in one commit, so the store holds both or
 * neither. The call answers the change's result.
 */
export class OutcomeChange {
  /**
   * Prepares the change; called again when a check of the commit failed.
   * Throwing fails the call with nothing of the change written.
   */
  readonly prepare: () => Promise<StoreChange>;
  /**
   * Called when the outcome could not be recorded (preparing it or
   * committing it failed for another reason than a stale check), with the
   * error the call then fails with: for what must be kept even so (the
   * tokens the model spent).
   */
  readonly unrecorded?: (error: unknown) => Promise<void>;

  /** The outcome that `prepare` makes. */
  constructor(
    prepare: () => Promise<StoreChange>,
    unrecorded?: (error: unknown) => Promise<void>,
  ) {
    this.prepare = prepare;
    this.unrecorded = unrecorded;
  }
}

/** The digest that identifies one call: name and arguments. */
export function callDigest(name: string, args: unknown): Promise<string> {
  return sha256Hex(canonicalJson({ name, args }));
}

/**
 * A reply, with the journal time the program's clock advances to and, for
 * a call that succeeded, the after-effects its plan declared.
 */
export type BrokerReply = SyscallReply & { at: number; after?: After };

/** How an error message names the action of a syscall. */
const ACTIONS: Readonly<Record<string, string>> = {
  "fs.read": "read file",
  "fs.write": "write file",
  "fs.append": "append to file",
  "fs.list": "list directory",
  "fs.stat": "stat",
  "fs.mkdir": "create directory",
  "fs.remove": "remove",
  "fs.rename": "rename",
  "proc.chdir": "change directory to",
  "proc.spawn": "spawn image",
  "proc.signal": "signal",
  "obj.get": "read object namespace",
  "obj.list": "list object namespace",
  "obj.put": "write object namespace",
  "obj.delete": "delete from object namespace",
  "obj.define_type": "define a type in namespace",
  "model.complete": "call model",
  "time.sleep": "sleep",
  "exec.run": "run command",
  "net.fetch": "fetch",
};

function action(name: string): string {
  return ACTIONS[name] ?? name;
}

/**
 * The broker.
 *
 * @example
 * ```ts ignore
 * const broker = new Broker({ caps, journal, handlers });
 * const reply = await broker.dispatch(ctx, { id: 1, name: "fs.read", args: { path: "a.txt" } });
 * ```
 */
export class Broker {
  #caps: CapabilityStore;
  #journal: Journal;
  #handlers: HandlerTable;
  #ask: BrokerOptions["ask"];
  #now: () => number;
  #journalMeter: JournalMeter | undefined;
  #checkResults: boolean;

  /** Creates a broker. */
  constructor(options: BrokerOptions) {
    this.#caps = options.caps;
    this.#journal = options.journal;
    this.#handlers = options.handlers;
    this.#ask = options.ask;
    this.#now = options.now ?? Date.now;
    this.#journalMeter = options.journalMeter;
    this.#checkResults = options.checkResults ?? false;
  }

  /**
   * Handles one call end to end and returns the reply for the program, or
   * {@link PARKED} when the process now waits (its cell should stop).
   */
  async dispatch(
    ctx: Omit<CallContext, "argsDigest">,
    request: SyscallRequest,
  ): Promise<BrokerReply | typeof PARKED> {
    const at = this.#now();
    const { id, name, args } = request;
    const call: CallContext = { ...ctx, argsDigest: await callDigest(name, args) };
    let authority: _Authority = { grant: { decision: "deny", capabilities: [] } };
    let effect: Effect = "none";
    let after: After | undefined;
    let note: string | undefined;
    let reply: SyscallReply;
    try {
      // 1. Validate: a known syscall with arguments that fit its schema.
      const parsedArgs = this.#validate(name, args);
      //    A process over its journal quota may still exit, and do nothing else.
      if (name !== "proc.exit") await this.#journalMeter?.admit(call, name);
      // 2. Plan: the handler resolves targets and names the authority needed.
      const handler = this.#handlers[name as SyscallName] as
        | Handler<SyscallName>
        | undefined;
      if (!handler) {
        throw new SyscallError("ENOSYS", `Syscall "${name}" is not implemented`);
      }
      const plan = await handler(call, parsedArgs as never);
      effect = plan.effect;
      note = plan.note;
      // 3. Authorize: capabilities and policy, for every operation. Policy
      //    `ask` parks the call in a human queue.
      //    A change of the store, or the intent of an effect, commits with
      //    the check that the caller's capabilities are those it was
      //    decided on, so it may be decided on those this host last read.
      const checked = plan.prepare !== undefined || plan.effect !== "none";
      const decided = call.redo
        ? _REDONE
        : await this.#authorize(call, plan.ops, name, args, checked);
      if (!("grant" in decided)) {
        // Only asked when a human can be asked: refused otherwise.
        await this.#ask!(call, decided);
        // Audited now, as asked; the call is journaled once a human has answered.
        await this.#journal.writeCall(
          { ctx: call, name, args, at, decision: "ask", note },
          { durable: false },
        );
        return PARKED;
      }
      authority = { ...decided };
      const called: _Called = { name, args, at, note };
      if (plan.prepare) {
        // 4.–6. A change of the store alone: the change, its journal record
        //    and its audit record in one commit, checked against the
        //    capabilities that authorized it.
        const value = await this.#commitChange(call, called, plan, authority);
        after = plan.after;
        return after ? { id, ok: true, value, at, after } : { id, ok: true, value, at };
      }
      // 4. Journal the intent of an effect (checked against the capabilities
      //    that authorized it, and spending one-shot grants in the same
      //    commit), 5. run it through its provider.
      const parked: ParkedAudit = {
        facts: { ctx: call, name, args, at, ...authority.grant, note },
        stored: false,
      };
      const value = await this.#execute(call, called, plan, authority, parked);
      if (value instanceof OutcomeChange) {
        // 6. The outcome changes the store: the change with the call's
        //    records, in one commit.
        const result = await this.#commitOutcome(call, called, plan, authority, value);
        after = plan.after;
        return after
          ? { id, ok: true, value: result, at, after }
          : { id, ok: true, value: result, at };
      }
      if (value === PARKED) {
        // Audited now, unless the commit that parked it was; whoever ends
        // the wait journals the result.
        if (!parked.stored) await this.#journal.writeCall(parked.facts, { durable: false });
        return PARKED;
      }
      reply = { id, ok: true, value: value === undefined ? null : value };
      if (this.#checkResults) this.#checkResult(name as SyscallName, reply.value);
      after = plan.after;
    } catch (error) {
      const err = toSyscallError(error);
      const message = workspaceRelative(err.message, ctx.workspace);
      reply = { id, ok: false, error: { code: err.code, message } };
      // A refusal for lack of authority is a denial, whichever step refused:
      // the handler planning the call, authorization, or its run.
      if (err.code === "EPERM") {
        authority = { grant: { ...authority.grant, decision: "deny" } };
      }
    }
    // 6. Journal the outcome and audit it (buffered; durable with the next effect).
    const end: CallEnd = {
      effect,
      outcome: reply.ok
        ? { ok: true, value: reply.value, after }
        : { ok: false, error: reply.error },
    };
    await this.#record(call, { name, args, at, note }, authority.grant, end, { durable: false });
    return after ? { ...reply, at, after } : { ...reply, at };
  }

  /**
   * Answers a call from its `done` journal record, when a run replays up
   * to it: the recorded result (with its after-effects) or error, at the
   * record's time. This is the only way a call that waited gets its result
   * (`time.sleep`, `human.*`, `proc.wait`, `event.wait`, `msg.recv`,
   * `tool.call`): whoever ended the wait wrote it to the journal. With
   * `checkResults`, a result that does not fit its type in
   * `SYSCALL_RESULTS` fails the call with `EINVAL`, as a live result does.
   */
  answerRecorded(request: SyscallRequest, recorded: JournalRecord): BrokerReply {
    const { id } = request;
    const at = recorded.at;
    if (!recorded.ok) {
      const error = recorded.error as { code: ErrorCode; message: string };
      return { id, ok: false, error, at };
    }
    const value = recorded.value ?? null;
    if (this.#checkResults && isSyscallName(recorded.name)) {
      try {
        this.#checkResult(recorded.name, value);
      } catch (error) {
        const { code, message } = toSyscallError(error);
        return { id, ok: false, error: { code, message }, at };
      }
    }
    return { id, ok: true, value, at, after: recorded.after };
  }

  #validate(name: string, args: unknown): unknown {
    if (!isSyscallName(name)) {
      throw new SyscallError("ENOSYS", `Unknown syscall "${syscallLabel(name)}"`);
    }
    const parsed = SYSCALL_ARGS[name].safeParse(args, { error: issueMessage });
    if (!parsed.success) {
      throw new SyscallError(
        "EINVAL",
        `Invalid arguments for ${name}: ${describeIssue(parsed.error.issues[0])}`,
      );
    }
    return parsed.data;
  }

  #checkResult(name: SyscallName, value: unknown): void {
    const parsed = SYSCALL_RESULTS[name].safeParse(value, { error: issueMessage });
    if (!parsed.success) {
      throw new SyscallError(
        "EINVAL",
        `Cannot answer ${name}: its result does not fit the declared type: ${
          describeIssue(parsed.error.issues[0])
        }`,
      );
    }
  }

  /**
   * 3. Authorizes the operations of call `ctx`: the authority it acts
   * under, or, when policy asks a human about an operation and a human can
   * be asked, the question. Throws `EPERM` when refused.
   *
   * A call whose authority is `checked` (it will be committed with the
   * `unchanged` check of the capabilities it was decided on: a change of
   * the store, the intent of an effect) may be allowed from the caller's
   * capabilities as this host last read them, with no read: when another
   * host or the CLI changed them since, that commit fails and the call is
   * decided again from the store (see {@link #commitAuthorized}). Anything
   * else (a call without effects, a refusal, a question for a human) is
   * decided from the capabilities read from the store now.
   */
  async #authorize(
    ctx: CallContext,
    ops: readonly Operation[],
    name: string,
    args: unknown,
    checked: boolean,
  ): Promise<_Authority | AskRequest> {
    if (ops.length === 0) return { grant: { decision: "allow", capabilities: [] } };
    const now = this.#now();
    const cached = checked ? this.#caps.cachedHoldings(ctx.pid, now) : undefined;
    if (cached) {
      try {
        const decided = this.#decide(ctx, cached, ops, name, args, now);
        if ("grant" in decided) return { ...decided, cached: true };
      } catch (error) {
        if (!(error instanceof SyscallError)) throw error;
      }
    }
    return this.#decide(ctx, await this.#caps.holdings(ctx.pid, now), ops, name, args, now);
  }

  /** The decision on `ops` for call `ctx` from the capabilities `holdings` (see {@link #authorize}). */
  #decide(
    ctx: CallContext,
    holdings: Holdings,
    ops: readonly Operation[],
    name: string,
    args: unknown,
    now: number,
  ): _Authority | AskRequest {
    const { capabilities: held, unchanged } = holdings;
    const capabilities: Capability[] = [];
    for (const op of ops) {
      const { cap, decision, rule } = decideOperation(ctx, held, op, now);
      if (decision === "deny") {
        const why = cap
          ? `denied by policy "${rule!.pattern}"`
          : `no capability grants ${op.resource}:${op.right} on it`;
        throw new SyscallError("EPERM", `Cannot ${action(name)} "${op.target}": ${why}`);
      }
      if (decision === "ask" && this.#ask) {
        return { name, args, op, rule: rule!, held: cap !== undefined };
      }
      if (decision === "ask") {
        throw new SyscallError(
          "EPERM",
          `Cannot ${action(name)} "${op.target}": policy "${
            rule!.pattern
          }" asks a human, and no approval was given`,
        );
      }
      capabilities.push(cap!);
    }
    return { grant: { decision: "allow", capabilities }, unchanged };
  }

  /** The {@link Authorize} handed to the run of call `ctx` (syscall `name`). */
  #authorizeFollowUp(ctx: CallContext, name: string): Authorize {
    return async (ops, { context, step }) => {
      const now = this.#now();
      // Only lasting grants: a one-shot grant was for the call as planned.
      const lasting = (await this.#caps.list(ctx.pid, now)).filter((cap) =>
        cap.uses === undefined && cap.boundTo === undefined
      );
      const capabilities: Capability[] = [];
      for (const op of ops) {
        const { cap, decision, rule } = decideOperation(ctx, lasting, op, now);
        if (decision === "allow") {
          capabilities.push(cap!);
          continue;
        }
        const why = !cap
          ? `no lasting capability grants ${op.resource}:${op.right} on it`
          : decision === "deny"
          ? `denied by policy "${rule!.pattern}"`
          : `policy "${rule!.pattern}" asks a human, which ${step} cannot wait for`;
        throw new SyscallError(
          "EPERM",
          `Cannot ${action(name)} "${op.target}" (${context}): ${why}`,
        );
      }
      return capabilities;
    };
  }

  /**
   * 4.–5. for a call that runs through a provider: journals the intent of
   * an effect, or of a call that spends a one-shot grant (see
   * {@link #commitAuthorized}), then runs it.
   */
  async #execute(
    call: CallContext,
    called: _Called,
    plan: RunPlan,
    authority: _Authority,
    parked: ParkedAudit,
  ): Promise<unknown> {
    this.#ensureAlive(call, called.name);
    const spends = authority.grant.capabilities.some((c) => c.uses !== undefined);
    if (!call.redo && (plan.effect !== "none" || spends)) {
      await this.#commitAuthorized(call, called, plan, authority, async ({ unchanged, spend }) => {
        const intent: JournalRecord = {
          pid: call.pid,
          seq: call.seq,
          name: called.name,
          argsDigest: call.argsDigest,
          effect: plan.effect,
          phase: "intent",
          at: this.#now(),
        };
        // Spending a grant changes the store, so that intent commits alone;
        // a check alone lets it batch with other records.
        await this.#journal.write(
          spend
            ? { journal: intent, atomic: (op) => (unchanged?.(op), spend(op)) }
            : { journal: intent, checks: unchanged },
          { durable: true },
        );
      });
    }
    this.#ensureAlive(call, called.name);
    return await plan.run(authority.grant, this.#authorizeFollowUp(call, called.name), parked);
  }

  /**
   * 4.–6. for a call that changes the store alone: prepares the change and
   * commits it with the call's `done` record and audit record, and with the
   * checks of its authority (see {@link #commitAuthorized}), in one commit;
   * then wakes whoever waits for what it stored. Returns the call's result.
   */
  async #commitChange(
    call: CallContext,
    called: _Called,
    plan: ChangePlan,
    authority: _Authority,
  ): Promise<unknown> {
    const done = await this.#commitAuthorized(
      call,
      called,
      plan,
      authority,
      async ({ unchanged, spend }) => {
        const change = await plan.prepare(authority.grant);
        const value = change.result === undefined ? null : change.result;
        let committed = false;
        try {
          if (this.#checkResults) this.#checkResult(called.name as SyscallName, value);
          const end: CallEnd = {
            effect: plan.effect,
            outcome: { ok: true, value, after: plan.after },
          };
          await this.#record(call, called, authority.grant, end, {
            durable: true,
            atomic: (op) => {
              unchanged?.(op);
              spend?.(op);
              change.apply(op);
            },
            committed: (versionstamp) => change.committed?.(versionstamp),
          });
          committed = true;
        } finally {
          if (!committed) await change.discard?.();
        }
        return { change, value };
      },
    );
    // The call is done and recorded: its reply is what was recorded, whatever waking meets.
    await done.change.wake?.().catch((error) =>
      console.error(`Cannot wake the processes waiting for ${called.name}:`, error)
    );
    return done.value;
  }

  /**
   * 6. for a call whose outcome changes the store: prepares that change and
   * commits it with the call's `done` record and audit record, durably and
   * in one commit; when a check of the change fails, prepares it again.
   * Returns the call's result. The call has run: its authority is not
   * checked again.
   */
  async #commitOutcome(
    call: CallContext,
    called: _Called,
    plan: Plan,
    authority: _Authority,
    outcome: OutcomeChange,
  ): Promise<unknown> {
    for (;;) {
      let change: StoreChange | undefined;
      let value: unknown;
      try {
        change = await outcome.prepare();
        value = change.result === undefined ? null : change.result;
        if (this.#checkResults) this.#checkResult(called.name as SyscallName, value);
        const end: CallEnd = {
          effect: plan.effect,
          outcome: { ok: true, value, after: plan.after },
        };
        const prepared = change;
        await this.#record(call, called, authority.grant, end, {
          durable: true,
          atomic: (op) => prepared.apply(op),
          committed: (versionstamp) => prepared.committed?.(versionstamp),
        });
      } catch (error) {
        await change?.discard?.();
        if (error instanceof StaleWriteError) continue;
        await outcome.unrecorded?.(error).catch((failed) =>
          console.error(`Cannot keep what ${called.name} spent:`, failed)
        );
        throw error;
      }
      await change.wake?.().catch((error) =>
        console.error(`Cannot finish recording ${called.name}:`, error)
      );
      return value;
    }
  }

  /**
   * Commits what an authorized call writes before its effect can start (the
   * intent of an effect that runs through a provider; the change of one that
   * changes the store alone, with its records) with the checks that keep its
   * authority exact: the one-shot grants it uses are spent in that commit
   * (`spend`), and the commit holds only while the caller's capabilities are
   * those its grant was decided on (`unchanged`). When a check fails (a
   * concurrent use, grant or revocation, or a check of the change), the call
   * is authorized again, `authority` updated in place, and `commit` called
   * again: a capability revoked meanwhile fails the call with `EPERM`, and
   * nothing was written. A call redone from its intent is not authorized
   * again (it was authorized before the host stopped).
   */
  async #commitAuthorized<T>(
    call: CallContext,
    called: _Called,
    plan: Plan,
    authority: _Authority,
    commit: (checks: {
      unchanged?: (op: Deno.AtomicOperation) => void;
      spend?: (op: Deno.AtomicOperation) => void;
    }) => Promise<T>,
  ): Promise<T> {
    for (let attempt = 0;; attempt++) {
      if (attempt > 0 && !call.redo) {
        const again = await this.#authorize(call, plan.ops, called.name, called.args, true);
        if (!("grant" in again)) {
          throw new SyscallError(
            "EPERM",
            `Cannot ${action(called.name)} "${again.op.target}": policy "${again.rule.pattern}" ` +
              "asks a human, and the call's authority changed while it was committed",
          );
        }
        Object.assign(authority, { unchanged: undefined, cached: undefined }, again);
      }
      this.#ensureAlive(call, called.name);
      const oneShots = authority.grant.capabilities.filter((c) => c.uses !== undefined);
      let spends: ((op: Deno.AtomicOperation) => void)[];
      try {
        spends = await Promise.all(oneShots.map((c) => this.#caps.consumption(c)));
      } catch (error) {
        // A one-shot grant this host's copy still counted may be used up:
        // refused only once the call is authorized from the store.
        if (!authority.cached || !(error instanceof SyscallError)) throw error;
        this.#caps.invalidate(call.pid);
        continue;
      }
      try {
        return await commit({
          unchanged: authority.unchanged,
          spend: spends.length ? (op) => spends.forEach((apply) => apply(op)) : undefined,
        });
      } catch (error) {
        if (!(error instanceof StaleWriteError)) throw error;
        // A check failed: the capabilities this host last read may be behind
        // the store, so the call is authorized again from the store.
        this.#caps.invalidate(call.pid);
      } finally {
        for (const c of oneShots) this.#caps.invalidate(c.holder);
      }
    }
  }

  /** Journals and audits call `ctx`, charging its records to the caller's journal quota. */
  async #record(
    ctx: CallContext,
    called: _Called,
    grant: Grant,
    end: CallEnd,
    options: {
      durable: boolean;
      atomic?: (op: Deno.AtomicOperation) => void;
      committed?: (versionstamp: string) => void;
    },
  ): Promise<void> {
    const meter = this.#journalMeter;
    await this.#journal.writeCall({ ctx, ...called, ...grant, end }, {
      ...options,
      charge: meter && ((bytes) => meter.charge(ctx, bytes)),
    });
  }

  /** `EINTR` once the calling process has ended: its calls in flight then have no effect. */
  #ensureAlive(ctx: CallContext, name: string): void {
    if (ctx.alive && !ctx.alive()) {
      throw new SyscallError("EINTR", `Cannot ${action(name)}: the process has ended`);
    }
  }

  /**
   * Records that an effect's outcome is unknown (its intent was journaled,
   * its completion was not, and it is not safe to redo): the call fails with
   * `EUNCERTAIN` and the audit flags it for a human.
   */
  async uncertain(
    ctx: Omit<CallContext, "argsDigest">,
    request: SyscallRequest,
    argsDigest: string,
  ): Promise<BrokerReply> {
    const at = this.#now();
    const call: CallContext = { ...ctx, argsDigest };
    const error = {
      code: "EUNCERTAIN" as const,
      message:
        `Cannot tell whether ${request.name} (journal seq ${ctx.seq}) took effect: the host stopped while it ran`,
    };
    await this.#journal.writeCall({
      ctx: call,
      name: request.name,
      args: request.args,
      at,
      decision: "allow",
      end: { effect: "effect", outcome: { ok: false, error }, uncertain: true },
    }, { durable: true });
    return { id: request.id, ok: false, error, at };
  }
}

/**
 * Rewrites absolute paths inside the workspace as `./`-relative ones, so a
 * program (and the model behind it) learns nothing of the host layout from
 * an error message, and a workspace file never reads like a system command.
 */
export function workspaceRelative(message: string, workspace: string): string {
  if (!workspace || workspace === "/") return message;
  return message.replaceAll(`"${workspace}/`, '"./').replaceAll(`"${workspace}"`, '"."');
}

/**
 * The decision on one operation: the capability among `held` that allows
 * it, and what policy says; without a capability, `deny` unless policy
 * asks. A human's grant among `held` satisfies `ask` (they already
 * answered this question).
 */
function decideOperation(
  ctx: CallContext,
  held: readonly Capability[],
  op: Operation,
  now: number,
): { cap?: Capability; decision: "allow" | "deny" | "ask"; rule?: PolicyRule } {
  const rule = decide(ctx.policy, op, { workspace: ctx.workspace });
  const cap = pickCapability(held, op, ctx.argsDigest, now);
  const decision = cap ? rule?.decision ?? "allow" : rule?.decision === "ask" ? "ask" : "deny";
  if (decision === "ask") {
    const approved = pickCapability(
      held.filter((c) => c.grantedBy.startsWith("human:")),
      op,
      ctx.argsDigest,
      now,
    );
    if (approved) return { cap: approved, decision: "allow", rule };
  }
  return { cap, decision, rule };
}

/**
 * The capability that authorizes `op`: lasting ones first, then one-shot
 * grants; a grant bound to one exact call matches only that call.
 */
export function pickCapability(
  held: readonly Capability[],
  op: Operation,
  argsDigest: string,
  now: number,
): Capability | undefined {
  let oneShot: Capability | undefined;
  for (const cap of held) {
    if (!allows(cap, op, now)) continue;
    if (cap.boundTo !== undefined && cap.boundTo !== argsDigest) continue;
    if (cap.uses === undefined) return cap;
    oneShot ??= cap;
  }
  return oneShot;
}
