import assert from "node:assert/strict";
import { kvKeyId } from "./kv_key_id.ts";

Deno.test("two keys have one name exactly when KV stores them as one key", async () => {
  const kv = await Deno.openKv(":memory:");
  try {
    const keys: Deno.KvKey[] = [
      ["obj", 1],
      ["obj", "1"],
      ["obj", 1n],
      ["n", 0],
      ["n", -0],
      ["t", true],
      ["t", "true"],
      ["u", new Uint8Array([1, 2])],
      ["u", "1.2"],
      // KV stores text as UTF-8: a lone surrogate is U+FFFD, so these three are one key.
      ["s", "a\ud800b"],
      ["s", "a\udc00b"],
      ["s", "a\ufffdb"],
      ["s", "a\ud83d\ude00b"],
    ];
    for (const [i, key] of keys.entries()) await kv.set(key, i);
    for (const a of keys) {
      const storedA = (await kv.get(a)).value;
      for (const b of keys) {
        const storedB = (await kv.get(b)).value;
        assert.equal(
          kvKeyId(a) === kvKeyId(b),
          storedA === storedB,
          `${Deno.inspect(a)} and ${Deno.inspect(b)}`,
        );
      }
    }
  } finally {
    kv.close();
  }
});
