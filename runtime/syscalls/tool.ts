/**
 * The `tool.*` syscalls: registering a JIT tool (it runs later as a child
 * process with no more authority than its manifest and the caller allow),
 * listing the caller's tool table, and calling a JIT tool (the caller is
 * blocked in the commit that makes the tool's process, until it ends).
 *
 * @module
 */

import { type HandlerTable, PARKED } from "../../broker/broker.ts";
import { SyscallError } from "../../broker/errors.ts";
import { BUILTIN_TOOL_CATALOG } from "../_tool_catalog.ts";
import type { RegisteredImage } from "../image.ts";
import type { ToolTables } from "../jit_tools.ts";
import { CallerStopped } from "../lifecycle.ts";
import type { ProcessRecord, ProcessTable } from "../process_table.ts";

/** What the `tool` handlers need from the kernel. */
export interface ToolKernel {
  /** The JIT tool tables. */
  readonly tools: Pick<ToolTables, "register" | "list" | "start">;
  /** The process table. */
  readonly processes: Pick<ProcessTable, "require" | "requireEntry">;
  /** The registered image a process runs, for its built-in tools. */
  imageOf(proc: ProcessRecord): Promise<RegisteredImage>;
}

/** Handlers of the `tool` namespace. */
export function toolHandlers(kernel: ToolKernel): HandlerTable {
  return {
    "tool.register": (ctx, args) => ({
      ops: [{ resource: "tool", right: "register", target: args.name }],
      effect: "idempotent",
      run: async () => {
        const tool = await kernel.tools.register(ctx.pid, args);
        return { name: tool.name, digest: tool.digest };
      },
    }),
    "tool.list": (ctx) => ({
      ops: [],
      effect: "none",
      run: async () => {
        const proc = await kernel.processes.require(ctx.pid);
        const image = await kernel.imageOf(proc);
        const builtin = image.image.tools
          .filter((name) => Object.hasOwn(BUILTIN_TOOL_CATALOG, name))
          .map((name) => ({
            name,
            description: BUILTIN_TOOL_CATALOG[name].description,
            builtin: true,
          }));
        const jit = (await kernel.tools.list(ctx.pid)).map((
          { name, description, input, digest },
        ) => ({
          name,
          description,
          input,
          digest,
          builtin: false,
        }));
        return [...builtin, ...jit];
      },
    }),
    // The call's first record is its `wait`, committed with the tool's
    // process (see `ToolTables.start`): no intent goes before it, and a
    // crash before that commit leaves nothing to redo but the call itself.
    "tool.call": (ctx, args) => ({
      ops: [],
      effect: "none",
      run: async (_grant, _authorize, parked) => {
        if (Object.hasOwn(BUILTIN_TOOL_CATALOG, args.name)) {
          throw new SyscallError(
            "EINVAL",
            `Cannot call "${args.name}" through tool.call: it is a built-in tool`,
          );
        }
        // Read once: the tool's process is decided, charged and blocked on
        // this entry, and its create commit checks it.
        const caller = await kernel.processes.requireEntry(ctx.pid);
        try {
          await kernel.tools.start(caller.value, args.name, args.args, {
            callerEntry: caller,
            call: { pid: ctx.pid, seq: ctx.seq, name: "tool.call", argsDigest: ctx.argsDigest },
            // Audited in the commit that makes the tool, before anything the tool does.
            audit: parked,
          });
        } catch (error) {
          // Unanswered and unrecorded: the caller's next run makes the call again.
          if (error instanceof CallerStopped) return PARKED;
          throw error;
        }
        return PARKED;
      },
    }),
  };
}
