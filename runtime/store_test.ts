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

Deno.test("a store file written by several OS processes at once loses no write and fails none", async () => {
  const dir = await Deno.makeTempDir({ prefix: "libos-store-" });
  const path = join(dir, "shared.db");
  const store = new URL("./store.ts", import.meta.url).href;
  const writes = 300;
  // Each writer increments one counter with check-and-set commits, as the kernel does.
  const writer = `
    import { openStore } from ${JSON.stringify(store)};
    const { kv, close } = await openStore(${JSON.stringify(path)});
    for (let i = 0; i < ${writes}; i++) {
      for (;;) {
        const entry = await kv.get(["counter"]);
        const done = await kv.atomic().check(entry).set(["counter"], (entry.value ?? 0) + 1)
          .set(["by", Deno.pid, i], true).commit();
        if (done.ok) break;
      }
    }
    close();
  `;
  try {
    const runs = await Promise.all([1, 2, 3].map(() =>
      new Deno.Command(Deno.execPath(), {
        args: ["eval", "--unstable-kv", writer],
        stdin: "null",
      }).output()
    ));
    for (const run of runs) {
      assert.equal(run.code, 0, new TextDecoder().decode(run.stderr));
    }
    const { kv, close } = await openStore(path);
    try {
      assert.equal((await kv.get(["counter"])).value, 3 * writes);
      assert.equal((await Array.fromAsync(kv.list({ prefix: ["by"] }))).length, 3 * writes);
    } finally {
      close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
