/**
 * The `obj.*` syscalls over Object Memory. A namespace is the scope of an
 * `obj:` capability; `self` names the caller's private namespace
 * (`proc/<pid>`), which every process is granted at creation, and which
 * `obj.share` lets it share with any process (sharing a namespace it was
 * given is delegation, under the rules of `cap.delegate`).
 *
 * Every call that writes (`obj.put`, `obj.delete`, `obj.define_type`,
 * `obj.share`) plans a change of the store, which the broker commits with
 * the call's journal and audit records in one commit.
 *
 * @module
 */

import type { HandlerTable } from "../../broker/broker.ts";
import type {
  Capability,
  CapabilityBound,
  CapabilitySpec,
  Operation,
} from "../../broker/capability.ts";
import type { CapabilityStore } from "../../broker/capability_store.ts";
import { SyscallError } from "../../broker/errors.ts";
import type { ObjectMemory } from "../object_memory.ts";
import type { ProcessTable } from "../process_table.ts";

/** What the `obj` handlers need from the kernel. */
export interface ObjKernel {
  /** Object memory. */
  readonly objects: Pick<
    ObjectMemory,
    "get" | "list" | "preparePut" | "prepareDelete" | "prepareDefineType"
  >;
  /** The capability store, to grant shares. */
  readonly caps: Pick<CapabilityStore, "prepareCheckedGrant">;
  /** The process table. */
  readonly processes: Pick<ProcessTable, "require">;
  /** The clock. */
  readonly now: () => number;
  /** `EPERM` unless `target` is a descendant of `pid`. */
  requireDescendant(pid: number, target: number, action?: string): Promise<void>;
  /** `EPERM` unless `spec` lies within the ceiling of `pid`'s image. */
  requireWithinCeilingOf(pid: number, spec: CapabilitySpec & { expiresAt?: number }): Promise<void>;
}

/** The real namespace a program-supplied one names. */
export function namespaceOf(pid: number, namespace: string): string {
  return namespace === "self" ? `proc/${pid}` : namespace;
}

/** Handlers of the `obj` namespace. */
export function objHandlers(kernel: ObjKernel): HandlerTable {
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
        prepare: async () => {
          const change = await objects.preparePut(ns, args.name, args.value, {
            writer: ctx.pid,
            chargeTo: ctx.pid,
            type: args.type,
            expectedVersion: args.expectedVersion,
          });
          return { ...change, result: { version: change.result.version } };
        },
      };
    },
    "obj.delete": (ctx, args) => {
      const ns = namespaceOf(ctx.pid, args.namespace);
      return {
        ops: op("delete", ns),
        effect: "idempotent",
        prepare: () => objects.prepareDelete(ns, args.name),
      };
    },
    "obj.define_type": (ctx, args) => {
      const ns = namespaceOf(ctx.pid, args.namespace);
      return {
        ops: op("write", ns),
        effect: "idempotent",
        prepare: async () => {
          const change = await objects.prepareDefineType(ns, args.name, args.schema, {
            definer: ctx.pid,
          });
          return { ...change, result: undefined };
        },
      };
    },
    "obj.share": (ctx, args) => {
      const namespace = namespaceOf(ctx.pid, args.namespace);
      return {
        ops: args.rights.map((right) => ({ resource: "obj" as const, right, target: namespace })),
        effect: "effect",
        prepare: async (grant) => {
          // A process's own namespace is its to share with any process;
          // sharing what it was given is delegation, under the same rules
          // as cap.delegate.
          const own = namespace === `proc/${ctx.pid}`;
          if (own) await kernel.processes.require(args.pid);
          else await kernel.requireDescendant(ctx.pid, args.pid, "share with");
          // One capability per source, each a subset of the one it comes from
          // and expiring with it; all are checked before any is granted.
          const bySource = new Map<string, { source: Capability; rights: string[] }>();
          grant.capabilities.forEach((source, i) => {
            const entry = bySource.get(source.id) ?? { source, rights: [] };
            entry.rights.push(args.rights[i]);
            bySource.set(source.id, entry);
          });
          const shares = [...bySource.values()].map(({ source, rights }) => {
            const spec: CapabilityBound = {
              resource: "obj",
              rights,
              scope: namespace,
              expiresAt: source.expiresAt,
            };
            return { source, spec };
          });
          for (const { source, spec } of own ? [] : shares) {
            if (!source.delegable) {
              throw new SyscallError(
                "EPERM",
                `Cannot share namespace "${namespace}": the caller's capability on it is not delegable`,
              );
            }
            await kernel.requireWithinCeilingOf(args.pid, spec);
          }
          // Every share is granted in the call's one commit, or none is.
          const grants = await Promise.all(shares.map(({ source, spec }) => {
            const { expiresAt, ...rest } = spec;
            return kernel.caps.prepareCheckedGrant(args.pid, rest, {
              grantedBy: `pid:${ctx.pid}`,
              parent: source,
              expiresAt,
              now: kernel.now(),
            });
          }));
          return {
            result: grants[0].result.id,
            apply: (op) => grants.forEach((grant) => grant.apply(op)),
          };
        },
      };
    },
  };
}
