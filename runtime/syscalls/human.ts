/**
 * The `human.*` syscalls and `cap.request`: questions and permission
 * requests that park the process in a human queue until someone answers.
 *
 * @module
 */

import type { CallContext, HandlerTable } from "../../broker/broker.ts";
import { SyscallError } from "../../broker/errors.ts";
import type { Kernel } from "../kernel.ts";

/** Handlers of the `human` group and `cap.request`. */
export function humanHandlers(kernel: Kernel): HandlerTable {
  const permission =
    (name: "human.request_permission" | "cap.request") =>
    (ctx: CallContext, args: { capability: string; reason?: string }) => ({
      ops: [],
      effect: "none" as const,
      run: async () => {
        const spec = await kernel.withinCeiling(ctx.pid, args.capability);
        return kernel.humans.permission(ctx, {
          name,
          args,
          capability: spec,
          reason: args.reason,
        });
      },
    });
  return {
    "human.ask": (ctx, args) => ({
      ops: [{ resource: "human", right: "ask", target: "*" }],
      effect: "none",
      run: () => {
        const kind = args.kind ?? (args.choices ? "choice" : "text");
        if (kind === "choice" && !args.choices?.length) {
          throw new SyscallError("EINVAL", "Cannot ask a choice question without choices");
        }
        return kernel.humans.file(
          { ...ctx, name: "human.ask" },
          { kind: "question", question: { text: args.question, kind, choices: args.choices } },
        );
      },
    }),
    "human.request_permission": permission("human.request_permission"),
    "cap.request": permission("cap.request"),
    "human.notify": (ctx, args) => ({
      ops: [{ resource: "human", right: "notify", target: "*" }],
      effect: "effect",
      run: () =>
        kernel.events.post("human.notify", { pid: ctx.pid, message: args.message }, ctx.pid),
    }),
  };
}
