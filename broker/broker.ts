/**
 * The syscall broker: the authority boundary. Every call from a process
 * takes one path, readable top to bottom in {@link Broker.dispatch}:
 *
 *   validate (zod) → plan (resolve targets) → authorize (capabilities +
 *   policy) → journal intent → run through a provider → journal + audit →
 *   reply
 *
 * The broker owns no syscall semantics: a handler table (from the kernel)
 * says, per syscall, what authority a call needs and how to run it.
 *
 * @module
 */

import {
  isSyscallName,
  SYSCALL_ARGS,
  type SyscallArgs,
  type SyscallName,
  type SyscallReply,
  type SyscallRequest,
} from "./abi.ts";
import { type AuditDecision, type AuditEntry, type AuditOutcome, summarizeArgs } from "./audit.ts";
import { allows, type Capability, type Operation } from "./capability.ts";
import type { CapabilityStore } from "./capability_store.ts";
import { canonicalJson, sha256Hex } from "./digest.ts";
import { SyscallError, toSyscallError } from "./errors.ts";
import { describeIssue, issueMessage } from "./schema_errors.ts";
import { completion, type Effect, type Journal } from "./journal.ts";
import { decide, type PolicyRule } from "./policy.ts";

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
}

/** What a handler decides about one call before it runs. */
export interface Plan {
  /** The authority the call needs; empty when it acts only on the caller's own state. */
  ops: Operation[];
  /** How the call touches the world. */
  effect: Effect;
  /** A short note every audit record of this call carries (e.g. how a command was confined). */
  note?: string;
  /**
   * Runs the call through its provider, with the capabilities that
   * authorized it. Returns {@link PARKED} when it parked the process.
   */
  run(grant: Grant): Promise<unknown>;
}

/** What authorization found. */
export interface Grant {
  decision: AuditDecision;
  /** The capabilities used, one per operation. */
  capabilities: Capability[];
}

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

/** The digest that identifies one call: name and arguments. */
export function callDigest(name: string, args: unknown): Promise<string> {
  return sha256Hex(canonicalJson({ name, args }));
}

