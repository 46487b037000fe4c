/**
 * Capabilities (SPEC section 5): the text form
 * `resource:rights:scope[;uses=N][;ttl=10m][;delegable]`, the host-side
 * record, the check of one operation against one capability, and the
 * attenuation rule that a derived capability must be a subset of its parent.
 *
 * Everything here is a pure function; storage lives in `capability_store.ts`.
 *
 * @module
 */

import { posix } from "node:path";
import { globCovers, matchGlob } from "./glob.ts";

/** The kinds of resource a capability can name. */
export const RESOURCES = [
  "fs",
  "obj",
  "exec",
  "net",
  "model",
  "proc",
  "tool",
  "image",
  "human",
  "event",
  "time",
] as const;

/** One of {@link RESOURCES}. */
export type Resource = typeof RESOURCES[number];

/** What one syscall needs: one right on one target (an absolute path, command name, namespace, URL, image tag...). */
export interface Operation {
  /** The kind of resource touched. */
  resource: Resource;
  /** The single right needed, e.g. `read`. */
  right: string;
  /** The concrete thing touched, matched against a capability's scope. */
  target: string;
}

/** The parsed text form `resource:rights:scope[;uses=N][;ttl=10m][;delegable]`. */
export interface CapabilitySpec {
  /** The kind of resource. */
  resource: Resource;
  /** Rights granted; `"*"` stands for every right. */
  rights: string[];
  /** A glob over targets (see `glob.ts`). */
  scope: string;
  /** How many operations it may authorize; absent means unlimited. */
  uses?: number;
  /** Lifetime from the moment of the grant, in milliseconds. */
  ttlMs?: number;
  /** Whether the holder may derive capabilities from it for others. */
  delegable?: boolean;
}

/** The host-side record (SPEC section 5). */
export interface Capability {
  /** Unique id; not a bearer token. */
  id: string;
  /** The pid that holds it. */
  holder: number;
  /** The kind of resource. */
  resource: Resource;
  /** Rights granted; `"*"` stands for every right. */
  rights: string[];
  /** A glob over targets. */
  scope: string;
  /** Uses left; absent means unlimited. */
  uses?: number;
  /** Epoch milliseconds after which it no longer authorizes anything. */
  expiresAt?: number;
  /** Whether the holder may derive capabilities from it for others. */
  delegable: boolean;
  /** The id of the capability it was derived from. */
  parent?: string;
  /** `"operator"`, `"pid:7"`, `"human:<request id>"`. */
  grantedBy: string;
  /** Epoch milliseconds of the grant. */
  createdAt: number;
  /** Digest of the exact operation and arguments a one-shot human grant is bound to. */
  boundTo?: string;
}

/** A capability or policy pattern that cannot be parsed or resolved. */
export class CapabilityError extends Error {
  /** Creates an error with a one-line message. */
  constructor(message: string) {
    super(message);
    this.name = "CapabilityError";
  }
}

/** The `resource:rights:scope` parts of a text form, before its attributes are read. */
export interface CapabilityParts {
  /** The resource word, not yet checked against {@link RESOURCES}. */
  resource: string;
  /** Rights, validated and deduplicated. */
  rights: string[];
  /** The scope, validated. */
  scope: string;
  /** The `;`-separated attributes after the scope, unparsed. */
  attributes: string[];
}

const RIGHT = /^(?:\*|[a-z_]+)$/;

const UNITS: readonly (readonly [string, number])[] = [
  ["d", 86_400_000],
  ["h", 3_600_000],
  ["m", 60_000],
  ["s", 1_000],
  ["ms", 1],
];

/**
 * Splits a text form into resource, rights, scope and attributes. Only the
 * first two `:` separate parts, so a scope may contain `:` (URLs, ports).
 * Policy patterns share this syntax; `what` names the thing in errors.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { splitCapability } from "./capability.ts";
 * const parts = splitCapability("net:fetch:https://example.com:8443/**;uses=2");
 * assert(parts.scope === "https://example.com:8443/**");
 * assert(parts.attributes[0] === "uses=2");
 * ```
 */
