import assert from "node:assert/strict";
import { CapabilityError, type Operation, type Resource } from "./capability.ts";
import { ANY_COMMAND } from "./command_analysis.ts";
import {
  decide,
  parsePolicy,
  parsePolicyAssignment,
  parsePolicyRule,
  type PolicyRule,
  stackPolicy,
} from "./policy.ts";

const WS = { workspace: "/ws" };

function op(resource: Resource, right: string, target: string): Operation {
  return { resource, right, target };
}

function rules(policy: Record<string, string>): PolicyRule[] {
  return parsePolicy(policy, "test");
}

Deno.test("parsePolicyRule: reads patterns with named or '*' resource and rights", () => {
  assert.deepEqual(parsePolicyRule("exec:run:*", "ask", "image"), {
    pattern: "exec:run:*",
    resource: "exec",
    rights: ["run"],
    scope: "*",
    decision: "ask",
    source: "image",
  });
  const any = parsePolicyRule("*:*:**", "deny", "operator");
  assert.equal(any.resource, "*");
  assert.deepEqual(any.rights, ["*"]);
  assert.deepEqual(parsePolicyRule("fs:read,*:**", "allow", "x").rights, ["*"]);
  assert.equal(
    parsePolicyRule("net:fetch:https://api.example.com:8443/**", "allow", "x").scope,
    "https://api.example.com:8443/**",
  );
});

Deno.test("parsePolicyRule: refuses bad patterns and decisions with clear messages", () => {
  const cases: [string, string, string][] = [
    ["exec:run:*", "maybe", 'decision "maybe" is not allow, deny or ask'],
    ["exec:run:*", "Allow", 'decision "Allow"'],
    ["exec:run:*", "", 'decision ""'],
    ["disk:read:*", "deny", 'unknown resource "disk"'],
    ["exec:run", "deny", "expected resource:rights:scope"],
    ["exec:run:", "deny", "the scope is empty"],
    ["exec:Run:*", "deny", 'right "Run"'],
    ["exec:run:*;uses=1", "deny", "policy patterns take no ;attributes"],
  ];
  for (const [pattern, decision, fragment] of cases) {
    assert.throws(
      () => parsePolicyRule(pattern, decision, "image"),
      (error: unknown) => {
        assert.ok(error instanceof CapabilityError);
        assert.ok(
          error.message.startsWith(`Cannot parse policy rule "${pattern}": `),
          error.message,
        );
        assert.ok(error.message.includes(fragment), error.message);
        return true;
      },
    );
  }
});

Deno.test("parsePolicy: parses every entry with its source", () => {
  const parsed = parsePolicy({ "exec:run:*": "ask", "fs:delete:**": "deny" }, "image");
  assert.deepEqual(
    parsed.map((r) => [r.pattern, r.decision, r.source]),
    [["exec:run:*", "ask", "image"], ["fs:delete:**", "deny", "image"]],
  );
  assert.deepEqual(parsePolicy(undefined, "image"), []);
  assert.throws(() => parsePolicy({ "fs:read:**": "yes" }, "image"), CapabilityError);
});

Deno.test("parsePolicyAssignment: splits on the last '='", () => {
  const rule = parsePolicyAssignment("net:fetch:https://x.test/q?a=1&b=2=deny", "operator");
  assert.equal(rule.scope, "https://x.test/q?a=1&b=2");
  assert.equal(rule.decision, "deny");
  assert.equal(rule.source, "operator");
  assert.equal(parsePolicyAssignment("exec:run:*=ask", "operator").decision, "ask");
  assert.throws(
    () => parsePolicyAssignment("exec:run:*", "operator"),
    {
      message: 'Cannot parse policy "exec:run:*": expected PATTERN=DECISION, e.g. "exec:run:*=ask"',
    },
  );
  assert.throws(() => parsePolicyAssignment("exec:run:*=", "operator"), /decision ""/);
});

Deno.test("decide: undefined without a matching rule", () => {
  assert.equal(decide([], op("fs", "read", "/ws/a"), WS), undefined);
  const policy = rules({ "exec:run:git": "allow", "fs:delete:**": "deny" });
  assert.equal(decide(policy, op("exec", "run", "rm"), WS), undefined);
  assert.equal(decide(policy, op("fs", "read", "/ws/a"), WS), undefined);
  assert.equal(decide(policy, op("obj", "delete", "/ws/a"), WS), undefined);
});

Deno.test("decide: 'fs:delete:**' matches every path", () => {
  const policy = rules({ "fs:delete:**": "deny" });
  for (const target of ["/ws", "/ws/a", "/ws/a/b/c", "/etc/passwd", "/"]) {
    assert.equal(decide(policy, op("fs", "delete", target), WS)?.decision, "deny", target);
    assert.equal(decide(policy, op("fs", "delete", target))?.decision, "deny", target);
  }
});

