import assert from "node:assert/strict";
import type { Capability } from "../broker/capability.ts";
import type { SyscallError } from "../broker/errors.ts";
import { parsePolicy } from "../broker/policy.ts";
import {
  deriveGrants,
  type GrantImage,
  type GrantSource,
  imageCeiling,
  isWithinCeiling,
  parseGrant,
} from "./grants.ts";

const NOW = 1_000_000;

function image(capabilities: string[], extra: Partial<GrantImage> = {}): GrantImage {
  return { tag: "demo@1.0.0", digest: "d1", capabilities, ...extra };
}

let nextId = 0;
function cap(text: string, extra: Partial<Capability> = {}): Capability {
  const spec = parseGrant(text, "/ws");
  return {
    id: `c${++nextId}`,
    holder: 1,
    ...spec,
    delegable: spec.delegable ?? false,
    grantedBy: "operator",
    createdAt: 0,
    ...extra,
  };
}

function source(held: Capability[], extra: Partial<GrantSource> = {}): GrantSource {
  return {
    pid: 1,
    image: image(["fs:read,write:**"]),
    model: "scripted/default",
    held,
    policy: [],
    ...extra,
  };
}

/** Asserts that `fn` throws a SyscallError with `code` and exactly `message`. */
function assertRefused(fn: () => unknown, code: string, message: string): void {
  assert.throws(fn, (error: SyscallError) => {
    assert.equal(error.name, "SyscallError");
    assert.equal(error.code, code);
    assert.equal(error.message, message);
    return true;
  });
}

Deno.test("an operator's spawn gets the image's ceiling, resolved against the workspace", () => {
  const { grants, revoke, model } = deriveGrants({
    kind: "spawn",
    image: image(["fs:read:src/**", "fs:write:/tmp/out/**", "exec:run:git", "fs:read:."]),
    workspace: "/ws",
    model: "openai/gpt-4o-mini",
    now: NOW,
  });
  assert.deepEqual(grants.map((g) => [g.spec.scope, g.parent]), [
    ["/ws/src/**", undefined],
    ["/tmp/out/**", undefined],
    ["git", undefined],
    ["/ws", undefined],
  ]);
  assert.deepEqual(revoke, []);
  assert.equal(model, "openai/gpt-4o-mini");
});

Deno.test("a ~ scope is a path under the workspace, not the home directory", () => {
  const { grants } = deriveGrants({
    kind: "spawn",
    image: image(["fs:read:**"]),
    workspace: "/ws",
    requested: ["fs:read:~/notes/**"],
    model: "m",
    now: NOW,
  });
  assert.equal(grants[0].spec.scope, "/ws/~/notes/**");
});

Deno.test("an operator may not ask for more than the image's ceiling, in any attribute", () => {
  const ceiling = image(["fs:read:src/**;ttl=10m", "exec:run:git;uses=2"]);
  const refused = [
    [
      "fs:read:**;ttl=1m",
      'Cannot grant "fs:read:/ws/**;ttl=1m": beyond the ceiling of image "demo@1.0.0"',
    ],
    [
      "fs:write:src/a.ts;ttl=1m",
      'Cannot grant "fs:write:/ws/src/a.ts;ttl=1m": beyond the ceiling of image "demo@1.0.0"',
    ],
    [
      "fs:read:src/a.ts",
      'Cannot grant "fs:read:/ws/src/a.ts": beyond the ceiling of image "demo@1.0.0"',
    ],
    [
      "fs:read:src/a.ts;ttl=11m",
      'Cannot grant "fs:read:/ws/src/a.ts;ttl=11m": beyond the ceiling of image "demo@1.0.0"',
    ],
    [
      "fs:read:src/a.ts;ttl=1m;delegable",
      'Cannot grant "fs:read:/ws/src/a.ts;ttl=1m;delegable": beyond the ceiling of image "demo@1.0.0"',
    ],
    ["exec:run:git", 'Cannot grant "exec:run:git": beyond the ceiling of image "demo@1.0.0"'],
    [
      "exec:run:git;uses=3",
      'Cannot grant "exec:run:git;uses=3": beyond the ceiling of image "demo@1.0.0"',
    ],
  ];
  for (const [text, message] of refused) {
    assertRefused(
      () =>
        deriveGrants({
          kind: "spawn",
          image: ceiling,
          workspace: "/ws",
          requested: [text],
          model: "m",
          now: NOW,
        }),
      "EPERM",
      message,
    );
  }
  const { grants } = deriveGrants({
    kind: "spawn",
    image: ceiling,
    workspace: "/ws",
    requested: ["fs:read:src/a.ts;ttl=10m", "exec:run:git;uses=1"],
    model: "m",
    now: NOW,
  });
  assert.deepEqual(grants.map((g) => g.spec.scope), ["/ws/src/a.ts", "git"]);
});

