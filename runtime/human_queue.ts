/**
 * Human queues (SPEC section 5): requests a process makes of a person —
 * permission for an operation its policy says to `ask` about, or a typed
 * question — and the answers, durable in KV.
 *
 * Keys: `["human", id]` the request, `["human_pending", createdAt, id]` the
 * queue of unanswered requests in arrival order.
 *
 * @module
 */

import { MAX_REVIEW_BYTES, reviewArgs, summarizeArgs } from "../broker/audit.ts";
import {
  type CapabilitySpec,
  formatCapability,
  parseCapability,
  parseDuration,
} from "../broker/capability.ts";
import type { CapabilityStore } from "../broker/capability_store.ts";
import { SyscallError } from "../broker/errors.ts";
import type { Journal } from "../broker/journal.ts";
import type { CallContext, PARKED } from "../broker/broker.ts";
import type { ProcessTable } from "./process_table.ts";
import type { Store } from "./store.ts";
import type { ParkedCall, WaitOutcome, Waits } from "./waits.ts";

/** What the human queue needs from the kernel. */
export interface HumanQueueKernel {
  /** The store the requests are kept in. */
  readonly store: Pick<Store, "kv">;
  /** The waits: an asker parks on its request, and an answer completes the wait. */
  readonly waits: Pick<Waits, "park" | "complete">;
  /** The capability store, for what an `allow_*` answer grants. */
  readonly caps: Pick<CapabilityStore, "prepareGrant" | "invalidate">;
  /** The journal, for the audit record of a call a human denied. */
  readonly journal: Pick<Journal, "write">;
  /** The process table, for the policy rule a `deny_always` answer adds. */
  readonly processes: Pick<ProcessTable, "update">;
  /** The clock. */
  readonly now: () => number;
}

/** A human's decision on a permission request. */
export type HumanDecision = "allow_once" | "allow_always" | "deny_once" | "deny_always";

/** The kinds of typed answers `human.ask` takes. */
export type QuestionKind = "text" | "choice" | "boolean" | "number";

/** One request in a human queue. */
export interface HumanRequest {
  /** Unguessable id (a UUID). */
  id: string;
  /** Who asks, and the journal seq of the call that waits for the answer. */
  pid: number;
  /** The journal seq of the waiting call. */
  seq: number;
  /** The asker's image tag. */
  image: string;
  /** A permission request or a typed question. */
  kind: "permission" | "question";
  /** For a permission request: the exact operation asked for. */
  operation?: {
    syscall: string;
    /**
     * The arguments in full, as JSON (see `reviewArgs`): nothing cut and
     * nothing redacted, so the human sees everything the call would do.
     */
    args: string;
    /** The audit's summary of the arguments (no contents or secrets). */
    summary?: string;
    /** The digest of `{ name, args }` that an `allow_once` grant is bound to. */
    argsDigest: string;
    /** The capability that would allow it, in text form. */
    capability: string;
    /**
     * The capability an `allow_*` answer mints, as a record: exactly what
     * {@link HumanRequest.operation.capability} shows, without parsing text
     * a scope could have bent.
     */
    grant?: CapabilitySpec;
  };
  /** For a question. */
  question?: { text: string; kind: QuestionKind; choices?: string[] };
  /** Why, in the asker's words or the policy rule that asked. */
  reason?: string;
  /** When the request was filed, in ms since the epoch. */
  createdAt: number;
  /** Whether the request still waits for an answer. */
  state: "pending" | "answered";
  /** The answer, once given. */
  answer?: {
    decision?: HumanDecision;
    value?: unknown;
    by: string;
    at: number;
    ttlMs?: number;
    /** The capability minted by an `allow_*` decision. */
    capability?: string;
  };
}

/** What a human sends back. */
export interface HumanAnswer {
  /** For permission requests. */
  decision?: HumanDecision;
  /** For questions: validated against the question's kind. */
  answer?: unknown;
  /** For `allow_always`: a duration like `10m`. */
  ttl?: string;
  /** When given, must equal the asked operation's argument digest. */
  argsDigest?: string;
}

