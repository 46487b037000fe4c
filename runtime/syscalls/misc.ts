/**
 * The `time`, `model` and `cap` syscalls.
 *
 * @module
 */

import type { CapabilityView } from "../../broker/abi.ts";
import type { HandlerTable } from "../../broker/broker.ts";
import { formatCapability } from "../../broker/capability.ts";
import { imageModelId } from "../image.ts";
import type { Kernel } from "../kernel.ts";
import { maxInputTokens, type ModelReply } from "../model.ts";

/**
 * Tokens reserved for a reply when the call names no `maxTokens` and a
 * token budget applies; the model is then held to this (or less, when less
 * of the budget is left).
 */
export const DEFAULT_REPLY_TOKENS = 4096;

/** Handlers of the `time`, `model` and `cap` groups. */
export function miscHandlers(kernel: Kernel): HandlerTable {
  return {
    "time.now": () => ({ ops: [], effect: "none", run: () => Promise.resolve(kernel.now()) }),
    "time.sleep": (_ctx, args) => ({
      ops: [{ resource: "time", right: "sleep", target: "*" }],
      effect: "none",
      run: () => new Promise((resolve) => setTimeout(() => resolve(null), args.ms)),
    }),
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
          // Reserve the tokens the call may spend before making it; the model is held to them.
          let reserved = 0;
          let maxTokens = args.maxTokens;
          if (await kernel.isBudgeted(ctx.pid, "tokens")) {
            const input = maxInputTokens(args.messages, tools);
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
              messages: args.messages,
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
          await kernel.recordTranscript(ctx.pid, args.messages, reply.message);
          return reply;
        },
      };
    },
    "cap.list": (ctx) => ({
      ops: [],
      effect: "none",
      run: async () =>
        (await kernel.caps.list(ctx.pid, kernel.now())).map((c): CapabilityView => ({
          id: c.id,
          text: formatCapability(c),
          resource: c.resource,
          rights: [...c.rights],
          scope: c.scope,
          uses: c.uses,
          expiresAt: c.expiresAt,
          delegable: c.delegable,
          parent: c.parent,
          grantedBy: c.grantedBy,
        })),
    }),
    "cap.drop": (ctx, args) => ({
      ops: [],
      effect: "effect",
      run: async () => {
        const dropped = await kernel.caps.drop(ctx.pid, args.id);
        return { dropped };
      },
    }),
    "image.list": () => ({
      ops: [],
      effect: "none",
      run: async () => (await kernel.images.list()).map(({ tag, digest }) => ({ tag, digest })),
    }),
  };
}
