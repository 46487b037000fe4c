/**
 * Policy (SPEC section 5): `pattern → allow | deny | ask` rules over the
 * capability text form, from the image, the operator and the spawner. For
 * one operation the most specific matching rule wins; at equal specificity
 * `deny` beats `ask` beats `allow`.
 *
 * Rules sit in layers. The image and operator rules of a process an
 * operator spawned are layer 0; every spawn, fork or exec keeps the layers
 * of the process it comes from and stacks the new image's rules (and the
 * spawner's) on top as new layers ({@link stackPolicy}). Specificity
 * decides within a layer only; across layers the strictest decision wins,
 * so a later layer can move a decision toward `deny` (`allow` < `ask` <
 * `deny`) but never back toward `allow`.
 *
 * A pattern is `resource:rights:scope` where `resource` may be `*` and
 * `rights` may be `*`. A relative `fs` scope is read against the workspace
 * root, so `fs:write:out/**` covers `/ws/out/a` and `fs:delete:**` every path.
 *
 * The command `*` of `exec:run` (a command analysis could not bound: it may
 * run any program) is matched by every `deny` and `ask` rule on `exec`, so
 * `exec:run:curl=deny` refuses it even where `exec:run:*` is granted, and
 * the strictest matching rule decides it; an `allow` rule matches it only
 * when its scope matches `*`.
 *
 * @module
 */

import { posix } from "node:path";
import {
  CapabilityError,
  isResource,
  type Operation,
  type Resource,
  splitCapability,
} from "./capability.ts";
import { ANY_COMMAND } from "./command_analysis.ts";
import { globSpecificity, matchGlob } from "./glob.ts";

/** What a rule says about the operations it matches. */
export type Decision = "allow" | "deny" | "ask";

const DECISIONS: readonly Decision[] = ["allow", "ask", "deny"];

/** One parsed policy rule. */
export interface PolicyRule {
  /** The pattern as written. */
  pattern: string;
  /** The resource it applies to, or `"*"` for every resource. */
  resource: Resource | "*";
  /** The rights it applies to; `["*"]` means any right. */
  rights: string[];
  /** A glob over targets; relative `fs` scopes are read against the workspace. */
  scope: string;
  /** What it decides. */
  decision: Decision;
  /** Where it came from: `"image"`, `"operator"`, `"pid:7"`, a file name. */
  source: string;
  /** Its layer (default 0): a rule never loosens what a lower layer decides. */
  layer?: number;
}

/**
 * Parses one rule. Throws a {@link CapabilityError} naming the pattern and
 * the problem.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parsePolicyRule } from "./policy.ts";
 * const rule = parsePolicyRule("exec:run:*", "ask", "image");
 * assert(rule.resource === "exec" && rule.decision === "ask");
 * ```
 */
export function parsePolicyRule(
  pattern: string,
  decision: string,
  source: string,
): PolicyRule {
  const parts = splitCapability(pattern, { what: "policy rule" });
  const fail = (why: string): never => {
    throw new CapabilityError(`Cannot parse policy rule "${pattern}": ${why}`);
  };
  if (parts.resource !== "*" && !isResource(parts.resource)) {
    fail(`unknown resource "${parts.resource}" (expected "*" or a resource name)`);
  }
  if (parts.attributes.length > 0) fail("policy patterns take no ;attributes");
  if (!(DECISIONS as readonly string[]).includes(decision)) {
    fail(`decision "${decision}" is not allow, deny or ask`);
  }
  return {
    pattern,
    resource: parts.resource as Resource | "*",
    rights: parts.rights.includes("*") ? ["*"] : parts.rights,
    scope: parts.scope,
    decision: decision as Decision,
    source,
  };
}

/**
 * Parses a policy object such as an image's `policy` member.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parsePolicy } from "./policy.ts";
 * const rules = parsePolicy({ "exec:run:*": "ask", "fs:delete:**": "deny" }, "image");
 * assert(rules.length === 2 && rules[1].decision === "deny");
 * ```
 */
export function parsePolicy(
  rules: Readonly<Record<string, string>> | undefined,
  source: string,
): PolicyRule[] {
  return Object.entries(rules ?? {}).map(([pattern, decision]) =>
    parsePolicyRule(pattern, decision, source)
  );
}

/**
 * Parses the CLI form `PATTERN=DECISION`, split on the last `=` (a URL
 * scope may contain `=`).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parsePolicyAssignment } from "./policy.ts";
 * const rule = parsePolicyAssignment("net:fetch:https://x.test/?a=b=deny", "operator");
 * assert(rule.scope === "https://x.test/?a=b" && rule.decision === "deny");
 * ```
 */
export function parsePolicyAssignment(text: string, source: string): PolicyRule {
  const eq = text.lastIndexOf("=");
  if (eq < 0) {
    throw new CapabilityError(
      `Cannot parse policy "${text}": expected PATTERN=DECISION, e.g. "exec:run:*=ask"`,
    );
  }
  return parsePolicyRule(text.slice(0, eq), text.slice(eq + 1), source);
}

