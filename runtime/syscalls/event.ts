/**
 * The `event.*` syscalls: publishing on a topic (a change of the store,
 * committed with the call's records), and waiting for the next event on one
 * (the process parks until it arrives or the timeout passes).
 *
 * @module
 */

import type { HandlerTable } from "../../broker/broker.ts";
import type { TopicEvents } from "../events.ts";
import { deadlineAfter, park, type ParkKernel } from "./park.ts";

/** What the `event` handlers need from the kernel. */
export interface EventKernel extends ParkKernel {
  /** The topic events. */
  readonly events: Pick<TopicEvents, "preparePost" | "latestSeq">;
}

/** Handlers of the `event` namespace. */
export function eventHandlers(kernel: EventKernel): HandlerTable {
  return {
    "event.emit": (ctx, args) => ({
      ops: [{ resource: "event", right: "emit", target: args.topic }],
      effect: "effect",
      prepare: () => kernel.events.preparePost(args.topic, args.data, ctx.pid),
    }),
    "event.wait": (ctx, args) => ({
      ops: [{ resource: "event", right: "wait", target: args.topic }],
      effect: "none",
      run: async () =>
        park(kernel, ctx, "event.wait", {
          kind: "event",
          topic: args.topic,
          afterSeq: await kernel.events.latestSeq(args.topic),
          deadline: deadlineAfter(kernel, args.timeoutMs),
        }),
    }),
  };
}
