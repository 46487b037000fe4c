/**
 * Grant derivation: what authority a process gets when it is made or
 * remade, decided from plain data by one pure function,
 * {@link deriveGrants}. An operator's spawn gets what it asks for within
 * its image's ceiling; a child gets a subset of its image's ceiling and of
 * what its parent holds; a fork gets copies of its parent's capabilities
 * (or the subset asked for); an exec keeps only what the new image's
 * ceiling allows. Each also gets the model it may always call. Nothing here
 * reads or writes the store: the kernel lists the capabilities, commits
 * the grants and revokes what is lost.
 *
 * @module
 */

import {
  allows,
  attenuationError,
  type Capability,
  type CapabilitySpec,
  formatCapability,
  parseCapability,
  resolveScope,
} from "../broker/capability.ts";
import { SyscallError } from "../broker/errors.ts";
import { decide, type PolicyRule } from "../broker/policy.ts";

/** An image as grant derivation sees it. */
export interface GrantImage {
  /** `name@version`, named in refusals. */
  tag: string;
  /** Its content digest: the same image keeps its process's model. */
  digest: string;
  /** Its ceiling: every capability a process of it may ever hold, in text form. */
  capabilities: readonly string[];
  /** The model it names, as `provider/name`, if any. */
  model?: string;
}

/** The process another is made from (or that execs). */
export interface GrantSource {
  /** Its pid, named in refusals. */
  pid: number;
  /** The image it runs. */
  image: GrantImage;
  /** The model it calls when it names none and may always call (`provider/name`). */
  model: string;
  /** The capabilities it holds now. */
  held: readonly Capability[];
  /** Its policy rules: one that denies or asks for a model keeps it from passing that model on. */
  policy: readonly PolicyRule[];
}

/** How a process comes to have authority. */
export type GrantDerivation =
  | {
    /** An operator spawns a process. */
    kind: "spawn";
    /** Its image. */
    image: GrantImage;
    /** Its workspace root: relative fs scopes resolve against it. */
    workspace: string;
    /** Capabilities in text form (default: the image's ceiling). */
    requested?: readonly string[];
    /** The model it calls when it names none (the operator's, else its image's). */
    model: string;
    /** The clock reading expiries are compared at. */
    now: number;
  }
  | {
    /** A process spawns a child (a JIT tool call too). */
    kind: "child";
    /** The child's image. */
    image: GrantImage;
    /** The workspace root (its parent's). */
    workspace: string;
    /** Capabilities in text form (default: every ceiling capability the parent covers). */
    requested?: readonly string[];
    /** The parent. */
    source: GrantSource;
    /** The clock reading expiries are compared at. */
    now: number;
  }
  | {
    /** A process forks itself. */
    kind: "fork";
    /** The workspace root (its parent's). */
    workspace: string;
    /** Capabilities in text form (default: a copy of every lasting capability the parent holds). */
    requested?: readonly string[];
    /** The parent. */
    source: GrantSource;
    /** The clock reading expiries are compared at. */
    now: number;
  }
  | {
    /** A process replaces its image, keeping its pid. */
    kind: "exec";
    /** The image it runs from now on. */
    image: GrantImage;
    /** The workspace root (its own). */
    workspace: string;
    /** The process itself. */
    source: GrantSource;
    /** The clock reading expiries are compared at. */
    now: number;
  };

/** One capability to grant. */
export interface DerivedGrant {
  /** What to grant. */
  spec: CapabilitySpec;
  /** The held capability it derives from (none for an operator's grant). */
  parent?: Capability;
  /** Its expiry, when it keeps its parent's (a fork's copy). */
  expiresAt?: number;
}

/** What {@link deriveGrants} decided. */
export interface Grants {
  /** Capabilities to grant, in order. */
  grants: DerivedGrant[];
  /** Capabilities of the source the process loses (an exec: those beyond the new ceiling). */
  revoke: Capability[];
  /** The model the process calls when it names none and may always call (`provider/name`). */
  model: string;
}