/** Something that answers human requests as they arrive (scripted, deny-all, a terminal). */
export interface HumanResponder {
  /** The answer to give, or undefined to leave the request for someone else. */
  respond(request: HumanRequest): Promise<HumanAnswer | undefined>;
}

/** Refuses every request (`--human deny`): permissions are denied, questions declined. */
export class DenyingHuman implements HumanResponder {
  /** Always `deny_once`. */
  respond(_request: HumanRequest): Promise<HumanAnswer | undefined> {
    return Promise.resolve({ decision: "deny_once" });
  }
}

/** Answers requests in order from a list (`--human scripted:FILE`, SPEC section 11). */
export class ScriptedHuman implements HumanResponder {
  #answers: HumanAnswer[];
  #next = 0;

  /** Takes `{ answers: [...] }`. */
  constructor(script: { answers: HumanAnswer[] }) {
    this.#answers = [...script.answers];
  }

  /** Reads a script file; a one-line error when unreadable or malformed. */
  static async fromFile(path: string): Promise<ScriptedHuman> {
    let script: unknown;
    try {
      script = JSON.parse(await Deno.readTextFile(path));
    } catch (error) {
      throw new SyscallError(
        "EINVAL",
        `Cannot load human script "${path}": ${(error as Error).message}`,
      );
    }
    const answers = (script as { answers?: unknown })?.answers;
    if (!Array.isArray(answers) || !answers.every((a) => a && typeof a === "object")) {
      throw new SyscallError(
        "EINVAL",
        `Cannot load human script "${path}": expected { "answers": [...] }`,
      );
    }
    return new ScriptedHuman({ answers: answers as HumanAnswer[] });
  }

  /** The next scripted answer; past the end, leaves requests pending. */
  respond(_request: HumanRequest): Promise<HumanAnswer | undefined> {
    return Promise.resolve(this.#answers[this.#next++]);
  }
}

/** Validates a typed answer against a question; returns the value to give the program. */
export function checkAnswer(
  question: NonNullable<HumanRequest["question"]>,
  value: unknown,
): unknown {
  const fail = (why: string): never => {
    throw new SyscallError("EINVAL", `Cannot answer "${question.text.slice(0, 60)}": ${why}`);
  };
  switch (question.kind) {
    case "text":
      return typeof value === "string" ? value : fail("expected text");
    case "number": {
      const n = typeof value === "string" && value.trim() !== "" ? Number(value) : value;
      return typeof n === "number" && Number.isFinite(n) ? n : fail("expected a number");
    }
    case "boolean":
      if (typeof value === "boolean") return value;
      if (value === "yes" || value === "true") return true;
      if (value === "no" || value === "false") return false;
      return fail("expected yes or no");
    case "choice":
      return typeof value === "string" && (question.choices ?? []).includes(value)
        ? value
        : fail(`expected one of ${(question.choices ?? []).join(", ")}`);
  }
}

/**
 * The human queue of a kernel.
 *
 * @example
 * ```ts ignore
 * for (const request of await kernel.humans.pending()) {
 *   await kernel.humans.answer(request.id, { decision: "deny_once" }, { by: "operator" });
 * }
 * ```
 */
export class HumanQueue {
  #kernel: HumanQueueKernel;
  #responder: HumanResponder | undefined;

  /** The queue of `kernel`; `responder` (if any) answers requests as they arrive. */
  constructor(kernel: HumanQueueKernel, responder?: HumanResponder) {
    this.#kernel = kernel;
    this.#responder = responder;
  }

  /** Unanswered requests, oldest first. */
  async pending(): Promise<HumanRequest[]> {
    const out: HumanRequest[] = [];
    const kv = this.#kernel.store.kv;
    for await (const entry of kv.list<string>({ prefix: ["human_pending"] })) {
      const request = await this.get(entry.value);
      if (request?.state === "pending") out.push(request);
    }
    return out;
  }

