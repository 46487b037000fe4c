/**
 * The `time`, `model` and `cap` syscalls.
 *
 * @module
 */

import type { HandlerTable } from "../../broker/broker.ts";
import { formatCapability } from "../../broker/capability.ts";
import type { Kernel } from "../kernel.ts";

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
      const own = image.image.model
        ? `${image.image.model.provider}/${image.image.model.name}`
        : "scripted/default";
      const model = args.model ?? own;
      return {
        // A process may always call the model its image names.
        ops: model === own ? [] : [{ resource: "model", right: "complete", target: model }],
        effect: "none",
        run: async () => {
          await kernel.checkBudget(ctx.pid);
          const provider = await kernel.modelFor(proc);
          const reply = await provider.complete({
            model,
            image: proc.image,
            pid: ctx.pid,
            messages: args.messages,
            tools: args.tools ?? [],
          }, { signal: ctx.signal });
          await kernel.recordTranscript(ctx.pid, args.messages, reply.message);
          await kernel.charge(ctx.pid, {
            tokens: reply.usage.inputTokens + reply.usage.outputTokens,
            toolCalls: reply.message.tool_calls?.length ?? 0,
          });
          return reply;
        },
      };
    },
    "cap.list": (ctx) => ({
      ops: [],
      effect: "none",
      run: async () =>
        (await kernel.caps.list(ctx.pid, kernel.now())).map((c) => ({
          id: c.id,
          text: formatCapability(c),
          uses: c.uses,
          expiresAt: c.expiresAt,
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
