import assert from "node:assert/strict";
import { join } from "node:path";
import { openStore } from "./store.ts";

Deno.test("openStore refuses a URL whose scheme it does not know", async () => {
  for (
    const location of [
      "postgres://user@127.0.0.1:5432/db",
      "postgresql://127.0.0.1/db",
      "redis://127.0.0.1:6379",
      "sqlite:libos.db",
      "file:///tmp/libos.db",
      "HTTP:libos.db",
      "s3+https://bucket/db",
    ]
  ) {
    await assert.rejects(
      () => openStore(location),
      (error: Error) => {
        assert.match(error.message, /^Cannot open store ".+": unsupported scheme "[a-z0-9+.-]+:"/);
        assert.match(error.message, /":memory:", or an http:\/\/ or https:\/\/ KV Connect URL$/);
        assert.ok(!error.message.includes("\n"));
        return true;
      },
      location,
    );
  }
});

Deno.test("openStore keeps a password in a refused URL out of its message", async () => {
  await assert.rejects(
    () => openStore("postgres://admin:hunter2@127.0.0.1:5432/db"),
    (error: Error) => {
      assert.ok(!error.message.includes("hunter2"), error.message);
      assert.match(error.message, /"postgres:\/\/admin:\*\*\*@127\.0\.0\.1:5432\/db"/);
      return true;
    },
  );
});

Deno.test("openStore opens :memory: and a file path, a colon in the path included", async () => {
  const memory = await openStore(":memory:");
  assert.equal(memory.path, undefined);
  memory.close();
  const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "libos-store-" }));
  try {
    const colon = await openStore(join(dir, "odd:name", "libos.db"));
    assert.equal(colon.path, join(dir, "odd:name", "libos.db"));
    await colon.kv.set(["k"], 1);
    colon.close();
    assert.ok((await Deno.stat(join(dir, "odd:name", "libos.db"))).isFile);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
