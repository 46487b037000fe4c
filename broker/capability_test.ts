import assert from "node:assert/strict";
import {
  allows,
  attenuationError,
  type Capability,
  CapabilityError,
  type CapabilitySpec,
  formatCapability,
  intersectCapabilities,
  type Operation,
  parseCapability,
  parseDuration,
  resolveScope,
  splitCapability,
} from "./capability.ts";

const NOW = 1_700_000_000_000;

function record(overrides: Partial<Capability> = {}): Capability {
  return {
    id: "cap-1",
    holder: 1,
    resource: "fs",
    rights: ["read", "write"],
    scope: "/ws/**",
    delegable: true,
    grantedBy: "operator",
    createdAt: NOW - 1_000,
    ...overrides,
  };
}

function fsOp(right: string, target: string): Operation {
  return { resource: "fs", right, target };
}

Deno.test("parseCapability: reads resource, rights and scope", () => {
  assert.deepEqual(parseCapability("fs:read,write:/srv/repo/**"), {
    resource: "fs",
    rights: ["read", "write"],
    scope: "/srv/repo/**",
  });
  assert.deepEqual(parseCapability("proc:spawn:*").rights, ["spawn"]);
  assert.deepEqual(parseCapability("tool:*:*").rights, ["*"]);
  assert.deepEqual(parseCapability("fs:write,read,write:x").rights, ["write", "read"]);
  assert.equal(parseCapability("model:complete:openai/*").scope, "openai/*");
});

Deno.test("parseCapability: splits only on the first two colons, so URL scopes keep ports", () => {
  const spec = parseCapability("net:fetch:https://api.example.com:8443/v1/**;uses=3");
  assert.equal(spec.resource, "net");
  assert.equal(spec.scope, "https://api.example.com:8443/v1/**");
  assert.equal(spec.uses, 3);
  assert.equal(parseCapability("obj:read:ns:with:colons").scope, "ns:with:colons");
});

Deno.test("parseCapability: reads uses, ttl and delegable", () => {
  assert.deepEqual(parseCapability("fs:read:secrets/token.txt;uses=1;ttl=10m;delegable"), {
    resource: "fs",
    rights: ["read"],
    scope: "secrets/token.txt",
    uses: 1,
    ttlMs: 600_000,
    delegable: true,
  });
  assert.deepEqual(parseCapability("exec:run:git;delegable;ttl=2h"), {
    resource: "exec",
    rights: ["run"],
    scope: "git",
    ttlMs: 7_200_000,
    delegable: true,
  });
});

Deno.test("parseCapability: refuses malformed text with a message naming text and problem", () => {
  const cases: [string, string][] = [
    ["fs:read", "expected resource:rights:scope"],
    ["fs", "expected resource:rights:scope"],
    ["disk:read:/x", 'unknown resource "disk"'],
    [":read:/x", 'unknown resource ""'],
    ["fs::/x", "expected a comma-separated list of rights"],
    ["fs:read,,write:/x", "expected a comma-separated list of rights"],
    ["fs:Read:/x", 'right "Read"'],
    ["fs:re*d:/x", 'right "re*d"'],
    ["fs:read write:/x", 'right "read write"'],
    ["fs:read:", "the scope is empty"],
    ["fs:read:;uses=1", "the scope is empty"],
    ["fs:read: /x", "whitespace"],
    ["fs:read:/x ", "whitespace"],
    ["fs:read:/x\0y", "NUL"],
    ["fs:read:/x;uses=0", 'uses "0"'],
    ["fs:read:/x;uses=-1", 'uses "-1"'],
    ["fs:read:/x;uses=1.5", 'uses "1.5"'],
    ["fs:read:/x;uses=99999999999999999999", "uses"],
    ["fs:read:/x;uses", 'unknown attribute "uses"'],
    ["fs:read:/x;ttl=10", 'ttl "10"'],
    ["fs:read:/x;ttl=10w", 'ttl "10w"'],
    ["fs:read:/x;ttl=0s", 'ttl "0s"'],
    ["fs:read:/x;delegable=yes", 'unknown attribute "delegable=yes"'],
    ["fs:read:/x;owner=me", 'unknown attribute "owner=me"'],
    ["fs:read:/x;", 'unknown attribute ""'],
    ["fs:read:/x;uses=1;uses=2", 'attribute "uses" is given twice'],
    ["fs:read:/x;expires=2030-01-01T00:00:00.000Z", "ttl=<duration>"],
  ];
  for (const [text, fragment] of cases) {
    assert.throws(
      () => parseCapability(text),
      (error: unknown) => {
        assert.ok(error instanceof CapabilityError, text);
        assert.ok(error.message.startsWith(`Cannot parse capability "${text}": `), error.message);
        assert.ok(error.message.includes(fragment), `${text}: ${error.message}`);
        return true;
      },
    );
  }
  assert.throws(
    () => parseCapability("fs:read"),
    { message: 'Cannot parse capability "fs:read": expected resource:rights:scope' },
  );
});

