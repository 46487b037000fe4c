/**
 * The `human.*` syscalls: questions and permission requests that park the
 * process in the human queue until someone answers, and notices that do
 * not wait. A permission request is also how `cap.request` asks
 * (see `cap.ts`).
 *
 * @module
 */

import type { CallContext, HandlerTable, Plan } from "../../broker/broker.ts";
import type { CapabilitySpec } from "../../broker/capability.ts";
import { SyscallError } from "../../broker/errors.ts";
import type { TopicEvents } from "../events.ts";
import type { HumanQueue } from "../human_queue.ts";

/** What a permission request needs from the kernel. */
export interface PermissionKernel {
  /** The human queue. */
  readonly humans: Pick<HumanQueue, "permission">;
  /** Parses a capability for a process and checks it against its image's ceiling. */
  withinCeiling(pid: number, text: string): Promise<CapabilitySpec>;
}

/** What the `human` handlers need from the kernel. */
export interface HumanKernel extends PermissionKernel {
  /** The human queue. */
  readonly humans: Pick<HumanQueue, "permission" | "file">;
  /** The topic events, for notices. */
  readonly events: Pick<TopicEvents, "preparePost">;
}

/**
 * Plans a request to a human for a capability within the caller's ceiling
 * (`human.request_permission`, `cap.request`): it parks the process until
 * the human decides.
 */
export function permissionRequest(
  kernel: PermissionKernel,
  name: "human.request_permission" | "cap.request",
  ctx: CallContext,
  args: { capability: string; reason?: string },
): Plan {
  return {
    ops: [],
    effect: "none",
    run: async () => {
      const spec = await kernel.withinCeiling(ctx.pid, args.capability);
      return kernel.humans.permission(ctx, {
        name,
        args,
        capability: spec,
        reason: args.reason,
      });
    },
  };
}

/** Handlers of the `human` namespace. */
export function humanHandlers(kernel: HumanKernel): HandlerTable {
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
    "human.request_permission": (ctx, args) =>
      permissionRequest(kernel, "human.request_permission", ctx, args),
    "human.notify": (ctx, args) => ({
      ops: [{ resource: "human", right: "notify", target: "*" }],
      effect: "effect",
      prepare: () =>
        kernel.events.preparePost("human.notify", { pid: ctx.pid, message: args.message }, ctx.pid),
    }),
  };
}
