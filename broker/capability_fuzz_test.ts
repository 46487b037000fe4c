/**
 * Property-based fuzzing of the capability text form and attenuation:
 * format then parse gives the spec back, a capability derived from a
 * parent (anything `attenuationError` accepts) never allows an operation
 * that its parent does not, at any time, and the intersection of two
 * capabilities derives from both.
 *
 * Fixed seed in CI; `LIBOS_FUZZ_RUNS=N` (and `LIBOS_FUZZ_SEED=S`) for a
 * larger or different run.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import {
  allows,
  attenuationError,
  type Capability,
  type CapabilitySpec,
  formatCapability,
  intersectCapabilities,
  parseCapability,
  RESOURCES,
} from "./capability.ts";

const RUNS = Number(Deno.env.get("LIBOS_FUZZ_RUNS") ?? 2000);
const SEED = Number(Deno.env.get("LIBOS_FUZZ_SEED") ?? 20240601);

const RIGHTS = ["read", "write", "delete", "run", "fetch", "spawn", "*"];
const segment = fc.constantFrom("a", "b", "src", "x.ts", "*", "**", "*.ts", "c-d");
const scope = fc.array(segment, { minLength: 1, maxLength: 4 }).map((s) => "/" + s.join("/"));
const target = fc.array(fc.constantFrom("a", "b", "src", "x.ts", "y.ts", "c-d"), {
  minLength: 1,
  maxLength: 5,
}).map((s) => "/" + s.join("/"));
const resource = fc.constantFrom(...RESOURCES.slice(0, 3));

const spec: fc.Arbitrary<CapabilitySpec> = fc.record({
  resource,
  rights: fc.uniqueArray(fc.constantFrom(...RIGHTS), { minLength: 1, maxLength: 3 }),
  scope,
  uses: fc.option(fc.integer({ min: 1, max: 5 }), { nil: undefined }),
  ttlMs: fc.option(fc.constantFrom(500, 30_000, 600_000, 7_200_000), { nil: undefined }),
  delegable: fc.option(fc.constant(true), { nil: undefined }),
}).map((s) => {
  const out: CapabilitySpec = { resource: s.resource, rights: s.rights, scope: s.scope };
  if (s.uses !== undefined) out.uses = s.uses;
  if (s.ttlMs !== undefined) out.ttlMs = s.ttlMs;
  if (s.delegable) out.delegable = true;
  return out;
});

/** A child spec made from `p` the way a delegator would narrow it (not always validly). */
function narrower(p: CapabilitySpec): fc.Arbitrary<CapabilitySpec> {
  return fc.record({
    rights: fc.subarray(p.rights.includes("*") ? RIGHTS : p.rights, { minLength: 1 }),
    suffix: fc.array(segment, { maxLength: 2 }),
    replace: fc.boolean(),
    uses: fc.option(fc.integer({ min: 1, max: 6 }), { nil: undefined }),
    ttlMs: fc.option(fc.constantFrom(100, 500, 30_000, 9_000_000), { nil: undefined }),
  }).map((c) => {
    let scope = c.suffix.length ? `${p.scope}/${c.suffix.join("/")}` : p.scope;
    if (c.replace) scope = scope.replace("**", "*");
    const out: CapabilitySpec = { resource: p.resource, rights: c.rights, scope };
    if (c.uses !== undefined) out.uses = c.uses;
    if (c.ttlMs !== undefined) out.ttlMs = c.ttlMs;
    return out;
  });
}

const NOW = 1_000_000;

function record(s: CapabilitySpec, id: string, now: number): Capability {
  return {
    id,
    holder: 1,
    resource: s.resource,
    rights: s.rights,
    scope: s.scope,
    ...(s.uses === undefined ? {} : { uses: s.uses }),
    ...(s.ttlMs === undefined ? {} : { expiresAt: now + s.ttlMs }),
    delegable: s.delegable ?? false,
    grantedBy: "operator",
    createdAt: now,
  };
}

Deno.test("fuzz: formatCapability then parseCapability gives the spec back", () => {
  fc.assert(
    fc.property(spec, (s) => {
      const text = formatCapability(s);
      assert.deepEqual(parseCapability(text), s);
      assert.equal(formatCapability(parseCapability(text)), text);
    }),
    { numRuns: RUNS, seed: SEED },
  );
});

Deno.test("fuzz: a derived capability never allows what its parent does not", () => {
  let derived = 0;
  fc.assert(
    fc.property(
      spec.chain((p) => fc.tuple(fc.constant(p), fc.oneof(spec, narrower(p)))),
      fc.array(
        fc.record({
          right: fc.constantFrom(...RIGHTS.slice(0, -1)),
          target,
          later: fc.integer({ min: 0, max: 8_000_000 }),
        }),
        { minLength: 1, maxLength: 12 },
      ),
      ([parentSpec, childSpec], ops) => {
        const parent = record(parentSpec, "p", NOW);
        const sameResource = { ...childSpec, resource: parentSpec.resource };
        if (attenuationError(sameResource, parent, NOW) !== undefined) return;
        derived++;
        const child = { ...record(sameResource, "c", NOW), parent: "p" };
        for (const { right, target, later } of ops) {
          const op = { resource: parentSpec.resource, right, target };
          if (allows(child, op, NOW + later)) {
            assert.ok(
              allows(parent, op, NOW + later),
              `${formatCapability(child)} allows ${right} ${target} that ${
                formatCapability(parent)
              } does not`,
            );
          }
        }
      },
    ),
    { numRuns: RUNS, seed: SEED },
  );
  assert.ok(derived > RUNS / 50, `only ${derived} derivable pairs were generated`);
});

Deno.test("fuzz: the intersection of two capabilities is a subset of each, in every attribute", () => {
  let met = 0;
  fc.assert(
    fc.property(
      spec.chain((p) => fc.tuple(fc.constant(p), fc.oneof(spec, narrower(p)))),
      fc.boolean(),
      ([aSpec, bSpec], delegable) => {
        const a = record(aSpec, "a", NOW);
        const b = record({ ...bSpec, resource: aSpec.resource, delegable }, "b", NOW);
        const both = intersectCapabilities(aSpec, b, NOW);
        if (!both) return;
        met++;
        assert.equal(attenuationError(both, a, NOW), undefined, formatCapability(both));
        assert.equal(attenuationError(both, b, NOW), undefined, formatCapability(both));
      },
    ),
    { numRuns: RUNS, seed: SEED },
  );
  assert.ok(met > RUNS / 50, `only ${met} intersecting pairs were generated`);
});