Deno.test("splitCapability: names the kind of text in its errors", () => {
  assert.throws(
    () => splitCapability("exec:run", { what: "policy rule" }),
    { message: 'Cannot parse policy rule "exec:run": expected resource:rights:scope' },
  );
  assert.deepEqual(splitCapability("*:*:**;a;b").attributes, ["a", "b"]);
});

Deno.test("parseDuration: reads every unit and refuses the rest", () => {
  assert.equal(parseDuration("500ms"), 500);
  assert.equal(parseDuration("30s"), 30_000);
  assert.equal(parseDuration("10m"), 600_000);
  assert.equal(parseDuration("2h"), 7_200_000);
  assert.equal(parseDuration("1d"), 86_400_000);
  for (
    const bad of [
      "",
      "10",
      "m",
      "0m",
      "-1m",
      "1.5h",
      "1 h",
      "1H",
      "01m",
      "1w",
      "9".repeat(20) + "d",
    ]
  ) {
    assert.throws(() => parseDuration(bad), CapabilityError, bad);
  }
  assert.throws(() => parseDuration("1w"), { message: /^Cannot parse duration "1w": / });
});

Deno.test("formatCapability: round-trips with parseCapability", () => {
  const texts = [
    "fs:read:/srv/repo/**",
    "fs:read,write:out/**",
    "net:fetch:https://api.example.com:8443/**;uses=2",
    "fs:read:secrets/token.txt;uses=1;ttl=10m;delegable",
    "exec:run:git;ttl=500ms",
    "tool:*:*;delegable",
  ];
  for (const text of texts) {
    assert.equal(formatCapability(parseCapability(text)), text);
  }
  const specs: CapabilitySpec[] = [
    { resource: "obj", rights: ["read"], scope: "shared/notes", ttlMs: 90_000 },
    { resource: "time", rights: ["sleep"], scope: "*", ttlMs: 5_400_000, uses: 4 },
    { resource: "human", rights: ["ask"], scope: "*", ttlMs: 1_500 },
    { resource: "event", rights: ["emit", "wait"], scope: "build/*", ttlMs: 172_800_000 },
  ];
  for (const spec of specs) assert.deepEqual(parseCapability(formatCapability(spec)), spec);
  assert.equal(formatCapability(specs[0]), "obj:read:shared/notes;ttl=90s");
  assert.equal(formatCapability(specs[1]), "time:sleep:*;uses=4;ttl=90m");
  assert.equal(formatCapability(specs[3]), "event:emit,wait:build/*;ttl=2d");
});

Deno.test("formatCapability: prints a record's uses left, expiry and delegability", () => {
  const expiresAt = Date.UTC(2030, 0, 2, 3, 4, 5);
  assert.equal(
    formatCapability(record({ uses: 1, expiresAt })),
    "fs:read,write:/ws/**;uses=1;expires=2030-01-02T03:04:05.000Z;delegable",
  );
  assert.equal(formatCapability(record({ delegable: false })), "fs:read,write:/ws/**");
});

