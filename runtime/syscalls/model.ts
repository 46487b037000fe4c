/**
 * The `model.*` syscall: a completion from the model a process may call,
 * with its tokens reserved against the budget before the call and settled
 * after it, and the exchange kept in the process's transcript. A call may
 * send only the messages after a reference to its transcript
 * (`transcripts.ts`): the host checks it, expands it for the model, and
 * answers with the reference to the conversation through the reply.
 *
 * @module
 */

import type { HandlerTable } from "../../broker/broker.ts";
import { imageModelId, type RegisteredImage } from "../image.ts";
import { maxInputTokens, type ModelProvider, type ModelReply } from "../model.ts";
import type { BudgetKey, ProcessRecord, ProcessTable, Usage } from "../process_table.ts";
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
  readonly processes: Pick<ProcessTable, "require">;
  /** The registered image a process runs. */
  imageOf(proc: ProcessRecord): Promise<RegisteredImage>;
  /** The model a process calls by default. */
  ownModelOf(proc: ProcessRecord, image: RegisteredImage): string;
  /** The provider a process's completions go to. */
  modelFor(proc: ProcessRecord): Promise<ModelProvider>;
  /** `EBUDGET` when the process or an ancestor has spent its `key` budget. */
  checkBudget(pid: number, key: BudgetKey): Promise<void>;
  /** Whether the process or an ancestor has a `key` budget. */
  isBudgeted(pid: number, key: BudgetKey): Promise<boolean>;
  /** Reserves between `least` and `most` of a budget; returns the amount reserved. */
  reserve(pid: number, key: BudgetKey, want: { least: number; most?: number }): Promise<number>;
  /** Charges usage (negative to give a reservation back). */
  charge(pid: number, usage: Partial<Usage>): Promise<void>;
  /** The whole conversation of a request, checked against the process's transcript. */
  resolveConversation(pid: number, request: ConversationRequest): Promise<Conversation>;
  /** Appends an exchange to the process's transcript; the reference to it when it is exact. */
  recordTranscript(
    pid: number,
    request: ConversationRequest,
    reply: ModelReply,
  ): Promise<TranscriptRef | undefined>;
}

/** Handlers of the `model` namespace. */
export function modelHandlers(kernel: ModelKernel): HandlerTable {
  return {
    "model.complete": async (ctx, args) => {
      const proc = await kernel.processes.require(ctx.pid);
      const image = await kernel.imageOf(proc);
      const own = kernel.ownModelOf(proc, image);
      const model = args.model ?? own;
      // A process may always call its own model and the model its image names.
      const free = model === own || model === imageModelId(image.image);
      return {
        ops: free ? [] : [{ resource: "model", right: "complete", target: model }],
        effect: "none",
        run: async () => {
          await kernel.checkBudget(ctx.pid, "toolCalls");
          const tools = args.tools ?? [];
          // Checked before anything is sent: a reference the transcript does not match is refused.
          const conversation = await kernel.resolveConversation(ctx.pid, args);
          if (conversation.recorded) return conversation.recorded;
          // Reserve the tokens the call may spend before making it; the model is held to them.
          let reserved = 0;
          let maxTokens = args.maxTokens;
          if (await kernel.isBudgeted(ctx.pid, "tokens")) {
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
          // Settle: what the model reports it spent replaces the reservation.
          const spent = reply.usage.inputTokens + reply.usage.outputTokens;
          await kernel.charge(ctx.pid, { tokens: spent - reserved });
          const calls = reply.message.tool_calls?.length ?? 0;
          if (calls) await kernel.reserve(ctx.pid, "toolCalls", { least: calls });
          const transcript = await kernel.recordTranscript(ctx.pid, args, reply);
          return transcript ? { ...reply, transcript } : reply;
        },
      };
    },
  };
}
