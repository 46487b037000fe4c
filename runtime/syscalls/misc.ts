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
          await kernel.checkBudget(ctx.pid);
          const provider = await kernel.modelFor(proc);
          const reply = await provider.complete({
            model,
            image: proc.image,
            pid: ctx.pid,
            messages: args.messages,
            tools: args.tools ?? [],
          });
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