Deno.test("resolveScope: joins relative fs scopes to the workspace", () => {
  const resolve = (text: string, workspace = "/ws"): string =>
    resolveScope(parseCapability(text), { workspace }).scope;
  assert.equal(resolve("fs:write:out/**"), "/ws/out/**");
  assert.equal(resolve("fs:read:**"), "/ws/**");
  assert.equal(resolve("fs:read:."), "/ws");
  assert.equal(resolve("fs:read:./src/*.ts"), "/ws/src/*.ts");
  assert.equal(resolve("fs:read:out/../src/**"), "/ws/src/**");
  assert.equal(resolve("fs:read:out/**", "/ws/"), "/ws/out/**");
  assert.equal(resolve("fs:read:/etc/hosts"), "/etc/hosts");
  assert.equal(resolve("obj:read:shared/notes"), "shared/notes");
  assert.equal(resolve("exec:run:git"), "git");
  const spec = resolveScope(parseCapability("fs:read:a;uses=2;ttl=1m;delegable"), {
    workspace: "/ws",
  });
  assert.deepEqual(spec, {
    resource: "fs",
    rights: ["read"],
    scope: "/ws/a",
    uses: 2,
    ttlMs: 60_000,
    delegable: true,
  });
});

Deno.test("resolveScope: refuses relative scopes that climb out of the workspace", () => {
  for (const scope of ["..", "../x", "../**", "out/../../etc/**", "./../ws2/**"]) {
    assert.throws(
      () => resolveScope({ resource: "fs", rights: ["read"], scope }, { workspace: "/ws" }),
      { message: `Cannot resolve capability scope "${scope}": it leaves the workspace "/ws"` },
    );
  }
  // A climb that ends inside the workspace is allowed.
  assert.equal(
    resolveScope({ resource: "fs", rights: ["read"], scope: "a/../b/**" }, { workspace: "/ws" })
      .scope,
    "/ws/b/**",
  );
});

Deno.test("resolveScope: accepts the filesystem root as the workspace", () => {
  const spec = resolveScope({ resource: "fs" as const, rights: ["read"], scope: "x/**" }, {
    workspace: "/",
  });
  assert.equal(spec.scope, "/x/**");
});

Deno.test("allows: needs the resource, the right, the scope, time and uses", () => {
  const cap = record({ rights: ["read"], scope: "/ws/src/**" });
  assert.ok(allows(cap, fsOp("read", "/ws/src/a.ts"), NOW));
  assert.ok(allows(cap, fsOp("read", "/ws/src"), NOW));
  assert.ok(!allows(cap, fsOp("write", "/ws/src/a.ts"), NOW));
  assert.ok(!allows(cap, fsOp("read", "/ws/srcx/a.ts"), NOW));
  assert.ok(!allows(cap, fsOp("read", "/ws/other/a.ts"), NOW));
  assert.ok(!allows(cap, { resource: "obj", right: "read", target: "/ws/src/a.ts" }, NOW));
  assert.ok(allows(record({ rights: ["*"] }), fsOp("delete", "/ws/a"), NOW));
});

Deno.test("allows: refuses expired and used-up capabilities", () => {
  const op = fsOp("read", "/ws/a");
  assert.ok(allows(record({ expiresAt: NOW + 1 }), op, NOW));
  assert.ok(!allows(record({ expiresAt: NOW }), op, NOW));
  assert.ok(!allows(record({ expiresAt: NOW - 1 }), op, NOW));
  assert.ok(allows(record({ uses: 1 }), op, NOW));
  assert.ok(!allows(record({ uses: 0 }), op, NOW));
});

Deno.test("allows: URL scopes do not stretch to other hosts or ports", () => {
  const cap = record({ resource: "net", rights: ["fetch"], scope: "https://api.example.com/**" });
  const fetch = (target: string): Operation => ({ resource: "net", right: "fetch", target });
  assert.ok(allows(cap, fetch("https://api.example.com/v1/x"), NOW));
  assert.ok(!allows(cap, fetch("https://api.example.com.evil.test/v1/x"), NOW));
  assert.ok(!allows(cap, fetch("https://api.example.com:8443/v1/x"), NOW));
});