Deno.test("a scope that leaves the workspace or does not parse is EINVAL", () => {
  for (
    const [capabilities, requested, message] of [
      [
        ["fs:read:**"],
        ["fs:read:../etc/**"],
        'Cannot resolve capability scope "../etc/**": it leaves the workspace "/ws"',
      ],
      [
        ["fs:read:../**"],
        undefined,
        'Cannot resolve capability scope "../**": it leaves the workspace "/ws"',
      ],
      [
        ["fs:read:**"],
        ["fs:read"],
        'Cannot parse capability "fs:read": expected resource:rights:scope',
      ],
    ] as const
  ) {
    assertRefused(
      () =>
        deriveGrants({
          kind: "spawn",
          image: image([...capabilities]),
          workspace: "/ws",
          requested,
          model: "m",
          now: NOW,
        }),
      "EINVAL",
      message,
    );
  }
});

Deno.test("a child gets by default only the ceiling entries its parent covers", () => {
  const readAll = cap("fs:read:**");
  const oneShot = cap("exec:run:git;uses=1");
  const { grants } = deriveGrants({
    kind: "child",
    image: image(["fs:read:src/**", "fs:read,write:out/**", "exec:run:git;uses=1"], {
      digest: "d2",
    }),
    workspace: "/ws",
    source: source([oneShot, readAll]),
    now: NOW,
  });
  // out/** needs write, which the parent lacks; git only from a one-shot grant.
  assert.deepEqual(grants.map((g) => [g.spec.scope, g.parent?.id]), [["/ws/src/**", readAll.id]]);
});

Deno.test("a child may ask only for what both its ceiling and its parent cover", () => {
  const child = image(["fs:read,write:**"], { tag: "child@1.0.0", digest: "d2" });
  const derive = (requested: string[], held: Capability[]) =>
    deriveGrants({
      kind: "child",
      image: child,
      workspace: "/ws",
      requested,
      source: source(held),
      now: NOW,
    });
  assertRefused(
    () => derive(["fs:delete:a"], [cap("fs:*:**")]),
    "EPERM",
    'Cannot grant "fs:delete:/ws/a": beyond the ceiling of image "child@1.0.0"',
  );
  assertRefused(
    () => derive(["fs:write:a"], [cap("fs:read:**")]),
    "EPERM",
    'Cannot grant "fs:write:a" to a child: the parent holds no capability that covers it',
  );
  // Nothing derives from a one-shot grant or from an expired one.
  assertRefused(
    () => derive(["fs:read:a;uses=1"], [cap("fs:read:**;uses=1")]),
    "EPERM",
    'Cannot grant "fs:read:a;uses=1" to a child: the parent holds no capability that covers it',
  );
  assertRefused(
    () => derive(["fs:read:a"], [cap("fs:read:**", { expiresAt: NOW })]),
    "EPERM",
    'Cannot grant "fs:read:a" to a child: the parent holds no capability that covers it',
  );
  const wide = cap("fs:read,write:**", { expiresAt: NOW + 60_000 });
  const { grants } = derive(["fs:read:a;ttl=1m"], [wide]);
  assert.deepEqual(grants, [{ spec: parseGrant("fs:read:a;ttl=1m", "/ws"), parent: wide }]);
  assertRefused(
    () => derive(["fs:read:a"], [wide]),
    "EPERM",
    'Cannot grant "fs:read:a" to a child: the parent holds no capability that covers it',
  );
});

Deno.test("a fork copies the parent's lasting capabilities, with their expiry and delegability", () => {
  const lasting = cap("fs:read:**;delegable", { expiresAt: NOW + 5_000 });
  const oneShot = cap("exec:run:git;uses=1");
  const own = cap("obj:*:proc/1/**", { grantedBy: "kernel" });
  const { grants, model } = deriveGrants({
    kind: "fork",
    workspace: "/ws",
    source: source([lasting, oneShot, own]),
    now: NOW,
  });
  assert.deepEqual(grants, [{
    spec: { resource: "fs", rights: ["read"], scope: "/ws/**", delegable: true },
    parent: lasting,
    expiresAt: NOW + 5_000,
  }]);
  assert.equal(model, "scripted/default");
});

