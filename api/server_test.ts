import assert from "node:assert/strict";
import { Kernel } from "../runtime/kernel.ts";
import { serveApi } from "./server.ts";

const TOKENS = {
  tokens: [{ name: "ops", token: "server-test-token-0001", role: "operator" as const }],
};

Deno.test("serveApi listens on 127.0.0.1, reports its port, and shuts down once", async () => {
  const kernel = await Kernel.open({ store: ":memory:" });
  const heard: { hostname: string; port: number }[] = [];
  const server = serveApi(kernel, {
    port: 0,
    tokens: TOKENS,
    version: "1.2.3",
    onListen: (address) => heard.push(address),
  });
  try {
    assert.ok(server.port > 0);
    assert.equal(server.url, `http://127.0.0.1:${server.port}`);
    assert.deepEqual(heard, [{ hostname: "127.0.0.1", port: server.port }]);
    const res = await fetch(`${server.url}/v1/health`);
    const health = await res.json();
    assert.equal(health.ok, true);
    assert.equal(health.version, "1.2.3");
    assert.ok(["bwrap", "none", "unavailable"].includes(health.execSandbox), health.execSandbox);
    const denied = await fetch(`${server.url}/v1/images`, {
      headers: { authorization: "Bearer server-test-token-0002" },
    });
    assert.equal(denied.status, 401);
    await denied.body?.cancel();
  } finally {
    await server.shutdown();
    await server.shutdown();
    await server.finished;
    await kernel.close();
  }
  await assert.rejects(fetch(`${server.url}/v1/health`), "nothing listens after shutdown");
});