Deno.test("attenuationError: accepts a subset of every attribute", () => {
  const parent = record({ uses: 5, expiresAt: NOW + 60_000 });
  const child = { resource: "fs" as const, rights: ["read"], scope: "/ws/src/**" };
  assert.equal(
    attenuationError({ ...child, uses: 5, expiresAt: NOW + 60_000 }, parent, NOW),
    undefined,
  );
  assert.equal(attenuationError({ ...child, uses: 1, ttlMs: 60_000 }, parent, NOW), undefined);
  const same: CapabilitySpec = { resource: "fs", rights: ["read", "write"], scope: "/ws/**" };
  assert.equal(attenuationError(same, record(), NOW), undefined);
  // Unlimited parents bound nothing.
  assert.equal(attenuationError({ ...child, uses: 9, ttlMs: 1 }, record(), NOW), undefined);
});

Deno.test("attenuationError: refuses another resource", () => {
  const child: CapabilitySpec = { resource: "exec", rights: ["read"], scope: "/ws/**" };
  assert.equal(
    attenuationError(child, record(), NOW),
    'resource "exec" differs from the parent\'s "fs"',
  );
});

Deno.test("attenuationError: refuses rights the parent does not hold", () => {
  const parent = record({ rights: ["read"] });
  const spec = (rights: string[]): CapabilitySpec => ({ resource: "fs", rights, scope: "/ws/a" });
  assert.equal(attenuationError(spec(["read", "write"]), parent, NOW), 'right "write" is not held');
  assert.equal(attenuationError(spec(["*"]), parent, NOW), 'right "*" is not held');
  assert.equal(attenuationError(spec(["read"]), parent, NOW), undefined);
  const star = record({ rights: ["*"] });
  assert.equal(attenuationError(spec(["*"]), star, NOW), undefined);
  assert.equal(attenuationError(spec(["delete"]), star, NOW), undefined);
});

Deno.test("attenuationError: refuses a wider scope", () => {
  const parent = record({ scope: "/a/b/**" });
  const spec = (scope: string): CapabilitySpec => ({ resource: "fs", rights: ["read"], scope });
  assert.equal(
    attenuationError(spec("/a/**"), parent, NOW),
    'scope "/a/**" is wider than "/a/b/**"',
  );
  assert.equal(
    attenuationError(spec("/a/b*/**"), parent, NOW),
    'scope "/a/b*/**" is wider than "/a/b/**"',
  );
  assert.ok(attenuationError(spec("/a/c"), parent, NOW));
  assert.equal(attenuationError(spec("/a/b/c/*.txt"), parent, NOW), undefined);
  assert.equal(attenuationError(spec("/a/b"), parent, NOW), undefined);
});

Deno.test("attenuationError: refuses more uses than are left", () => {
  const parent = record({ uses: 1 });
  const spec: CapabilitySpec = { resource: "fs", rights: ["read"], scope: "/ws/a" };
  assert.equal(attenuationError({ ...spec, uses: 5 }, parent, NOW), "uses 5 exceed the 1 left");
  assert.equal(attenuationError(spec, parent, NOW), "unlimited uses exceed the 1 left");
  assert.equal(attenuationError({ ...spec, uses: 1 }, parent, NOW), undefined);
  assert.equal(
    attenuationError({ ...spec, uses: 1 }, record({ uses: 0 }), NOW),
    "parent has no uses left",
  );
});

Deno.test("attenuationError: refuses an expiry later than the parent's", () => {
  const parent = record({ expiresAt: NOW + 60_000 });
  const spec: CapabilitySpec = { resource: "fs", rights: ["read"], scope: "/ws/a" };
  const later = "expiry is later than the parent's";
  assert.equal(attenuationError({ ...spec, expiresAt: NOW + 60_001 }, parent, NOW), later);
  assert.equal(attenuationError({ ...spec, ttlMs: 60_001 }, parent, NOW), later);
  assert.equal(attenuationError(spec, parent, NOW), `${later}: the child never expires`);
  assert.equal(attenuationError({ ...spec, ttlMs: 60_000 }, parent, NOW), undefined);
  // An explicit expiry takes precedence over a ttl.
  assert.equal(
    attenuationError({ ...spec, ttlMs: 1, expiresAt: NOW + 60_001 }, parent, NOW),
    later,
  );
  assert.equal(attenuationError(spec, parent, NOW + 60_000), "parent has expired");
  assert.equal(attenuationError({ ...spec, ttlMs: 1 }, parent, NOW + 60_000), "parent has expired");
});