Deno.test("decide: a relative fs scope is read against the workspace", () => {
  const policy = rules({ "fs:write:out/**": "ask" });
  for (const target of ["/ws/out", "/ws/out/a", "/ws/out/a/b.txt"]) {
    assert.equal(decide(policy, op("fs", "write", target), WS)?.decision, "ask", target);
  }
  for (const target of ["/ws/outside/a", "/other/out/a", "/ws/src/out/a", "/out/a"]) {
    assert.equal(decide(policy, op("fs", "write", target), WS), undefined, target);
  }
  // Without a workspace the relative scope matches only itself.
  assert.equal(decide(policy, op("fs", "write", "/ws/out/a")), undefined);
  assert.equal(
    decide(rules({ "fs:read:.": "deny" }), op("fs", "read", "/ws"), WS)?.decision,
    "deny",
  );
  // Other resources never get workspace treatment.
  assert.equal(
    decide(rules({ "obj:read:out/**": "deny" }), op("obj", "read", "/ws/out/a"), WS),
    undefined,
  );
});

Deno.test("decide: a relative scope never reaches outside the workspace", () => {
  const policy = rules({ "fs:read:../etc/**": "allow", "fs:read:*.env": "deny" });
  assert.equal(decide(policy, op("fs", "read", "/etc/passwd"), WS), undefined);
  assert.equal(decide(policy, op("fs", "read", "/ws/.env"), WS)?.decision, "deny");
  assert.equal(decide(policy, op("fs", "read", "/ws2/.env"), WS), undefined);
  assert.equal(decide(policy, op("fs", "read", "/ws/a/.env"), WS), undefined);
  const deep = rules({ "fs:read:**/.env": "deny" });
  assert.equal(decide(deep, op("fs", "read", "/ws/a/b/.env"), WS)?.decision, "deny");
  assert.equal(decide(deep, op("fs", "read", "/ws/.env"), WS)?.decision, "deny");
});

Deno.test("decide: rights must include the operation's right unless '*'", () => {
  const policy = rules({ "fs:read,write:**": "ask" });
  assert.equal(decide(policy, op("fs", "write", "/ws/a"), WS)?.decision, "ask");
  assert.equal(decide(policy, op("fs", "delete", "/ws/a"), WS), undefined);
  assert.equal(decide(rules({ "fs:*:**": "ask" }), op("fs", "delete", "/ws/a"))?.decision, "ask");
});

Deno.test("decide: a named resource beats '*', then named rights beat '*'", () => {
  const target = op("fs", "read", "/ws/src/a.ts");
  const byResource = rules({ "*:read:/ws/src/a.ts": "deny", "fs:*:**": "allow" });
  assert.equal(decide(byResource, target, WS)?.pattern, "fs:*:**");
  const byRights = rules({ "fs:*:/ws/src/a.ts": "deny", "fs:read:**": "allow" });
  assert.equal(decide(byRights, target, WS)?.pattern, "fs:read:**");
});

Deno.test("decide: a more literal scope beats a less literal one", () => {
  const policy = rules({
    "fs:write:**": "deny",
    "fs:write:out/**": "allow",
    "fs:write:out/keep/**": "ask",
  });
  assert.equal(decide(policy, op("fs", "write", "/ws/src/a"), WS)?.decision, "deny");
  assert.equal(decide(policy, op("fs", "write", "/ws/out/a"), WS)?.decision, "allow");
  assert.equal(decide(policy, op("fs", "write", "/ws/out/keep/a"), WS)?.decision, "ask");
  const urls = rules({ "net:*:**": "ask", "net:fetch:https://api.example.com:8443/**": "allow" });
  const fetch = (target: string) => decide(urls, op("net", "fetch", target))?.decision;
  assert.equal(fetch("https://api.example.com:8443/v1"), "allow");
  assert.equal(fetch("https://api.example.com:9999/v1"), "ask");
});

Deno.test("decide: at equal specificity deny beats ask beats allow, in any order", () => {
  const all = ["allow", "ask", "deny"].map((d) => parsePolicyRule("exec:run:git", d, "test"));
  const orders = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]];
  for (const order of orders) {
    const list = order.map((i) => all[i]);
    assert.equal(decide(list, op("exec", "run", "git"))?.decision, "deny");
    const noDeny = list.filter((r) => r.decision !== "deny");
    assert.equal(decide(noDeny, op("exec", "run", "git"))?.decision, "ask");
  }
  // Different patterns of equal specificity tie the same way.
  const mixed = rules({ "exec:run:g*": "allow", "exec:run:*t": "deny" });
  assert.equal(decide(mixed, op("exec", "run", "git"))?.decision, "deny");
  const relative = rules({ "fs:write:/ws/**": "allow", "fs:write:out/**": "deny" });
  assert.equal(decide(relative, op("fs", "write", "/ws/out/a"), WS)?.decision, "deny");
});