Deno.test("a fork may ask only for what the parent's own lasting grants cover", () => {
  const own = cap("obj:*:proc/1/**", { grantedBy: "kernel" });
  const read = cap("fs:read:**");
  const derive = (requested: string[]) =>
    deriveGrants({
      kind: "fork",
      workspace: "/ws",
      requested,
      source: source([own, read]),
      now: NOW,
    });
  assert.deepEqual(derive(["fs:read:src/**"]).grants.map((g) => g.parent), [read]);
  for (const text of ["fs:write:a", "obj:read:proc/1/x"]) {
    assertRefused(
      () => derive([text]),
      "EPERM",
      `Cannot fork with "${text}": the parent holds no capability that covers it`,
    );
  }
});

Deno.test("an exec loses what the new image's ceiling does not allow, delegability included", () => {
  const read = cap("fs:read:src/**");
  const write = cap("fs:write:**");
  const delegable = cap("net:fetch:https://a.test/**;delegable");
  const own = cap("obj:*:proc/1/**", { grantedBy: "kernel" });
  const { grants, revoke, model } = deriveGrants({
    kind: "exec",
    image: image(["fs:read:**", "net:fetch:https://a.test/**"], { digest: "d2" }),
    workspace: "/ws",
    source: source([read, write, delegable, own]),
    now: NOW,
  });
  assert.deepEqual(grants, []);
  assert.deepEqual(revoke, [write, delegable]);
  assert.equal(model, "scripted/default");
});

Deno.test("another image's model needs a lasting model capability its policy allows", () => {
  const target = image([], { tag: "gpt@1.0.0", digest: "d2", model: "openai/gpt-4o" });
  const derive = (held: Capability[], policy = source([]).policy) =>
    deriveGrants({
      kind: "child",
      image: target,
      workspace: "/ws",
      source: source(held, { policy }),
      now: NOW,
    });
  assertRefused(
    () => derive([cap("model:complete:openai/*;uses=1")]),
    "EPERM",
    'Cannot spawn "gpt@1.0.0": it names model "openai/gpt-4o", and process 1 may only call ' +
      '"scripted/default" (it holds no model:complete capability for "openai/gpt-4o")',
  );
  const modelCap = cap("model:complete:openai/*");
  assertRefused(
    () => derive([modelCap], parsePolicy({ "model:complete:openai/gpt-4o": "ask" }, "image")),
    "EPERM",
    'Cannot spawn "gpt@1.0.0": it names model "openai/gpt-4o", and process 1 may only call ' +
      '"scripted/default" (policy "model:complete:openai/gpt-4o" asks for it)',
  );
  assert.equal(derive([modelCap]).model, "openai/gpt-4o");
  // An exec into it is refused the same way, naming the exec.
  assertRefused(
    () =>
      deriveGrants({ kind: "exec", image: target, workspace: "/ws", source: source([]), now: NOW }),
    "EPERM",
    'Cannot exec "gpt@1.0.0": it names model "openai/gpt-4o", and process 1 may only call ' +
      '"scripted/default" (it holds no model:complete capability for "openai/gpt-4o")',
  );
});

Deno.test("a process keeps its model for an image that names none or the one its own names", () => {
  const parent = source([], {
    image: image([], { digest: "d1", model: "openai/gpt-4o" }),
    model: "openai/gpt-4o-mini",
  });
  const child = (extra: Partial<GrantImage>) =>
    deriveGrants({
      kind: "child",
      image: image([], { digest: "d2", ...extra }),
      workspace: "/ws",
      source: parent,
      now: NOW,
    }).model;
  assert.equal(child({}), "openai/gpt-4o-mini");
  // The model its own image names needs no capability.
  assert.equal(child({ model: "openai/gpt-4o" }), "openai/gpt-4o");
  // The same image keeps the process's model, whatever the image names.
  assert.equal(child({ digest: "d1", model: "openai/gpt-4o" }), "openai/gpt-4o-mini");
});

Deno.test("isWithinCeiling counts a ceiling's ttl from now", () => {
  const ceiling = imageCeiling(["fs:read:**;ttl=1m"], "/ws");
  const spec = parseGrant("fs:read:a", "/ws");
  assert.equal(isWithinCeiling(spec, ceiling, NOW), false);
  assert.equal(isWithinCeiling({ ...spec, expiresAt: NOW + 60_000 }, ceiling, NOW), true);
  assert.equal(isWithinCeiling({ ...spec, expiresAt: NOW + 60_001 }, ceiling, NOW), false);
});
