import assert from "node:assert/strict";
import { COMMON_OPTIONS, int, list, parse, str, UsageError } from "./args.ts";

const RUN = {
  cap: { type: "string", multiple: true },
  workspace: { type: "string" },
} as const;

Deno.test("parse: common flags are known to every verb", () => {
  const parsed = parse(["--kv", "/tmp/x.db", "--json", "-h"], {}, "ps");
  assert.equal(parsed.values.kv, "/tmp/x.db");
  assert.equal(parsed.values.json, true);
  assert.equal(parsed.values.help, true);
  assert.deepEqual(Object.keys(COMMON_OPTIONS).sort(), ["help", "json", "kv"]);
});

Deno.test("parse: verb flags, repeated flags and positionals", () => {
  const parsed = parse(
    ["img.json", "--cap", "fs:read:**", "--workspace=ws", "--cap", "fs:write:out/**"],
    RUN,
    "run",
  );
  assert.deepEqual(parsed.positionals, ["img.json"]);
  assert.deepEqual(list(parsed, "cap"), ["fs:read:**", "fs:write:out/**"]);
  assert.equal(str(parsed, "workspace"), "ws");
});

Deno.test("parse: an unknown flag is a one-line usage error naming the verb and the flag", () => {
  assert.throws(
    () => parse(["--bogus"], RUN, "run"),
    (e: unknown) =>
      e instanceof UsageError &&
      e.message.startsWith('Cannot parse "libos run" flags: ') &&
      e.message.includes("--bogus") &&
      !e.message.includes("\n"),
  );
});

Deno.test("parse: a string flag without its value is a usage error", () => {
  assert.throws(() => parse(["--workspace"], RUN, "run"), UsageError);
});

Deno.test("parse: a boolean flag given a value is a usage error", () => {
  assert.throws(() => parse(["--json=yes"], {}, "ps"), UsageError);
});

Deno.test("str: a string flag's value, undefined for absent or boolean flags", () => {
  const parsed = parse(["--workspace", "ws", "--json"], RUN, "run");
  assert.equal(str(parsed, "workspace"), "ws");
  assert.equal(str(parsed, "json"), undefined);
  assert.equal(str(parsed, "kv"), undefined);
});

Deno.test("list: a repeatable flag's values, empty when absent", () => {
  assert.deepEqual(list(parse([], RUN, "run"), "cap"), []);
  assert.deepEqual(list(parse(["--cap", "a:b:c"], RUN, "run"), "cap"), ["a:b:c"]);
  assert.deepEqual(list(parse(["--workspace", "ws"], RUN, "run"), "workspace"), ["ws"]);
});

Deno.test("int: accepts positive integers", () => {
  assert.equal(int("1", "PID"), 1);
  assert.equal(int("42", "--pid"), 42);
});

Deno.test("int: refuses anything else with a message naming the flag and the value", () => {
  for (const bad of [undefined, "", "0", "-3", "1.5", "abc", "NaN", "Infinity"]) {
    assert.throws(
      () => int(bad, "PID"),
      (e: unknown) =>
        e instanceof UsageError &&
        e.message === `Expected PID to be a positive integer, got "${bad ?? ""}"`,
      `int(${JSON.stringify(bad)})`,
    );
  }
});