Deno.test("decide: an allow no more specific than a deny cannot override it", () => {
  const policy = [
    parsePolicyRule("fs:delete:**", "deny", "operator"),
    parsePolicyRule("fs:delete:*", "allow", "image"),
    parsePolicyRule("*:delete:/ws/a", "allow", "pid:3"),
  ];
  const rule = decide(policy, op("fs", "delete", "/ws/a"), WS);
  assert.equal(rule?.decision, "deny");
  assert.equal(rule?.source, "operator");
});

Deno.test("decide: at a full tie the earlier rule wins", () => {
  const first = parsePolicyRule("exec:run:git", "ask", "operator");
  const second = parsePolicyRule("exec:run:git", "ask", "image");
  assert.equal(decide([first, second], op("exec", "run", "git"))?.source, "operator");
  assert.equal(decide([second, first], op("exec", "run", "git"))?.source, "image");
});

Deno.test("decide: a stacked layer never loosens a lower layer, however specific", () => {
  const operator = rules({ "fs:write:**": "deny", "exec:run:*": "ask", "fs:read:**": "allow" });
  // Every decision a child layer could try, against every decision below it.
  const child = rules({
    "fs:write:/ws/secret.txt": "allow",
    "exec:run:git": "allow",
    "fs:read:/ws/notes.txt": "ask",
    "fs:read:/ws/key.txt": "deny",
  });
  const stacked = stackPolicy(operator, child);
  const decision = (target: Operation) => decide(stacked, target, WS)?.decision;
  assert.equal(decision(op("fs", "write", "/ws/secret.txt")), "deny");
  assert.equal(decision(op("exec", "run", "git")), "ask");
  assert.equal(decision(op("fs", "read", "/ws/notes.txt")), "ask");
  assert.equal(decision(op("fs", "read", "/ws/key.txt")), "deny");
  assert.equal(decision(op("fs", "read", "/ws/other.txt")), "allow");
  // The same rules in one layer: the most specific wins, as before.
  const flat = [...operator, ...child];
  assert.equal(decide(flat, op("fs", "write", "/ws/secret.txt"), WS)?.decision, "allow");
  assert.equal(decide(flat, op("exec", "run", "git"), WS)?.decision, "allow");
});

Deno.test("stackPolicy: each group is a new layer above the highest one below", () => {
  const base = rules({ "fs:write:**": "deny" });
  const once = stackPolicy(
    base,
    rules({ "fs:write:a": "allow" }),
    [],
    rules({ "fs:write:b": "allow" }),
  );
  assert.deepEqual(once.map((r) => r.layer), [undefined, 1, 2]);
  const twice = stackPolicy(once, rules({ "fs:write:**": "allow" }));
  assert.deepEqual(twice.map((r) => r.layer), [undefined, 1, 2, 3]);
  // Three layers deep the grandparent's deny still holds.
  for (const target of ["/ws/a", "/ws/b", "/ws/c"]) {
    assert.equal(decide(twice, op("fs", "write", target), WS)?.decision, "deny");
  }
  // Within the top layer, specificity decides between its own rules.
  const open = stackPolicy([], rules({ "fs:write:**": "deny", "fs:write:out/**": "allow" }));
  assert.equal(decide(open, op("fs", "write", "/ws/out/x"), WS)?.decision, "allow");
});

Deno.test("decide: any deny or ask on exec:run applies to a command that may run anything", () => {
  const policy = rules({
    "exec:run:*": "allow",
    "exec:run:curl": "deny",
    "exec:run:rm": "ask",
    "exec:run:git": "allow",
  });
  // `*` may be curl: the deny wins.
  assert.equal(decide(policy, op("exec", "run", ANY_COMMAND), WS)?.pattern, "exec:run:curl");
  assert.equal(decide(policy, op("exec", "run", "git"), WS)?.decision, "allow");
  const asking = rules({ "exec:run:*": "allow", "exec:run:rm": "ask" });
  assert.equal(decide(asking, op("exec", "run", ANY_COMMAND), WS)?.decision, "ask");
  // The strictest rule decides, not the most specific: `*` may be rm as well as curl.
  const mixed = rules({ "exec:run:rm": "deny", "exec:run:curl": "ask" });
  assert.equal(decide(mixed, op("exec", "run", ANY_COMMAND), WS)?.pattern, "exec:run:rm");
  assert.equal(decide(mixed, op("exec", "run", "curl"), WS)?.decision, "ask");
  // An allow on one program does not allow any program.
  assert.equal(
    decide(rules({ "exec:run:git": "allow" }), op("exec", "run", ANY_COMMAND), WS),
    undefined,
  );
  // Other resources are unaffected.
  assert.equal(decide(rules({ "fs:read:a": "deny" }), op("fs", "read", "*"), WS), undefined);
});