/**
 * Decides the authority a process gets, or throws a `SyscallError`:
 * `EINVAL` for a capability that cannot be parsed or resolved against the
 * workspace, `EPERM` for one beyond the image's ceiling, one the parent
 * holds nothing to derive from, and an image that names a model its source
 * may not call (it holds no lasting, unbound `model:complete` capability
 * for it, or its policy denies or asks for it).
 *
 * A capability derives only from a lasting one (one-shot grants are never
 * passed on) of which it is a subset in every attribute; a ceiling counts
 * every attribute too, `delegable` included. The kernel-granted private
 * namespace is never copied by a fork nor revoked by an exec.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { deriveGrants } from "./grants.ts";
 * const image = { tag: "demo@1.0.0", digest: "d", capabilities: ["fs:read,write:**"] };
 * const { grants } = deriveGrants({
 *   kind: "spawn", image, workspace: "/ws", requested: ["fs:read:src/**"],
 *   model: "scripted/default", now: 0,
 * });
 * assert.equal(grants[0].spec.scope, "/ws/src/**");
 * assert.throws(
 *   () => deriveGrants({ kind: "spawn", image, workspace: "/ws", requested: ["fs:delete:**"], model: "m", now: 0 }),
 *   { message: 'Cannot grant "fs:delete:/ws/**": beyond the ceiling of image "demo@1.0.0"' },
 * );
 * ```
 */
export function deriveGrants(derivation: GrantDerivation): Grants {
  const { workspace, now } = derivation;
  if (derivation.kind === "spawn") {
    const ceiling = imageCeiling(derivation.image.capabilities, workspace);
    const grants = (derivation.requested ?? derivation.image.capabilities).map((text) => {
      const spec = parseGrant(text, workspace);
      _requireWithinCeiling(spec, ceiling, derivation.image.tag, now);
      return { spec };
    });
    return { grants, revoke: [], model: derivation.model };
  }
  const { source } = derivation;
  const target = derivation.kind === "fork" ? source.image : derivation.image;
  const model = _derivedModel(source, target, _action(derivation), workspace, now);
  if (derivation.kind === "exec") {
    const ceiling = imageCeiling(target.capabilities, workspace);
    // Every attribute counts: a delegable capability outlives an exec only
    // into an image whose ceiling makes it delegable.
    const revoke = source.held.filter((cap) =>
      cap.grantedBy !== "kernel" && !isWithinCeiling(cap, ceiling, now)
    );
    return { grants: [], revoke, model };
  }
  if (derivation.kind === "child") {
    const ceiling = imageCeiling(target.capabilities, workspace);
    const grants: DerivedGrant[] = [];
    if (derivation.requested) {
      for (const text of derivation.requested) {
        const spec = parseGrant(text, workspace);
        _requireWithinCeiling(spec, ceiling, target.tag, now);
        const parent = _lastingCover(source.held, spec, now);
        if (!parent) {
          throw new SyscallError(
            "EPERM",
            `Cannot grant "${text}" to a child: the parent holds no capability that covers it`,
          );
        }
        grants.push({ spec, parent });
      }
    } else {
      // Default: every ceiling capability the parent itself covers.
      for (const spec of ceiling) {
        const parent = _lastingCover(source.held, spec, now);
        if (parent) grants.push({ spec, parent });
      }
    }
    return { grants, revoke: [], model };
  }
  const held = source.held.filter((cap) => cap.grantedBy !== "kernel");
  const grants: DerivedGrant[] = [];
  if (derivation.requested) {
    for (const text of derivation.requested) {
      const spec = parseGrant(text, workspace);
      const parent = _lastingCover(held, spec, now);
      if (!parent) {
        throw new SyscallError(
          "EPERM",
          `Cannot fork with "${text}": the parent holds no capability that covers it`,
        );
      }
      grants.push({ spec, parent });
    }
  } else {
    for (const cap of held) {
      if (cap.uses !== undefined) continue; // one-shot grants are not duplicated
      // A copy keeps every attribute: it expires with the original and is
      // delegable only if the original is.
      const { resource, rights, scope, delegable } = cap;
      grants.push({
        spec: { resource, rights, scope, delegable },
        parent: cap,
        expiresAt: cap.expiresAt,
      });
    }
  }
  return { grants, revoke: [], model };
}