Deno.test("attenuationError: refuses to unbind a one-shot grant tied to one operation", () => {
  const spec: CapabilitySpec = { resource: "fs", rights: ["read"], scope: "/ws/a", uses: 1 };
  assert.equal(
    attenuationError(spec, record({ uses: 1, boundTo: "digest" }), NOW),
    "parent is bound to one exact operation",
  );
  assert.equal(attenuationError(spec, record({ uses: 1 }), NOW), undefined);
});

Deno.test("attenuationError: refuses a delegable child of a parent that is not delegable", () => {
  const spec: CapabilitySpec = {
    resource: "fs",
    rights: ["read"],
    scope: "/ws/a",
    delegable: true,
  };
  assert.equal(
    attenuationError(spec, record({ delegable: false }), NOW),
    "delegable, but the parent is not",
  );
  assert.equal(attenuationError(spec, record({ delegable: true }), NOW), undefined);
  // Dropping delegability is a narrowing.
  assert.equal(
    attenuationError({ ...spec, delegable: false }, record({ delegable: true }), NOW),
    undefined,
  );
});

Deno.test("intersectCapabilities: narrows every attribute to what both sides allow", () => {
  const a = record({ rights: ["read", "write"], scope: "/ws/**", delegable: true });
  const spec = (over: Partial<CapabilitySpec> & { expiresAt?: number } = {}) => ({
    resource: "fs" as const,
    rights: ["read"],
    scope: "/ws/src/**",
    ...over,
  });
  assert.deepEqual(intersectCapabilities(a, spec(), NOW), spec());
  // Rights: those both hold; "*" on one side gives the other's.
  assert.deepEqual(intersectCapabilities(a, spec({ rights: ["write", "delete"] }), NOW)?.rights, [
    "write",
  ]);
  assert.equal(intersectCapabilities(a, spec({ rights: ["delete"] }), NOW), undefined);
  assert.deepEqual(
    intersectCapabilities(record({ rights: ["*"] }), spec({ rights: ["run"] }), NOW)?.rights,
    ["run"],
  );
  // Scope: the narrower, from either side; none when neither covers the other.
  assert.equal(intersectCapabilities(spec({ scope: "/ws/**" }), a, NOW)?.scope, "/ws/**");
  assert.equal(intersectCapabilities(record({ scope: "/ws/a/**" }), spec(), NOW), undefined);
  // Uses and expiry: the smaller; a ttl counts from now.
  assert.equal(intersectCapabilities(record({ uses: 3 }), spec({ uses: 5 }), NOW)?.uses, 3);
  assert.equal(intersectCapabilities(a, spec({ uses: 2 }), NOW)?.uses, 2);
  assert.equal(
    intersectCapabilities(record({ expiresAt: NOW + 10 }), spec({ ttlMs: 60_000 }), NOW)
      ?.expiresAt,
    NOW + 10,
  );
  assert.equal(intersectCapabilities(a, spec({ ttlMs: 5 }), NOW)?.expiresAt, NOW + 5);
  // Delegable only when both are.
  assert.equal(intersectCapabilities(a, spec({ delegable: true }), NOW)?.delegable, true);
  assert.equal(
    intersectCapabilities(record({ delegable: false }), spec({ delegable: true }), NOW)?.delegable,
    undefined,
  );
  // Nothing from another resource, or an expired, used-up or bound side.
  assert.equal(intersectCapabilities(a, spec({ resource: "exec" }), NOW), undefined);
  assert.equal(intersectCapabilities(record({ expiresAt: NOW }), spec(), NOW), undefined);
  assert.equal(intersectCapabilities(record({ uses: 0 }), spec(), NOW), undefined);
  assert.equal(intersectCapabilities(record({ uses: 1, boundTo: "d" }), spec(), NOW), undefined);
});