export function splitCapability(
  text: string,
  options: { what?: string } = {},
): CapabilityParts {
  const fail = (why: string): never => {
    throw new CapabilityError(`Cannot parse ${options.what ?? "capability"} "${text}": ${why}`);
  };
  const first = text.indexOf(":");
  const second = first < 0 ? -1 : text.indexOf(":", first + 1);
  if (second < 0) fail("expected resource:rights:scope");
  const [scope, ...attributes] = text.slice(second + 1).split(";");
  const rights: string[] = [];
  for (const right of text.slice(first + 1, second).split(",")) {
    if (!RIGHT.test(right)) {
      fail(
        right === ""
          ? "expected a comma-separated list of rights"
          : `right "${right}" is not "*" or lowercase letters and "_"`,
      );
    }
    if (!rights.includes(right)) rights.push(right);
  }
  if (scope === "") fail("the scope is empty");
  if (scope.includes("\0")) fail("the scope contains a NUL byte");
  if (scope.trim() !== scope) fail("the scope starts or ends with whitespace");
  return { resource: text.slice(0, first), rights, scope, attributes };
}

/** True when `value` is one of {@link RESOURCES}. */
export function isResource(value: string): value is Resource {
  return (RESOURCES as readonly string[]).includes(value);
}

/**
 * Parses the text form `resource:rights:scope[;uses=N][;ttl=10m][;delegable]`.
 * Throws a {@link CapabilityError} naming the text and the problem.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { formatCapability, parseCapability } from "./capability.ts";
 * const spec = parseCapability("fs:read,write:out/**;uses=1;ttl=10m;delegable");
 * assert(spec.resource === "fs" && spec.rights.join() === "read,write");
 * assert(spec.uses === 1 && spec.ttlMs === 600_000 && spec.delegable === true);
 * assert(formatCapability(spec) === "fs:read,write:out/**;uses=1;ttl=10m;delegable");
 * ```
 */
export function parseCapability(text: string): CapabilitySpec {
  const parts = splitCapability(text);
  const fail = (why: string): never => {
    throw new CapabilityError(`Cannot parse capability "${text}": ${why}`);
  };
  if (!isResource(parts.resource)) {
    fail(`unknown resource "${parts.resource}" (expected one of ${RESOURCES.join(", ")})`);
  }
  const spec: CapabilitySpec = {
    resource: parts.resource as Resource,
    rights: parts.rights,
    scope: parts.scope,
  };
  const seen = new Set<string>();
  for (const attribute of parts.attributes) {
    const eq = attribute.indexOf("=");
    const key = eq < 0 ? attribute : attribute.slice(0, eq);
    const value = eq < 0 ? undefined : attribute.slice(eq + 1);
    if (seen.has(key)) fail(`attribute "${key}" is given twice`);
    seen.add(key);
    if (key === "uses" && value !== undefined) {
      const uses = /^[1-9][0-9]*$/.test(value) ? Number(value) : NaN;
      if (!Number.isSafeInteger(uses)) fail(`uses "${value}" is not a positive whole number`);
      spec.uses = uses;
    } else if (key === "ttl" && value !== undefined) {
      const ms = durationOf(value);
      if (ms === undefined) fail(`ttl "${value}" is not a duration like 30s, 10m, 2h or 1d`);
      spec.ttlMs = ms;
    } else if (key === "delegable" && value === undefined) {
      spec.delegable = true;
    } else if (key === "expires") {
      fail(`"expires" is set by the runtime; give a lifetime with ttl=<duration>`);
    } else {
      fail(`unknown attribute "${attribute}" (expected uses=N, ttl=<duration> or delegable)`);
    }
  }
  return spec;
}

function durationOf(text: string): number | undefined {
  const match = /^([1-9][0-9]*)(ms|s|m|h|d)$/.exec(text);
  if (!match) return undefined;
  const unit = UNITS.find(([name]) => name === match[2])!;
  const ms = Number(match[1]) * unit[1];
  return Number.isSafeInteger(ms) ? ms : undefined;
}

/**
 * Parses a duration such as `500ms`, `30s`, `10m`, `2h` or `1d` into
 * milliseconds. The count must be a positive whole number.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseDuration } from "./capability.ts";
 * assert(parseDuration("10m") === 600_000);
 * ```
 */
export function parseDuration(text: string): number {
  const ms = durationOf(text);
  if (ms === undefined) {
    throw new CapabilityError(
      `Cannot parse duration "${text}": expected a positive whole number followed by ms, s, m, h or d`,
    );
  }
  return ms;
}

function formatDuration(ms: number): string {
  const [unit, size] = UNITS.find(([, size]) => ms % size === 0)!;
  return `${ms / size}${unit}`;
}

function isRecord(cap: CapabilitySpec | Capability): cap is Capability {
  return "id" in cap;
}

