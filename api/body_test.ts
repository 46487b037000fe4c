import assert from "node:assert/strict";
import { ApiError } from "./errors.ts";
import { readJsonBody } from "./body.ts";

const JSON_TYPE = { "content-type": "application/json" };

async function failure(request: Request, maxBytes = 64): Promise<ApiError> {
  try {
    await readJsonBody(request, "do a thing", { maxBytes });
  } catch (error) {
    assert.ok(error instanceof ApiError);
    return error;
  }
  throw new Error("expected a failure");
}

Deno.test("readJsonBody parses a JSON body within the limit", async () => {
  const request = new Request("http://localhost/", {
    method: "POST",
    headers: { "content-type": "application/json; charset=utf-8" },
    body: JSON.stringify({ a: [1, "é"] }),
  });
  assert.deepEqual(await readJsonBody(request, "do a thing", { maxBytes: 64 }), { a: [1, "é"] });
});

Deno.test("a declared oversized body is refused with 413 before it is read", async () => {
  let pulled = 0;
  const body = new ReadableStream<Uint8Array>({
    pull(controller) {
      pulled++;
      controller.enqueue(new Uint8Array(16));
    },
  });
  const error = await failure(
    new Request("http://localhost/", {
      method: "POST",
      headers: { ...JSON_TYPE, "content-length": "100000" },
      body,
    }),
  );
  assert.equal(error.status, 413);
  assert.match(error.message, /Cannot do a thing: the request body is over the limit of 64 bytes/);
  assert.ok(pulled <= 1, `read ${pulled} chunks of a body refused by its length`);
});

Deno.test("an undeclared oversized body is cut off at the limit with 413", async () => {
  let sent = 0;
  const body = new ReadableStream<Uint8Array>({
    pull(controller) {
      sent += 16;
      controller.enqueue(new TextEncoder().encode('{"aaaaaaaaaaaa":'));
    },
  });
  const error = await failure(
    new Request("http://localhost/", { method: "POST", headers: JSON_TYPE, body }),
  );
  assert.equal(error.status, 413);
  assert.ok(sent <= 64 + 32, `read ${sent} bytes of an endless body`);
});

Deno.test("a body that is not application/json is refused with 415", async () => {
  for (const type of [undefined, "text/plain", "application/jsonx", "multipart/form-data"]) {
    const error = await failure(
      new Request("http://localhost/", {
        method: "POST",
        headers: type ? { "content-type": type } : {},
        body: "{}",
      }),
    );
    assert.equal(error.status, 415, String(type));
  }
});

Deno.test("an empty, non-UTF-8 or malformed JSON body is a 400", async () => {
  const cases: [BodyInit | null, RegExp][] = [
    [null, /expected a JSON body/],
    ["  ", /expected a JSON body/],
    [new Uint8Array([0x7b, 0xff, 0x7d]), /not valid UTF-8/],
    ['{"a":', /not valid JSON/],
    ["{'a':1}", /not valid JSON/],
  ];
  for (const [body, message] of cases) {
    const error = await failure(
      new Request("http://localhost/", { method: "POST", headers: JSON_TYPE, body }),
    );
    assert.equal(error.status, 400);
    assert.match(error.message, message);
  }
});
