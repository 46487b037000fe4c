/**
 * The `obj.*` syscalls over Object Memory. A namespace is the scope of an
 * `obj:` capability; `self` names the caller's private namespace
 * (`proc/<pid>`), which every process is granted at creation.
 *
 * @module
 */

import type { HandlerTable } from "../../broker/broker.ts";
import type { Operation } from "../../broker/capability.ts";
import type { Kernel } from "../kernel.ts";

/** The real namespace a program-supplied one names. */
export function namespaceOf(pid: number, namespace: string): string {
  return namespace === "self" ? `proc/${pid}` : namespace;
}

/** Handlers of the `obj` group. */
export function objHandlers(kernel: Kernel): HandlerTable {
  const objects = kernel.objects;
  const op = (right: string, target: string): Operation[] => [
    { resource: "obj", right, target },
  ];
  return {
    "obj.get": (ctx, args) => {
      const ns = namespaceOf(ctx.pid, args.namespace);
      return {
        ops: op("read", ns),
        effect: "none",
        run: () => objects.get(ns, args.name),
      };
    },
    "obj.list": (ctx, args) => {
      const ns = namespaceOf(ctx.pid, args.namespace);
      return {
        ops: op("read", ns),
        effect: "none",
        run: () => objects.list(ns, { prefix: args.prefix }),
      };
    },
    "obj.put": (ctx, args) => {
      const ns = namespaceOf(ctx.pid, args.namespace);
      return {
        ops: op("write", ns),
        effect: "effect",
        run: async () => {
          const record = await objects.put(ns, args.name, args.value, {
            writer: ctx.pid,
            chargeTo: ctx.pid,
            type: args.type,
            expectedVersion: args.expectedVersion,
          });
          return { version: record.version };
        },
      };
    },
    "obj.delete": (ctx, args) => {
      const ns = namespaceOf(ctx.pid, args.namespace);
      return {
        ops: op("delete", ns),
        effect: "idempotent",
        run: () => objects.delete(ns, args.name),
      };
    },
    "obj.define_type": (ctx, args) => {
      const ns = namespaceOf(ctx.pid, args.namespace);
      return {
        ops: op("write", ns),
        effect: "idempotent",
        run: async () => {
          await objects.defineType(ns, args.name, args.schema, {
            definer: ctx.pid,
          });
        },
      };
    },
  };
}
