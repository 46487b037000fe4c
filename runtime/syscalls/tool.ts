/**
 * `tool.*`, `image.register`, `cap.delegate` and `obj.share`: the
 * self-evolution syscalls. None of them hands out more authority than the
 * caller already holds.
 *
 * @module
 */

import type { HandlerTable } from "../../broker/broker.ts";
import {
  attenuationError,
  type Capability,
  type CapabilityBound,
  type CapabilitySpec,
  parseCapability,
  resolveScope,
} from "../../broker/capability.ts";
import { SyscallError } from "../../broker/errors.ts";
import { describeIssue, issueMessage } from "../../broker/schema_errors.ts";
import { BUILTIN_TOOL_CATALOG } from "../_tool_catalog.ts";
import { AgentImageSchema } from "../image.ts";
import type { Kernel } from "../kernel.ts";
import { namespaceOf } from "./obj.ts";

/** Handlers of the self-evolution group. */
export function toolHandlers(kernel: Kernel): HandlerTable {
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
    "tool.call": (ctx, args) => ({
      ops: [],
      effect: "effect",
      run: async () => {
        if (Object.hasOwn(BUILTIN_TOOL_CATALOG, args.name)) {
          throw new SyscallError(
            "EINVAL",
            `Cannot call "${args.name}" through tool.call: it is a built-in tool`,
          );
        }
        const caller = await kernel.processes.require(ctx.pid);
        const child = await kernel.tools.start(caller, args.name, args.args);
        return await kernel.waits.park(
          { pid: ctx.pid, seq: ctx.seq, name: "tool.call", argsDigest: ctx.argsDigest },
          { kind: "child", pid: child.pid },
        );
      },
    }),
    "image.register": (ctx, args) => {
      const parsed = AgentImageSchema.safeParse(args.image, { error: issueMessage });
      if (!parsed.success) {
        throw new SyscallError(
          "EINVAL",
          `Cannot register image: ${describeIssue(parsed.error.issues[0])}`,
        );
      }
      const image = parsed.data;
      const tag = `${image.name}@${image.version}`;
      return {
        ops: [{ resource: "image", right: "register", target: tag }],
        effect: "idempotent",
        run: async () => {
          if (image.entry !== "libos:agent") {
            throw new SyscallError(
              "EINVAL",
              `Cannot register image "${tag}": a process may only register libos:agent images`,
            );
          }
          // An image's ceiling never exceeds its registrar's authority.
          const proc = await kernel.processes.require(ctx.pid);
          const held = await kernel.caps.list(ctx.pid, kernel.now());
          for (const text of image.capabilities) {
            const spec = resolveScope(parseCapability(text), { workspace: proc.workspace });
            if (!held.some((cap) => !attenuationError(spec, cap, kernel.now()))) {
              throw new SyscallError(
                "EPERM",
                `Cannot register image "${tag}": its ceiling "${text}" exceeds the registrar's authority`,
              );
            }
          }
          const registered = await kernel.images.register(image);
          return { tag: registered.tag, digest: registered.digest };
        },
      };
    },
    "cap.delegate": (ctx, args) => ({
      ops: [],
      effect: "effect",
      run: async () => {
        const proc = await kernel.processes.require(ctx.pid);
        const spec = resolveScope(parseCapability(args.capability), { workspace: proc.workspace });
        await kernel.requireDescendant(ctx.pid, args.pid, "delegate to");
        const now = kernel.now();
        const held = await kernel.caps.list(ctx.pid, now);
        const from = held.find((cap) =>
          cap.delegable && cap.uses === undefined &&
          !attenuationError({ ...spec, expiresAt: _expiryFrom(spec, cap, now) }, cap, now)
        );
        if (!from) {
          throw new SyscallError(
            "EPERM",
            `Cannot delegate "${args.capability}": the caller holds no delegable capability that covers it`,
          );
        }
        const expiresAt = _expiryFrom(spec, from, now);
        await kernel.requireWithinCeilingOf(args.pid, { ...spec, expiresAt });
        const cap = await kernel.caps.grant(args.pid, spec, {
          grantedBy: `pid:${ctx.pid}`,
          parent: from,
          expiresAt,
          now,
        });
        return cap.id;
      },
    }),
    "obj.share": (ctx, args) => {
      const namespace = namespaceOf(ctx.pid, args.namespace);
      return {
        ops: args.rights.map((right) => ({ resource: "obj" as const, right, target: namespace })),
        effect: "effect",
        run: async (grant) => {
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
          const ids: string[] = [];
          for (const { source, spec } of shares) {
            const { expiresAt, ...rest } = spec;
            const cap = await kernel.caps.grant(args.pid, rest, {
              grantedBy: `pid:${ctx.pid}`,
              parent: source,
              expiresAt,
              now: kernel.now(),
            });
            ids.push(cap.id);
          }
          return ids[0];
        },
      };
    },
  };
}

/** The expiry a capability derived from `source` gets: its own ttl's, or else its source's. */
function _expiryFrom(spec: CapabilitySpec, source: Capability, now: number): number | undefined {
  return spec.ttlMs !== undefined ? now + spec.ttlMs : source.expiresAt;
}