/**
 * Parses a capability's text form and resolves its relative fs scope
 * against `workspace`; `EINVAL` naming the text when either fails.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseGrant } from "./grants.ts";
 * assert.equal(parseGrant("fs:read:out/**", "/ws").scope, "/ws/out/**");
 * assert.throws(() => parseGrant("fs:read:../x", "/ws"), { name: "SyscallError" });
 * ```
 */
export function parseGrant(text: string, workspace: string): CapabilitySpec {
  try {
    return resolveScope(parseCapability(text), { workspace });
  } catch (error) {
    throw new SyscallError("EINVAL", (error as Error).message);
  }
}

/** An image's ceiling for a process in `workspace`: its capabilities, parsed and resolved. */
export function imageCeiling(capabilities: readonly string[], workspace: string): CapabilitySpec[] {
  return capabilities.map((text) => parseGrant(text, workspace));
}

/**
 * True when `spec` is inside one entry of `ceiling` in every attribute,
 * `delegable` included (a ceiling entry's `ttl` counts from `now`).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { isWithinCeiling } from "./grants.ts";
 * const ceiling = [{ resource: "fs" as const, rights: ["read"], scope: "/ws/**" }];
 * assert(isWithinCeiling({ resource: "fs", rights: ["read"], scope: "/ws/a" }, ceiling, 0));
 * assert(!isWithinCeiling({ resource: "fs", rights: ["read"], scope: "/ws/**", delegable: true }, ceiling, 0));
 * ```
 */
export function isWithinCeiling(
  spec: CapabilitySpec & { expiresAt?: number },
  ceiling: readonly CapabilitySpec[],
  now: number,
): boolean {
  return ceiling.some((c) =>
    !attenuationError(spec, {
      ...c,
      id: "ceiling",
      holder: 0,
      delegable: c.delegable ?? false,
      grantedBy: "image",
      createdAt: now,
      expiresAt: c.ttlMs !== undefined ? now + c.ttlMs : undefined,
    }, now)
  );
}

function _requireWithinCeiling(
  spec: CapabilitySpec,
  ceiling: readonly CapabilitySpec[],
  tag: string,
  now: number,
): void {
  if (!isWithinCeiling(spec, ceiling, now)) {
    throw new SyscallError(
      "EPERM",
      `Cannot grant "${formatCapability(spec)}": beyond the ceiling of image "${tag}"`,
    );
  }
}

/** The first lasting capability of `held` that `spec` is a subset of. */
function _lastingCover(
  held: readonly Capability[],
  spec: CapabilitySpec,
  now: number,
): Capability | undefined {
  return held.find((cap) => cap.uses === undefined && !attenuationError(spec, cap, now));
}

/** The call a derivation is made by, as refusals name it. */
function _action(derivation: GrantDerivation): string {
  if (derivation.kind === "fork") return "fork";
  if (derivation.kind === "exec") return `exec "${derivation.image.tag}"`;
  return `spawn "${derivation.image.tag}"`;
}

/**
 * The model a process made from `source` into `target` may always call:
 * `source`'s for the same image (a fork, an exec of itself) or a `target`
 * that names none, else the one `target` names. A named model other than
 * `source`'s own or its image's needs a lasting `model:complete` capability
 * that `source`'s policy does not deny or ask for; else `EPERM`.
 */
function _derivedModel(
  source: GrantSource,
  target: GrantImage,
  action: string,
  workspace: string,
  now: number,
): string {
  const own = source.model;
  const named = target.model;
  if (named !== undefined && named !== own && named !== source.image.model) {
    const op = { resource: "model" as const, right: "complete", target: named };
    const covered = source.held.some((cap) =>
      cap.uses === undefined && cap.boundTo === undefined && allows(cap, op, now)
    );
    const rule = decide(source.policy, op, { workspace });
    if (!covered || (rule && rule.decision !== "allow")) {
      const why = !covered
        ? `it holds no model:complete capability for "${named}"`
        : `policy "${rule!.pattern}" ${rule!.decision === "deny" ? "denies" : "asks for"} it`;
      throw new SyscallError(
        "EPERM",
        `Cannot ${action}: it names model "${named}", and process ${source.pid} may only call "${own}" (${why})`,
      );
    }
  }
  return target.digest === source.image.digest ? own : named ?? own;
}