  /** One request by id. */
  async get(id: string): Promise<HumanRequest | undefined> {
    return (await this.#kernel.store.kv.get<HumanRequest>(["human", id])).value ?? undefined;
  }

  /**
   * Files a request for the call `call` and parks the asker on it, in one
   * commit (so no answer can arrive before the asker waits for it); then
   * hands the request to the responder, if any.
   */
  async file(
    call: ParkedCall & { image: string },
    request: Omit<HumanRequest, "id" | "createdAt" | "state" | "pid" | "seq" | "image">,
  ): Promise<typeof PARKED> {
    const record: HumanRequest = {
      ...request,
      pid: call.pid,
      seq: call.seq,
      image: call.image,
      id: crypto.randomUUID(),
      createdAt: this.#kernel.now(),
      state: "pending",
    };
    const parked: typeof PARKED = await this.#kernel.waits.park(call, {
      kind: "human",
      request: record.id,
    }, {
      extra: (op) =>
        op.set(["human", record.id], record)
          .set(["human_pending", record.createdAt, record.id], record.id),
    });
    void this.#offer(record).catch(() => {});
    return parked;
  }

  /**
   * Files a permission request for the call `ctx` (syscall `request.name`
   * with `request.args`) asking for `request.capability`, and parks the
   * asker on it (see {@link HumanQueue.file}). The request keeps the
   * arguments in full; a call whose arguments are too long to show a human
   * is refused with `EPERM` instead.
   */
  async permission(
    ctx: CallContext,
    request: { name: string; args: unknown; capability: CapabilitySpec; reason?: string },
  ): Promise<typeof PARKED> {
    const { name, args } = request;
    const full = await reviewArgs(name, args);
    if (full === undefined) {
      throw new SyscallError(
        "EPERM",
        `Cannot ask a human about ${name}: its arguments are over the ${MAX_REVIEW_BYTES} bytes a human is shown`,
      );
    }
    return await this.file(
      { pid: ctx.pid, seq: ctx.seq, name, argsDigest: ctx.argsDigest, image: ctx.image },
      {
        kind: "permission",
        operation: {
          syscall: name,
          args: full,
          summary: summarizeArgs(name, args),
          argsDigest: ctx.argsDigest,
          capability: formatCapability(request.capability),
          grant: request.capability,
        },
        reason: request.reason,
      },
    );
  }