/**
 * Prints the text form. A spec round-trips with {@link parseCapability}; a
 * record prints its uses left, `delegable`, and its expiry as
 * `;expires=<ISO time>` (a display form: the runtime sets expiries).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { formatCapability } from "./capability.ts";
 * assert(formatCapability({ resource: "exec", rights: ["run"], scope: "git" }) === "exec:run:git");
 * ```
 */
export function formatCapability(cap: CapabilitySpec | Capability): string {
  let text = `${cap.resource}:${cap.rights.join(",")}:${cap.scope}`;
  if (cap.uses !== undefined) text += `;uses=${cap.uses}`;
  if (isRecord(cap)) {
    if (cap.expiresAt !== undefined) text += `;expires=${new Date(cap.expiresAt).toISOString()}`;
  } else if (cap.ttlMs !== undefined) {
    text += `;ttl=${formatDuration(cap.ttlMs)}`;
  }
  if (cap.delegable) text += ";delegable";
  return text;
}

/**
 * Makes relative `fs` scopes absolute by joining them to the workspace
 * root: `out/**` becomes `/ws/out/**`, `**` becomes `/ws/**`, `.` becomes
 * `/ws`. A relative scope that climbs out of the workspace (`../x`) is
 * refused. Absolute scopes and other resources are returned unchanged.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseCapability, resolveScope } from "./capability.ts";
 * const spec = resolveScope(parseCapability("fs:write:out/**"), { workspace: "/ws" });
 * assert(spec.scope === "/ws/out/**");
 * ```
 */
export function resolveScope<T extends CapabilitySpec>(
  spec: T,
  options: { workspace: string },
): T {
  if (spec.resource !== "fs" || spec.scope.startsWith("/")) return spec;
  const root = posix.resolve("/", options.workspace);
  const scope = posix.join(root, spec.scope);
  const inside = root === "/" || scope === root || scope.startsWith(`${root}/`);
  if (!inside) {
    throw new CapabilityError(
      `Cannot resolve capability scope "${spec.scope}": it leaves the workspace "${root}"`,
    );
  }
  return { ...spec, scope };
}

/**
 * True when `cap` authorizes `op` at time `now`: same resource, the right
 * (or `*`) held, the target inside the scope, not expired, uses left.
 * Whether a one-shot grant is bound to this exact call is checked by the
 * broker, which knows the argument digest.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { allows, type Capability } from "./capability.ts";
 * const cap: Capability = {
 *   id: "c1", holder: 1, resource: "fs", rights: ["read"], scope: "/ws/**",
 *   delegable: false, grantedBy: "operator", createdAt: 0,
 * };
 * assert(allows(cap, { resource: "fs", right: "read", target: "/ws/a.txt" }, 1));
 * assert(!allows(cap, { resource: "fs", right: "write", target: "/ws/a.txt" }, 1));
 * ```
 */
export function allows(cap: Capability, op: Operation, now: number): boolean {
  return cap.resource === op.resource &&
    (cap.rights.includes(op.right) || cap.rights.includes("*")) &&
    (cap.expiresAt === undefined || cap.expiresAt > now) &&
    (cap.uses === undefined || cap.uses > 0) &&
    matchGlob(cap.scope, op.target);
}

/**
 * Why `child` is not a subset of `parent` at time `now`, or undefined when
 * it is. Every attribute counts: the same resource, rights the parent
 * holds, a scope inside the parent's, no more uses than the parent has
 * left, an expiry no later than the parent's (a child's `ttlMs` counts from
 * `now` when it has no `expiresAt`), and `delegable` only from a delegable
 * parent; nothing derives from a parent that has expired, is used up, or is
 * bound to one exact operation.
 *
 * This is the one rule of derivation: `CapabilityStore.prepareGrant`
 * applies it to every grant made from a parent (spawn, fork, JIT tool
 * calls, `cap.delegate`, `obj.share`, snapshot forks), and image ceilings
 * are checked with it. Whether a parent may be handed to another process
 * at all (`cap.delegate` needs a delegable parent) is the caller's rule.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { attenuationError, type Capability } from "./capability.ts";
 * const parent: Capability = {
 *   id: "c1", holder: 1, resource: "fs", rights: ["read"], scope: "/ws/**",
 *   delegable: false, grantedBy: "operator", createdAt: 0,
 * };
 * const child = { resource: "fs" as const, rights: ["read"], scope: "/ws/src/**" };
 * assert(attenuationError(child, parent, 1) === undefined);
 * assert(attenuationError({ ...child, rights: ["write"] }, parent, 1) === 'right "write" is not held');
 * assert(attenuationError({ ...child, delegable: true }, parent, 1) === "delegable, but the parent is not");
 * ```
 */
