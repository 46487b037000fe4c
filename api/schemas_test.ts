import assert from "node:assert/strict";
import { ApiError } from "./errors.ts";
import {
  AuditQuerySchema,
  EventPostSchema,
  HumanAnswerSchema,
  ImageBundleSchema,
  MAX_VALUE_JSON_BYTES,
  SpawnRequestSchema,
  validate,
} from "./schemas.ts";

function refusal(fn: () => unknown): ApiError {
  try {
    fn();
  } catch (error) {
    assert.ok(error instanceof ApiError);
    assert.equal(error.status, 400);
    return error;
  }
  throw new Error("expected a refusal");
}

Deno.test("validate refuses unknown fields, naming them", () => {
  const error = refusal(() =>
    validate(
      SpawnRequestSchema,
      { image: "a@1", workspace: "/w", wrokspace: "/x" },
      "spawn a process",
    )
  );
  assert.equal(error.message, 'Cannot spawn a process: unknown field "wrokspace"');
});

Deno.test("validate names the path and the problem of a bad value", () => {
  assert.equal(
    refusal(() =>
      validate(
        SpawnRequestSchema,
        { image: "a@1", workspace: "/w", capabilities: ["x", 3] },
        "spawn",
      )
    ).message,
    "Cannot spawn: capabilities[1]: expected string, got number",
  );
  assert.equal(
    refusal(() => validate(SpawnRequestSchema, { workspace: "/w" }, "spawn")).message,
    "Cannot spawn: image: is required",
  );
  assert.match(
    refusal(() =>
      validate(SpawnRequestSchema, {
        image: "a@1",
        workspace: "/w",
        policy: { "fs:*:**": "maybe" },
      }, "spawn")
    ).message,
    /policy\["fs:\*:\*\*"\]: expected one of "allow", "deny", "ask"/,
  );
});

Deno.test("a spawn input over the value limit is refused; one under it is kept", () => {
  const big = "x".repeat(MAX_VALUE_JSON_BYTES);
  assert.match(
    refusal(() =>
      validate(SpawnRequestSchema, { image: "a@1", workspace: "/w", input: big }, "spawn")
    )
      .message,
    /input: input is \d+ bytes of JSON, over the limit/,
  );
  const ok = validate(
    SpawnRequestSchema,
    { image: "a@1", workspace: "/w", input: { n: 1 } },
    "spawn",
  );
  assert.deepEqual(ok.input, { n: 1 });
});

Deno.test("a human answer needs a decision or an answer, and a ttl only with allow_always", () => {
  assert.match(
    refusal(() => validate(HumanAnswerSchema, {}, "answer")).message,
    /expected a decision or an answer/,
  );
  assert.match(
    refusal(() => validate(HumanAnswerSchema, { decision: "allow_once", ttl: "10m" }, "answer"))
      .message,
    /ttl: only an "allow_always" decision takes a ttl/,
  );
  assert.match(
    refusal(() => validate(HumanAnswerSchema, { decision: "allow_always", ttl: "soon" }, "answer"))
      .message,
    /ttl: "soon" is not a duration/,
  );
  assert.match(
    refusal(() => validate(HumanAnswerSchema, { decision: "maybe" }, "answer")).message,
    /decision: expected one of "allow_once"/,
  );
  assert.deepEqual(validate(HumanAnswerSchema, { decision: "allow_always", ttl: "10m" }, "a"), {
    decision: "allow_always",
    ttl: "10m",
  });
  assert.deepEqual(validate(HumanAnswerSchema, { answer: false }, "a"), { answer: false });
});

Deno.test("query numbers must be canonical positive integers", () => {
  assert.deepEqual(validate(AuditQuerySchema, { pid: "3", after: "0", limit: "10" }, "list"), {
    pid: 3,
    after: 0,
    limit: 10,
  });
  for (const pid of ["0", "-1", "1.5", "1e3", "01", "x", ""]) {
    assert.match(
      refusal(() => validate(AuditQuerySchema, { pid }, "list")).message,
      /pid: expected a positive integer/,
    );
  }
  assert.match(
    refusal(() => validate(AuditQuerySchema, { pdi: "1" }, "list")).message,
    /unknown field "pdi"/,
  );
});

Deno.test("event topics are short names without spaces or control characters", () => {
  assert.equal(
    validate(EventPostSchema, { topic: "deploy/done:v1" }, "post").topic,
    "deploy/done:v1",
  );
  for (const topic of ["", "a b", "a\nb", "x".repeat(201)]) {
    assert.match(refusal(() => validate(EventPostSchema, { topic }, "post")).message, /topic:/);
  }
});

Deno.test("an image bundle validates its image with the image schema", () => {
  const bundle = validate(ImageBundleSchema, {
    image: { name: "m", version: "1", entry: "main.ts" },
    entrySource: "export default () => 1;",
  }, "register");
  assert.equal(bundle.image.tools.length, 0, "image defaults apply");
  assert.match(
    refusal(() => validate(ImageBundleSchema, { image: { name: "M", version: "1" } }, "register"))
      .message,
    /image\.name: expected a lowercase name/,
  );
});