function matches(rule: PolicyRule, op: Operation, workspace: string | undefined): boolean {
  if (rule.resource !== "*" && rule.resource !== op.resource) return false;
  if (rule.rights[0] !== "*" && !rule.rights.includes(op.right)) return false;
  if (matchGlob(rule.scope, op.target)) return true;
  // A command that may run any program may run the ones a rule refuses or asks about.
  if (op.resource === "exec" && op.target === ANY_COMMAND && rule.decision !== "allow") return true;
  if (op.resource !== "fs" || workspace === undefined) return false;
  if (rule.scope.startsWith("/") || !op.target.startsWith("/")) return false;
  const relative = posix.relative(posix.resolve("/", workspace), op.target) || ".";
  const inside = relative !== ".." && !relative.startsWith("../") && !relative.startsWith("/");
  return inside && matchGlob(rule.scope, relative);
}

/** Orders rules: positive when `a` beats `b`. */
function compare(a: PolicyRule, b: PolicyRule): number {
  return Number(a.resource !== "*") - Number(b.resource !== "*") ||
    Number(a.rights[0] !== "*") - Number(b.rights[0] !== "*") ||
    globSpecificity(a.scope) - globSpecificity(b.scope) ||
    DECISIONS.indexOf(a.decision) - DECISIONS.indexOf(b.decision);
}

/** Orders rules for the command `*`: the stricter decision first, then as {@link compare}. */
function compareStrictest(a: PolicyRule, b: PolicyRule): number {
  return DECISIONS.indexOf(a.decision) - DECISIONS.indexOf(b.decision) || compare(a, b);
}

/**
 * The most specific of `rules` that matches `op`, with `deny` over `ask`
 * over `allow` at equal specificity and the earlier rule at a full tie.
 */
function mostSpecific(
  rules: readonly PolicyRule[],
  op: Operation,
  workspace: string | undefined,
): PolicyRule | undefined {
  const order = op.resource === "exec" && op.target === ANY_COMMAND ? compareStrictest : compare;
  let best: PolicyRule | undefined;
  for (const rule of rules) {
    if (!matches(rule, op, workspace)) continue;
    if (!best || order(rule, best) > 0) best = rule;
  }
  return best;
}

/**
 * The rule that decides `op`. Within each layer the most specific matching
 * rule (a named resource, then named rights, then more literal scope
 * characters), with `deny` over `ask` over `allow` at equal specificity and
 * the earlier rule at a full tie; across layers the strictest of those
 * (`deny` over `ask` over `allow`), the lowest layer at a tie. For the
 * command `*` of `exec:run` the strictest decision wins whatever the
 * specificity: any program it may run could be the one a rule refuses.
 * Undefined when no rule matches.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { decide, parsePolicy, stackPolicy } from "./policy.ts";
 * const rules = parsePolicy({ "fs:delete:**": "deny", "fs:delete:tmp/**": "allow" }, "operator");
 * const op = (target: string) => ({ resource: "fs" as const, right: "delete", target });
 * assert(decide(rules, op("/ws/src/a.ts"), { workspace: "/ws" })?.decision === "deny");
 * assert(decide(rules, op("/ws/tmp/a.ts"), { workspace: "/ws" })?.decision === "allow");
 * // A layer stacked on top cannot loosen: its more specific allow loses to the deny below.
 * const child = stackPolicy(
 *   parsePolicy({ "fs:delete:**": "deny" }, "operator"),
 *   parsePolicy({ "fs:delete:tmp/**": "allow" }, "image"),
 * );
 * assert(decide(child, op("/ws/tmp/a.ts"), { workspace: "/ws" })?.decision === "deny");
 * ```
 */
export function decide(
  rules: readonly PolicyRule[],
  op: Operation,
  options: { workspace?: string } = {},
): PolicyRule | undefined {
  const layers = new Map<number, PolicyRule[]>();
  for (const rule of rules) {
    const layer = rule.layer ?? 0;
    const list = layers.get(layer);
    if (list) list.push(rule);
    else layers.set(layer, [rule]);
  }
  let strictest: PolicyRule | undefined;
  for (const layer of [...layers.keys()].sort((a, b) => a - b)) {
    const rule = mostSpecific(layers.get(layer)!, op, options.workspace);
    if (!rule) continue;
    if (!strictest || DECISIONS.indexOf(rule.decision) > DECISIONS.indexOf(strictest.decision)) {
      strictest = rule;
    }
  }
  return strictest;
}

/**
 * The policy of a process made from another: every rule of `base` in its
 * own layer, then each group of `added` as a new layer above them (empty
 * groups add nothing). Whatever the added rules say, {@link decide} never
 * answers more loosely for the result than for `base`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parsePolicy, stackPolicy } from "./policy.ts";
 * const stacked = stackPolicy(
 *   parsePolicy({ "fs:write:**": "deny" }, "operator"),
 *   parsePolicy({ "fs:write:out/**": "allow" }, "image"),
 * );
 * assert(stacked[0].layer === undefined && stacked[1].layer === 1);
 * ```
 */
export function stackPolicy(
  base: readonly PolicyRule[],
  ...added: readonly (readonly PolicyRule[])[]
): PolicyRule[] {
  let top = Math.max(0, ...base.map((rule) => rule.layer ?? 0));
  const out = [...base];
  for (const group of added) {
    if (group.length === 0) continue;
    top++;
    for (const rule of group) out.push({ ...rule, layer: top });
  }
  return out;
}