export function attenuationError(
  child: CapabilitySpec & { expiresAt?: number },
  parent: Capability,
  now: number,
): string | undefined {
  if (child.resource !== parent.resource) {
    return `resource "${child.resource}" differs from the parent's "${parent.resource}"`;
  }
  if (parent.expiresAt !== undefined && parent.expiresAt <= now) return "parent has expired";
  if (parent.uses !== undefined && parent.uses <= 0) return "parent has no uses left";
  if (parent.boundTo !== undefined) return "parent is bound to one exact operation";
  for (const right of child.rights) {
    const held = parent.rights.includes("*") || (right !== "*" && parent.rights.includes(right));
    if (!held) return `right "${right}" is not held`;
  }
  if (!globCovers(parent.scope, child.scope)) {
    return `scope "${child.scope}" is wider than "${parent.scope}"`;
  }
  if (parent.uses !== undefined) {
    if (child.uses === undefined) return `unlimited uses exceed the ${parent.uses} left`;
    if (child.uses > parent.uses) return `uses ${child.uses} exceed the ${parent.uses} left`;
  }
  if (parent.expiresAt !== undefined) {
    const expiresAt = child.expiresAt ??
      (child.ttlMs !== undefined ? now + child.ttlMs : undefined);
    if (expiresAt === undefined) {
      return "expiry is later than the parent's: the child never expires";
    }
    if (expiresAt > parent.expiresAt) return "expiry is later than the parent's";
  }
  if (child.delegable && !parent.delegable) return "delegable, but the parent is not";
  return undefined;
}

/** A capability or a spec with an absolute expiry: what attenuation compares. */
export type CapabilityBound = CapabilitySpec & { expiresAt?: number; boundTo?: string };

/**
 * The largest capability inside both `a` and `b` at `now`, or undefined
 * when they share nothing that one capability can express: the same
 * resource, the rights both hold, the narrower scope when one covers the
 * other, the fewer uses, the earlier expiry (a `ttlMs` counts from `now`),
 * and `delegable` only when both are. Nothing comes from an expired,
 * used-up or operation-bound side. The result passes
 * {@link attenuationError} against either side.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { intersectCapabilities } from "./capability.ts";
 * const both = intersectCapabilities(
 *   { resource: "fs", rights: ["read", "write"], scope: "/ws/**", delegable: true },
 *   { resource: "fs", rights: ["read"], scope: "/ws/src/**" },
 *   0,
 * );
 * assert(both?.rights.join() === "read" && both.scope === "/ws/src/**" && !both.delegable);
 * ```
 */
export function intersectCapabilities(
  a: CapabilityBound,
  b: CapabilityBound,
  now: number,
): CapabilityBound | undefined {
  if (a.resource !== b.resource || !_usable(a, now) || !_usable(b, now)) return undefined;
  const rights = a.rights.includes("*")
    ? b.rights
    : b.rights.includes("*")
    ? a.rights
    : a.rights.filter((right) => b.rights.includes(right));
  if (rights.length === 0) return undefined;
  const scope = globCovers(a.scope, b.scope)
    ? b.scope
    : globCovers(b.scope, a.scope)
    ? a.scope
    : undefined;
  if (scope === undefined) return undefined;
  const out: CapabilityBound = { resource: a.resource, rights: [...rights], scope };
  const uses = _least(a.uses, b.uses);
  if (uses !== undefined) out.uses = uses;
  const expiresAt = _least(_expiryOf(a, now), _expiryOf(b, now));
  if (expiresAt !== undefined) out.expiresAt = expiresAt;
  if (a.delegable && b.delegable) out.delegable = true;
  return out;
}

function _usable(cap: CapabilityBound, now: number): boolean {
  const expiresAt = _expiryOf(cap, now);
  return cap.boundTo === undefined && (cap.uses === undefined || cap.uses > 0) &&
    (expiresAt === undefined || expiresAt > now);
}

function _expiryOf(cap: CapabilityBound, now: number): number | undefined {
  return cap.expiresAt ?? (cap.ttlMs !== undefined ? now + cap.ttlMs : undefined);
}

function _least(a: number | undefined, b: number | undefined): number | undefined {
  if (a === undefined) return b;
  return b === undefined ? a : Math.min(a, b);
}
