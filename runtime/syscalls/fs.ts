/**
 * The `fs.*` syscalls: each resolves its path(s) through the filesystem
 * provider's containment, names the right it needs on the real path, and
 * runs the provider operation.
 *
 * @module
 */

import type { CallContext, HandlerTable } from "../../broker/broker.ts";
import type { Kernel } from "../kernel.ts";

/** Handlers of the `fs` group. */
export function fsHandlers(kernel: Kernel): HandlerTable {
  const fs = kernel.fs;
  const at = async (ctx: CallContext, path: string) =>
    await fs.resolve(ctx.cwd ?? (await kernel.processes.require(ctx.pid)).cwd, path);
  const read = (target: string) => ({ resource: "fs" as const, right: "read", target });
  const write = (target: string) => ({ resource: "fs" as const, right: "write", target });
  return {
    "fs.read": async (ctx, args) => {
      const path = await at(ctx, args.path);
      return {
        ops: [read(path)],
        effect: "none",
        run: () => fs.read(path, { maxBytes: args.maxBytes }),
      };
    },
    "fs.list": async (ctx, args) => {
      const path = await at(ctx, args.path);
      return { ops: [read(path)], effect: "none", run: () => fs.list(path) };
    },
    "fs.stat": async (ctx, args) => {
      const path = await at(ctx, args.path);
      return { ops: [read(path)], effect: "none", run: () => fs.stat(path) };
    },
    "fs.write": async (ctx, args) => {
      const path = await at(ctx, args.path);
      return {
        ops: [write(path)],
        effect: "idempotent",
        run: async () => ({ bytes: await fs.write(path, args.content) }),
      };
    },
    "fs.append": async (ctx, args) => {
      const path = await at(ctx, args.path);
      return {
        ops: [write(path)],
        effect: "effect",
        run: async () => ({ bytes: await fs.append(path, args.content) }),
      };
    },
    "fs.mkdir": async (ctx, args) => {
      const path = await at(ctx, args.path);
      return {
        ops: [write(path)],
        effect: "idempotent",
        run: () => fs.mkdir(path, { recursive: args.recursive }),
      };
    },
    "fs.remove": async (ctx, args) => {
      const path = await at(ctx, args.path);
      return {
        ops: [{ resource: "fs", right: "delete", target: path }],
        effect: "idempotent",
        run: () => fs.remove(path, { recursive: args.recursive }),
      };
    },
    "fs.rename": async (ctx, args) => {
      const from = await at(ctx, args.from);
      const to = await at(ctx, args.to);
      return {
        ops: [{ resource: "fs", right: "delete", target: from }, write(to)],
        effect: "effect",
        run: () => fs.rename(from, to),
      };
    },
  };
}
