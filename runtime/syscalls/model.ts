/**
 * The `model.*` syscall: a completion from the model a process may call,
 * with its tokens reserved against the budget before the call and settled
 * after it, and the exchange kept in the process's transcript: the
 * settlement, the exchange and the call's journal record are one commit. A call may
 * send only the messages after a reference to its transcript
 * (`transcripts.ts`): the host checks it, expands it for the model, and
 * answers with the reference to the conversation through the reply.
 *
 * @module
 */

import { type HandlerTable, OutcomeChange } from "../../broker/broker.ts";
import type { StoreChange } from "../../broker/store_change.ts";
import { imageModelId, type RegisteredImage } from "../image.ts";
import { maxInputTokens, type ModelProvider, type ModelReply } from "../model.ts";
import {
  type BudgetKey,
  hasBudget,
  type ProcessRecord,
  type ProcessTable,
  requireBudgetLeft,
  type Usage,
} from "../process_table.ts";
import type { Conversation, ConversationRequest, TranscriptRef } from "../transcripts.ts";

/**
 * Tokens reserved for a reply when the call names no `maxTokens` and a
 * token budget applies; the model is then held to this (or less, when less
 * of the budget is left).
 */
export const DEFAULT_REPLY_TOKENS = 4096;

/** What the `model` handlers need from the kernel. */
export interface ModelKernel {
  /** The process table. */
  readonly processes: Pick<ProcessTable, "chargedLineage" | "lineage">;
  /** The registered image a process runs. */
  imageOf(proc: ProcessRecord): Promise<RegisteredImage>;
  /** The model a process calls by default. */
  ownModelOf(proc: ProcessRecord, image: RegisteredImage): string;
  /** The provider a process's completions go to. */
  modelFor(proc: ProcessRecord): Promise<ModelProvider>;
  /** Reserves between `least` and `most` of a budget; returns the amount reserved. */
  reserve(pid: number, key: BudgetKey, want: { least: number; most?: number }): Promise<number>;
  /** Charges usage (negative to give a reservation back). */
  charge(pid: number, usage: Partial<Usage>): Promise<void>;
  /**
   * The change that charges usage, for the commit of what it paid for;
   * usage of a key in `within` must fit the budgets (`EBUDGET`).
   */
  prepareCharge(
    pid: number,
    usage: Partial<Usage>,
    options?: { within?: readonly BudgetKey[] },
  ): Promise<StoreChange<void>>;
  /** The whole conversation of a request, checked against the process's transcript. */
  resolveConversation(pid: number, request: ConversationRequest): Promise<Conversation>;
  /**
   * The change that appends an exchange to the process's transcript; its
   * result is the reference to it when it is exact.
   */
  prepareTranscript(
    pid: number,
    request: ConversationRequest,
    reply: ModelReply,
  ): Promise<StoreChange<TranscriptRef | undefined>>;
}

/** Handlers of the `model` namespace. */
export function modelHandlers(kernel: ModelKernel): HandlerTable {
  return {
    "model.complete": async (ctx, args) => {
      // The caller's transcript is looked up while its record is; the run
      // checks the request against it before anything is sent. A call
      // refused before it runs leaves this unused.
      const resolving = kernel.resolveConversation(ctx.pid, args);
      resolving.catch(() => {});
      // The caller's and its ancestors' records as this host last charged
      // them: their image, models, parent and budgets, and the usage the
      // charge of this call checks in its commit.
      const lineage = await kernel.processes.chargedLineage(ctx.pid);
      const proc = lineage[0];
      const image = await kernel.imageOf(proc);
      const own = kernel.ownModelOf(proc, image);
      const model = args.model ?? own;
      // A process may always call its own model and the model its image names.
      const free = model === own || model === imageModelId(image.image);
      return {
        ops: free ? [] : [{ resource: "model", right: "complete", target: model }],
        effect: "none",
        run: async () => {
          const tools = args.tools ?? [];
          // A spent budget refuses first (confirmed from the store), then a
          // reference the transcript does not match.
          try {
            requireBudgetLeft(lineage, "toolCalls");
          } catch {
            requireBudgetLeft(await kernel.processes.lineage(ctx.pid), "toolCalls");
          }
          const conversation = await resolving;
          if (conversation.recorded) return conversation.recorded;
          // Reserve the tokens the call may spend before making it; the model is held to them.
          let reserved = 0;
          let maxTokens = args.maxTokens;
          if (hasBudget(lineage, "tokens")) {
            const input = maxInputTokens([], tools) + conversation.inputBound;
            reserved = await kernel.reserve(ctx.pid, "tokens", {
              least: input + 1,
              most: input + (args.maxTokens ?? DEFAULT_REPLY_TOKENS),
            });
            maxTokens = reserved - input;
          }
          let reply: ModelReply;
          try {
            const provider = await kernel.modelFor(proc);
            reply = await provider.complete({
              model,
              image: proc.image,
              pid: ctx.pid,
              messages: [...conversation.messages],
              tools,
              maxTokens,
            }, { signal: ctx.signal });
          } catch (error) {
            if (reserved) await kernel.charge(ctx.pid, { tokens: -reserved });
            throw error;
          }
          // Settle: what the model reports it spent replaces the reservation,
          // and the tool calls it asks for are reserved, in the commit that
          // records the exchange in the transcript and the call's outcome in
          // the journal: a crash leaves all of it or none.
          const tokens = reply.usage.inputTokens + reply.usage.outputTokens - reserved;
          const toolCalls = reply.message.tool_calls?.length ?? 0;
          return new OutcomeChange(
            async () => {
              // Prepared side by side: each reads only what this host did not commit itself.
              // Tokens spent without a reservation (the lineage as this host
              // last charged it had no tokens budget) must fit a budget the
              // store has: an exec elsewhere may have set one since.
              const within: BudgetKey[] = reserved ? ["toolCalls"] : ["toolCalls", "tokens"];
              const [usage, recorded] = await _together(
                kernel.prepareCharge(ctx.pid, { tokens, toolCalls }, { within }),
                kernel.prepareTranscript(ctx.pid, args, reply),
              );
              return {
                result: recorded.result ? { ...reply, transcript: recorded.result } : reply,
                apply: (op) => {
                  usage.apply(op);
                  recorded.apply(op);
                },
                committed: (versionstamp) => {
                  usage.committed?.(versionstamp);
                  recorded.committed?.(versionstamp);
                },
                wake: recorded.wake,
              };
            },
            // Unrecorded (over a budget or a quota), the tokens are spent all the same.
            () => kernel.charge(ctx.pid, { tokens }),
          );
        },
      };
    },
  };
}

/** Both results of two preparations started together; fails as awaiting one, then the other, would. */
async function _together<A, B>(a: Promise<A>, b: Promise<B>): Promise<[A, B]> {
  const [first, second] = await Promise.allSettled([a, b]);
  if (first.status === "rejected") throw first.reason;
  if (second.status === "rejected") throw second.reason;
  return [first.value, second.value];
}
