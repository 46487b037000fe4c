import assert from "node:assert/strict";
import { Hono } from "hono";
import { toErrorResponse } from "./errors.ts";
import { type GuardOptions, isAllowedHost, requestGuard } from "./guard.ts";

Deno.test("isAllowedHost accepts loopback names with the server's port only", () => {
  for (const host of ["127.0.0.1:7311", "localhost:7311", "[::1]:7311", "LOCALHOST:7311"]) {
    assert.ok(isAllowedHost(host, { port: 7311 }), host);
  }
  for (
    const host of [
      "127.0.0.1:7312",
      "evil.test:7311",
      "127.0.0.1.evil.test:7311",
      "localhost.evil.test",
      "10.0.0.1:7311",
      "[::2]:7311",
      "127.0.0.1:7311:1",
      "",
      "user@127.0.0.1:7311",
    ]
  ) {
    assert.ok(!isAllowedHost(host, { port: 7311 }), host);
  }
  assert.ok(isAllowedHost("localhost", { port: 80 }));
  assert.ok(!isAllowedHost("localhost", { port: 7311 }));
  assert.ok(isAllowedHost("127.0.0.1:9", {}), "any port when none is configured");
  assert.ok(!isAllowedHost("evil.test", {}));
  assert.ok(isAllowedHost("libos.internal:7311", { allowedHosts: ["Libos.Internal:7311"] }));
});

function app(options: GuardOptions): Hono {
  const hono = new Hono();
  hono.onError((error, c) => {
    const mapped = toErrorResponse(error);
    return c.json(mapped.body, mapped.status);
  });
  hono.use("*", requestGuard(options));
  hono.get("/x", (c) => c.json({ ok: true }));
  return hono;
}

Deno.test("requestGuard refuses a rebinding Host with 403 and serves a loopback one", async () => {
  const hono = app({ port: () => 7311 });
  const evil = await hono.request("http://evil.test:7311/x");
  assert.equal(evil.status, 403);
  const body = await evil.json();
  assert.equal(body.error.code, "forbidden");
  assert.match(body.error.message, /Cannot serve a request for host "evil\.test:7311"/);
  const header = await hono.request("http://127.0.0.1:7311/x", {
    headers: { host: "evil.test:7311" },
  });
  assert.equal(header.status, 403, "the Host header counts, not the URL");
  const ok = await hono.request("http://127.0.0.1:7311/x");
  assert.equal(ok.status, 200);
  assert.deepEqual(await ok.json(), { ok: true });
});

Deno.test("requestGuard refuses any Origin that is not allowed, including null", async () => {
  const hono = app({ allowedOrigins: ["http://127.0.0.1:5173"] });
  for (const origin of ["http://evil.test", "null", "http://127.0.0.1:5174"]) {
    const res = await hono.request("http://localhost/x", { headers: { origin } });
    assert.equal(res.status, 403, origin);
    assert.match((await res.json()).error.message, /cross-site requests are not allowed/);
  }
  const allowed = await hono.request("http://localhost/x", {
    headers: { origin: "http://127.0.0.1:5173" },
  });
  assert.equal(allowed.status, 200);
  const none = await hono.request("http://localhost/x");
  assert.equal(none.status, 200, "a request without Origin (curl, CLI) is served");
});