  async #offer(request: HumanRequest): Promise<void> {
    const answer = await this.#responder?.respond(request);
    if (answer) await this.answer(request.id, answer, { by: "responder" });
  }

  /**
   * Answers a request. Permission requests take a `decision`: `allow_once`
   * mints a one-shot capability bound to the exact operation (its argument
   * digest), `allow_always` a lasting one (optionally with a `ttl`),
   * `deny_once` fails the call with `EPERM`, `deny_always` also adds a
   * policy rule denying that exact operation. Questions take a typed
   * `answer`. The answer, the grant and the asker's wake-up commit together.
   */
  async answer(id: string, answer: HumanAnswer, options: { by: string }): Promise<HumanRequest> {
    const kernel = this.#kernel;
    const kv = kernel.store.kv;
    const entry = await kv.get<HumanRequest>(["human", id]);
    const request = entry.value;
    if (!request) {
      throw new SyscallError("ENOENT", `Cannot answer request "${id}": no such request`);
    }
    if (request.state !== "pending") {
      throw new SyscallError("EEXIST", `Cannot answer request "${id}": it was already answered`);
    }
    if (answer.argsDigest !== undefined && answer.argsDigest !== request.operation?.argsDigest) {
      throw new SyscallError(
        "EINVAL",
        `Cannot answer request "${id}": the approval names a different operation than the one asked`,
      );
    }
    const now = kernel.now();
    const answered: HumanRequest = {
      ...request,
      state: "answered",
      answer: { by: options.by, at: now },
    };
    let outcome: WaitOutcome;
    let grant: { apply: (op: Deno.AtomicOperation) => void; id: string } | undefined;
    if (request.kind === "question" && answer.decision?.startsWith("deny")) {
      // Declining to answer: the question fails with EPERM.
      answered.answer!.decision = answer.decision;
      outcome = {
        ok: false,
        error: {
          code: "EPERM",
          message: `Cannot get an answer: ${options.by} declined the question`,
        },
      };
    } else if (request.kind === "question") {
      if (answer.decision !== undefined) {
        throw new SyscallError(
          "EINVAL",
          `Cannot answer request "${id}": it is a question, not a permission`,
        );
      }
      const value = checkAnswer(request.question!, answer.answer);
      answered.answer!.value = value;
      outcome = { ok: true, value };
    } else {
      const decision = answer.decision;
      if (
        !decision || !["allow_once", "allow_always", "deny_once", "deny_always"].includes(decision)
      ) {
        throw new SyscallError(
          "EINVAL",
          `Cannot answer request "${id}": expected a decision of allow_once, allow_always, deny_once or deny_always`,
        );
      }
      answered.answer!.decision = decision;
      const operation = request.operation!;
      if (decision.startsWith("allow")) {
        const spec = operation.grant ?? parseCapability(operation.capability);
        const ttlMs = answer.ttl ? parseDuration(answer.ttl) : undefined;
        if (ttlMs !== undefined) answered.answer!.ttlMs = ttlMs;
        const prepared = kernel.caps.prepareGrant(request.pid, {
          ...spec,
          uses: decision === "allow_once" ? 1 : undefined,
        }, {
          grantedBy: `human:${id}`,
          boundTo: decision === "allow_once" && operation.syscall !== "cap.request"
            ? operation.argsDigest
            : undefined,
          expiresAt: ttlMs !== undefined ? now + ttlMs : undefined,
          now,
        });
        grant = { apply: prepared.apply, id: prepared.cap.id };
        answered.answer!.capability = prepared.cap.id;
        outcome =
          operation.syscall === "cap.request" || operation.syscall === "human.request_permission"
            ? { ok: true, value: prepared.cap.id }
            : { retry: true };
      } else {
        outcome = {
          ok: false,
          error: {
            code: "EPERM",
            message: `Cannot ${operation.syscall} ${
              operation.summary ?? operation.args
            }: denied by ${options.by}`,
          },
        };
      }
    }
    const woke = await kernel.waits.complete(request.pid, request.seq, outcome, {
      check: entry,
      extra: (op) => {
        op.set(["human", id], answered).delete(["human_pending", request.createdAt, id]);
        grant?.apply(op);
      },
    });
    if (!woke) {
      const now = await kv.get<HumanRequest>(["human", id]);
      if (now.value?.state !== "pending") {
        throw new SyscallError("EEXIST", `Cannot answer request "${id}": it was already answered`);
      }
      await kv.atomic().check(now).set(["human", id], {
        ...answered,
        answer: { by: options.by, at: kernel.now() },
      })
        .delete(["human_pending", request.createdAt, id]).commit();
      throw new SyscallError(
        "ENOENT",
        `Cannot answer request "${id}": process ${request.pid} no longer waits for it`,
      );
    }
    kernel.caps.invalidate(request.pid);
    if (answered.answer?.decision?.startsWith("deny") && request.operation) {
      // The asked call ends here, refused: the audit says so.
      await kernel.journal.write({
        audit: {
          at: kernel.now(),
          pid: request.pid,
          image: request.image,
          syscall: request.operation.syscall,
          args: request.operation.summary ?? request.operation.args,
          argsDigest: request.operation.argsDigest,
          decision: "deny",
          approval: id,
          outcome: "error",
          code: "EPERM",
          reason: `denied by ${options.by}`,
        },
      }, { durable: false });
    }
    if (answered.answer?.decision === "deny_always") {
      const operation = request.operation!;
      const spec = operation.grant ?? parseCapability(operation.capability);
      await kernel.processes.update(request.pid, (p) => ({
        policy: [...p.policy, {
          pattern: operation.capability,
          resource: spec.resource,
          rights: spec.rights,
          scope: spec.scope,
          decision: "deny",
          source: `human:${id}`,
        }],
      }));
    }
    return answered;
  }
}
