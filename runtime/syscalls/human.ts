/**
 * The `human.*` syscalls and `cap.request`: questions and permission
 * requests that park the process in a human queue until someone answers.
 *
 * @module
 */

import type { CallContext, HandlerTable, PARKED } from "../../broker/broker.ts";
import { summarizeArgs } from "../../broker/audit.ts";
import { formatCapability } from "../../broker/capability.ts";
import { SyscallError } from "../../broker/errors.ts";
import type { Kernel } from "../kernel.ts";
import type { HumanRequest } from "../human_queue.ts";

/** Handlers of the `human` group and `cap.request`. */
export function humanHandlers(kernel: Kernel): HandlerTable {
  const ask = (
    ctx: CallContext,
    name: string,
    request: Omit<HumanRequest, "id" | "createdAt" | "state" | "pid" | "seq" | "image">,
  ): Promise<typeof PARKED> =>
    kernel.humans.file(
      { pid: ctx.pid, seq: ctx.seq, name, argsDigest: ctx.argsDigest, image: ctx.image },
      request,
    );
  const permission =
    (name: "human.request_permission" | "cap.request") =>
    (ctx: CallContext, args: { capability: string; reason?: string }) => ({
      ops: [],
      effect: "none" as const,
      run: async () => {
        const spec = await kernel.withinCeiling(ctx.pid, args.capability);
        return ask(ctx, name, {
          kind: "permission",
          operation: {
            syscall: name,
            args: summarizeArgs(name, args),
            argsDigest: ctx.argsDigest,
            capability: formatCapability(spec),
          },
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
        return ask(ctx, "human.ask", {
          kind: "question",
          question: { text: args.question, kind, choices: args.choices },
        });
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
