import assert from "node:assert/strict";
import { join } from "node:path";
import { Hono } from "hono";
import {
  type ApiEnv,
  authenticate,
  authorize,
  loadTokens,
  parseTokenConfig,
  ROLE_RIGHTS,
  type TokenConfig,
  TOKENS_ENV,
  TokenVerifier,
} from "./auth.ts";
import { toErrorResponse } from "./errors.ts";

const SECRET = "s3cret-token-value-0001";
const CONFIG: TokenConfig = {
  tokens: [
    { name: "alice", token: SECRET, role: "admin" },
    { name: "bob", token: "bob-token-value-00000002", role: "viewer" },
  ],
};

function refusal(fn: () => unknown): string {
  try {
    fn();
  } catch (error) {
    return (error as Error).message;
  }
  throw new Error("expected a refusal");
}

Deno.test("parseTokenConfig refuses bad configurations without echoing tokens", () => {
  const short = refusal(() =>
    parseTokenConfig({ tokens: [{ name: "a", token: "short-secret", role: "admin" }] })
  );
  assert.match(short, /tokens\[0\]\.token: must be at least 16 characters/);
  assert.ok(!short.includes("short-secret"));
  const duplicate = refusal(() =>
    parseTokenConfig({
      tokens: [
        { name: "a", token: SECRET, role: "admin" },
        { name: "b", token: SECRET, role: "viewer" },
      ],
    })
  );
  assert.match(duplicate, /tokens\[1\]\.token: the same token is listed twice/);
  assert.ok(!duplicate.includes(SECRET));
  assert.match(
    refusal(() =>
      parseTokenConfig({
        tokens: [{ name: "a", token: SECRET, role: "admin" }, {
          name: "a",
          token: SECRET + "x",
          role: "admin",
        }],
      })
    ),
    /the name "a" is used twice/,
  );
  assert.match(
    refusal(() => parseTokenConfig({ tokens: [{ name: "a", token: SECRET, role: "root" }] })),
    /role: expected one of admin, operator, approver, viewer/,
  );
  assert.match(
    refusal(() =>
      parseTokenConfig({ tokens: [{ name: "a", token: SECRET, role: "admin", extra: 1 }] })
    ),
    /unknown field "extra"/,
  );
  assert.match(refusal(() => parseTokenConfig({ tokens: [] })), /at least one token/);
  assert.match(refusal(() => parseTokenConfig([])), /Cannot load tokens from/);
  assert.match(
    refusal(() => parseTokenConfig({ tokens: [{ name: "a b", token: SECRET, role: "admin" }] })),
    /tokens\[0\]\.name/,
  );
});

Deno.test("loadTokens reads a file, an object, or LIBOS_TOKENS", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const file = join(dir, "tokens.json");
    await Deno.writeTextFile(file, JSON.stringify(CONFIG));
    assert.deepEqual(await loadTokens(file), CONFIG);
    assert.deepEqual(await loadTokens(CONFIG), CONFIG);
    await assert.rejects(loadTokens(join(dir, "missing.json")), /no such file/);
    await Deno.writeTextFile(file, "{ not json");
    await assert.rejects(loadTokens(file), /invalid JSON/);

    const previous = Deno.env.get(TOKENS_ENV);
    try {
      Deno.env.set(TOKENS_ENV, JSON.stringify(CONFIG));
      assert.deepEqual(await loadTokens(), CONFIG);
      Deno.env.delete(TOKENS_ENV);
      await assert.rejects(loadTokens(), /LIBOS_TOKENS is not set/);
    } finally {
      if (previous === undefined) Deno.env.delete(TOKENS_ENV);
      else Deno.env.set(TOKENS_ENV, previous);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("TokenVerifier accepts exactly the configured tokens", async () => {
  const verifier = new TokenVerifier(CONFIG);
  assert.deepEqual(await verifier.verify(SECRET), { name: "alice", role: "admin" });
  assert.deepEqual(await verifier.verify("bob-token-value-00000002"), {
    name: "bob",
    role: "viewer",
  });
  for (
    const wrong of [
      SECRET.slice(0, -1),
      SECRET + "1",
      SECRET.toUpperCase(),
      "",
      "alice",
      SECRET.slice(0, -1) + "2",
    ]
  ) {
    assert.equal(await verifier.verify(wrong), undefined, wrong);
  }
  assert.ok(!JSON.stringify(verifier.principals()).includes(SECRET));
  assert.deepEqual(verifier.principals().map((p) => p.name), ["alice", "bob"]);
});

Deno.test("every role has read; only admin has admin; approver answers but cannot write", () => {
  assert.ok(Object.values(ROLE_RIGHTS).every((rights) => rights.includes("read")));
  assert.deepEqual(ROLE_RIGHTS.approver, ["read", "answer"]);
  assert.ok(!ROLE_RIGHTS.operator.includes("admin"));
  assert.ok(ROLE_RIGHTS.admin.includes("admin"));
});

function guardedApp(): Hono<ApiEnv> {
  const app = new Hono<ApiEnv>();
  app.onError((error, c) => {
    const mapped = toErrorResponse(error);
    for (const [k, v] of Object.entries(mapped.headers)) c.header(k, v);
    return c.json(mapped.body, mapped.status);
  });
  const verifier = new TokenVerifier(CONFIG);
  app.post(
    "/write",
    authenticate(verifier),
    authorize("write", "write a thing"),
    (c) => c.json({ by: c.get("principal").name }),
  );
  return app;
}

Deno.test("authenticate answers 401 with a challenge for a missing, malformed or unknown token", async () => {
  const app = guardedApp();
  for (
    const header of [undefined, `Basic ${SECRET}`, `Bearer`, `Bearer ${SECRET}x`, SECRET]
  ) {
    const res = await app.request("/write", {
      method: "POST",
      headers: header === undefined ? {} : { authorization: header },
    });
    assert.equal(res.status, 401, String(header));
    assert.equal(res.headers.get("www-authenticate"), 'Bearer realm="libos"');
    const body = await res.json();
    assert.equal(body.error.code, "unauthenticated");
    assert.ok(!JSON.stringify(body).includes(SECRET));
  }
});

Deno.test("authorize lets a role with the right through and refuses another with 403", async () => {
  const app = guardedApp();
  const ok = await app.request("/write", {
    method: "POST",
    headers: { authorization: `bearer ${SECRET}` },
  });
  assert.equal(ok.status, 200);
  assert.deepEqual(await ok.json(), { by: "alice" });
  const denied = await app.request("/write", {
    method: "POST",
    headers: { authorization: "Bearer bob-token-value-00000002" },
  });
  assert.equal(denied.status, 403);
  assert.deepEqual(await denied.json(), {
    error: {
      code: "forbidden",
      message: 'Cannot write a thing: the role "viewer" lacks the "write" right',
    },
  });
});
