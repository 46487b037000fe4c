import assert from "node:assert/strict";
import { SyscallError } from "../broker/errors.ts";
import { ApiError, errorBody, INTERNAL_MESSAGE, toErrorResponse } from "./errors.ts";

Deno.test("toErrorResponse maps syscall codes to statuses and keeps their messages", () => {
  const cases = [
    ["ENOENT", 404, "not_found"],
    ["EEXIST", 409, "conflict"],
    ["EPERM", 403, "forbidden"],
    ["EINVAL", 400, "invalid_request"],
    ["ENOSYS", 501, "not_implemented"],
  ] as const;
  for (const [code, status, name] of cases) {
    const mapped = toErrorResponse(new SyscallError(code, `Cannot do "x": ${code}`));
    assert.equal(mapped.status, status, code);
    assert.deepEqual(mapped.body, { error: { code: name, message: `Cannot do "x": ${code}` } });
    assert.equal(mapped.unexpected, false);
  }
});

Deno.test("toErrorResponse answers other codes and foreign errors with a generic 500", () => {
  for (
    const error of [
      new SyscallError("EBUDGET", "Cannot continue: budget of /secret/path"),
      new SyscallError("EUNCERTAIN", "uncertain"),
      new TypeError("Value too large at /home/user/.libos/libos.db"),
      "a thrown string",
      undefined,
    ]
  ) {
    const mapped = toErrorResponse(error);
    assert.equal(mapped.status, 500);
    assert.deepEqual(mapped.body, { error: { code: "internal", message: INTERNAL_MESSAGE } });
    assert.equal(mapped.unexpected, true);
    assert.ok(!JSON.stringify(mapped.body).includes("/"), "no internal detail leaks");
  }
});

Deno.test("toErrorResponse keeps only the first line of a syscall message", () => {
  const mapped = toErrorResponse(
    new SyscallError("EINVAL", "Cannot parse: bad\n    at stack (x.ts:1)"),
  );
  assert.equal(mapped.body.error.message, "Cannot parse: bad");
});

Deno.test("an ApiError keeps its status, message and headers", () => {
  const error = new ApiError(401, "Cannot authenticate the request: no token", {
    headers: { "WWW-Authenticate": "Bearer" },
  });
  const mapped = toErrorResponse(error);
  assert.equal(mapped.status, 401);
  assert.equal(mapped.body.error.code, "unauthenticated");
  assert.deepEqual(mapped.headers, { "WWW-Authenticate": "Bearer" });
  assert.deepEqual(errorBody(413, "too big"), {
    error: { code: "payload_too_large", message: "too big" },
  });
});
