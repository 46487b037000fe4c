/**
 * The `cap.*` syscalls: a process's own capabilities — listing them,
 * asking a human for one, delegating a subset to a descendant, dropping
 * one with everything derived from it. None hands out more authority than
 * the caller already holds.
 *
 * @module
 */

import type { CapabilityView } from "../../broker/abi.ts";
import type { HandlerTable } from "../../broker/broker.ts";
import {
  attenuationError,
  type Capability,
  type CapabilitySpec,
  formatCapability,
} from "../../broker/capability.ts";
import type { CapabilityStore } from "../../broker/capability_store.ts";
import { SyscallError } from "../../broker/errors.ts";
import { parseGrant } from "../grants.ts";
import type { ProcessTable } from "../process_table.ts";
import { type PermissionKernel, permissionRequest } from "./human.ts";

/** What the `cap` handlers need from the kernel. */
export interface CapKernel extends PermissionKernel {
  /** The capability store. */
  readonly caps: Pick<CapabilityStore, "list" | "grant" | "drop">;
  /** The process table. */
  readonly processes: Pick<ProcessTable, "require">;
  /** The clock. */
  readonly now: () => number;
  /** `EPERM` unless `target` is a descendant of `pid`. */
  requireDescendant(pid: number, target: number, action?: string): Promise<void>;
  /** `EPERM` unless `spec` lies within the ceiling of `pid`'s image. */
  requireWithinCeilingOf(pid: number, spec: CapabilitySpec & { expiresAt?: number }): Promise<void>;
}

/** Handlers of the `cap` namespace. */
export function capHandlers(kernel: CapKernel): HandlerTable {
  return {
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
    "cap.request": (ctx, args) => permissionRequest(kernel, "cap.request", ctx, args),
    "cap.delegate": (ctx, args) => ({
      ops: [],
      effect: "effect",
      run: async () => {
        const proc = await kernel.processes.require(ctx.pid);
        const spec = parseGrant(args.capability, proc.workspace);
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
    "cap.drop": (ctx, args) => ({
      ops: [],
      effect: "effect",
      run: async () => {
        const dropped = await kernel.caps.drop(ctx.pid, args.id);
        return { dropped };
      },
    }),
  };
}

/** The expiry a capability derived from `source` gets: its own ttl's, or else its source's. */
function _expiryFrom(spec: CapabilitySpec, source: Capability, now: number): number | undefined {
  return spec.ttlMs !== undefined ? now + spec.ttlMs : source.expiresAt;
}