/** A reply, with the journal time the program's clock advances to. */
export type BrokerReply = SyscallReply & { at: number };

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

  /** Creates a broker. */
  constructor(options: BrokerOptions) {
    this.#caps = options.caps;
    this.#journal = options.journal;
    this.#handlers = options.handlers;
    this.#ask = options.ask;
    this.#now = options.now ?? Date.now;
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
    let grant: Grant = { decision: "deny", capabilities: [] };
    let effect: Effect = "none";
    let note: string | undefined;
    let reply: SyscallReply;
    try {
      // 1. Validate: a known syscall with arguments that fit its schema.
      const parsedArgs = this.#validate(name, args);
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
      const decided = call.redo
        ? { decision: "allow" as const, capabilities: [] }
        : await this.#authorize(call, plan.ops, name, args);
      if (decided === PARKED) {
        await this.#audit(call, name, args, at, { decision: "ask", capabilities: [] }, "ok", note);
        return PARKED;
      }
      grant = decided;
      // 4. Journal the intent of an effect (and consume one-shot grants in
      //    the same commit), 5. run it through its provider.
      const value = await this.#execute(call, name, plan, grant);
      if (value === PARKED) {
        await this.#audit(call, name, args, at, grant, "ok", note);
        return PARKED;
      }
      reply = { id, ok: true, value: value === undefined ? null : value };
    } catch (error) {
      const err = toSyscallError(error);
      const message = workspaceRelative(err.message, ctx.workspace);
      reply = { id, ok: false, error: { code: err.code, message } };
    }
    // 6. Journal the outcome and audit it (buffered; durable with the next effect).
    await this.#record(call, name, args, at, effect, grant, reply, note);
    return { ...reply, at };
  }

  #validate(name: string, args: unknown): unknown {
    if (!isSyscallName(name)) {
      throw new SyscallError("ENOSYS", `Unknown syscall "${String(name).slice(0, 64)}"`);
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

  async #authorize(
    ctx: CallContext,
    ops: readonly Operation[],
    name: string,
    args: unknown,
  ): Promise<Grant | typeof PARKED> {
    if (ops.length === 0) return { decision: "allow", capabilities: [] };
    const now = this.#now();
    const held = await this.#caps.list(ctx.pid, now);
    const capabilities: Capability[] = [];
    for (const op of ops) {
      const rule = decide(ctx.policy, op, { workspace: ctx.workspace });
      let cap = pickCapability(held, op, ctx.argsDigest, now);
      let decision = cap ? rule?.decision ?? "allow" : rule?.decision === "ask" ? "ask" : "deny";
      if (decision === "ask") {
        // A human already answered this question: their grant satisfies `ask`.
        const approved = pickCapability(
          held.filter((c) => c.grantedBy.startsWith("human:")),
          op,
          ctx.argsDigest,
          now,
        );
        if (approved) [cap, decision] = [approved, "allow"];
      }
      if (decision === "deny") {
        const why = cap
          ? `denied by policy "${rule!.pattern}"`
          : `no capability grants ${op.resource}:${op.right} on it`;
        throw new SyscallError("EPERM", `Cannot ${action(name)} "${op.target}": ${why}`);
      }
      if (decision === "ask" && this.#ask) {
        return await this.#ask(ctx, { name, args, op, rule: rule!, held: cap !== undefined });
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
    return { decision: "allow", capabilities };
  }

  async #execute(
    ctx: CallContext,
    name: string,
    plan: Plan,
    grant: Grant,
  ): Promise<unknown> {
    const ended = () => {
      if (ctx.alive && !ctx.alive()) {
        throw new SyscallError("EINTR", `Cannot ${action(name)}: the process has ended`);
      }
    };
    ended();
    const oneShots = grant.capabilities.filter((c) => c.uses !== undefined);
    if (!ctx.redo && (plan.effect !== "none" || oneShots.length)) {
      const consume = await Promise.all(
        oneShots.map((c) => this.#caps.consumption(c)),
      );
      try {
        await this.#journal.write({
          journal: {
            pid: ctx.pid,
            seq: ctx.seq,
            name,
            argsDigest: ctx.argsDigest,
            effect: plan.effect,
            phase: "intent",
            at: this.#now(),
          },
          atomic: consume.length ? (op) => consume.forEach((apply) => apply(op)) : undefined,
        }, { durable: true });
      } catch {
        throw new SyscallError(
          "EPERM",
          `Cannot ${name}: its one-shot capability was used concurrently`,
        );
      } finally {
        for (const c of oneShots) this.#caps.invalidate(c.holder);
      }
    }
    ended();
    return await plan.run(grant);
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
    const journal = await completion(
      { pid: ctx.pid, seq: ctx.seq, name: request.name, argsDigest, effect: "effect", at },
      { ok: false, error },
    );
    await this.#journal.write({
      journal,
      audit: {
        ...this.#auditEntry(call, request.name, request.args, at, {
          decision: "allow",
          capabilities: [],
        }, "uncertain"),
        code: error.code,
        reason: error.message,
      },
    }, { durable: true });
    return { id: request.id, ok: false, error, at };
  }

  async #record(
    ctx: CallContext,
    name: string,
    args: unknown,
    at: number,
    effect: Effect,
    grant: Grant,
    reply: SyscallReply,
    note?: string,
  ): Promise<void> {
    const journal = await completion({
      pid: ctx.pid,
      seq: ctx.seq,
      name,
      argsDigest: ctx.argsDigest,
      effect,
      at,
    }, reply.ok ? { ok: true, value: reply.value } : { ok: false, error: reply.error });
    await this.#journal.write({
      journal,
      audit: {
        ...this.#auditEntry(ctx, name, args, at, grant, reply.ok ? "ok" : "error", reply),
        note,
      },
    }, { durable: false });
  }

  async #audit(
    ctx: CallContext,
    name: string,
    args: unknown,
    at: number,
    grant: Grant,
    outcome: AuditOutcome,
    note?: string,
  ): Promise<void> {
    await this.#journal.write(
      { audit: { ...this.#auditEntry(ctx, name, args, at, grant, outcome), note } },
      { durable: false },
    );
  }

  #auditEntry(
    ctx: CallContext,
    name: string,
    args: unknown,
    at: number,
    grant: Grant,
    outcome: AuditOutcome,
    reply?: SyscallReply,
  ): AuditEntry {
    const error = reply && !reply.ok ? reply.error : undefined;
    return {
      at,
      pid: ctx.pid,
      image: ctx.image,
      tool: ctx.tool,
      syscall: String(name).slice(0, 64),
      args: summarizeArgs(String(name), args),
      argsDigest: ctx.argsDigest,
      decision: grant.decision,
      capability: grant.capabilities.map((c) => c.id).join(",") || undefined,
      outcome,
      code: error?.code,
      reason: error?.message,
    };
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
