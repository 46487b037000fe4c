import assert from "node:assert/strict";
import { SyscallError } from "../broker/errors.ts";
import { OBJECT_OVERHEAD_BYTES, ObjectMemory, validateName } from "./object_memory.ts";

const NOTE = {
  type: "object",
  properties: { title: { type: "string" }, tags: { type: "array", items: { type: "string" } } },
  required: ["title"],
  additionalProperties: false,
};

async function withMemory(
  fn: (objects: ObjectMemory, kv: Deno.Kv) => Promise<void>,
): Promise<void> {
  const kv = await Deno.openKv(":memory:");
  let clock = 1000;
  try {
    await fn(new ObjectMemory(kv, { now: () => clock++ }), kv);
  } finally {
    kv.close();
  }
}

async function assertCode(
  promise: Promise<unknown>,
  code: string,
  pattern?: RegExp,
): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof SyscallError, `expected a SyscallError, got ${error}`);
    assert.equal(error.code, code, error.message);
    if (pattern) assert.match(error.message, pattern);
    return true;
  });
}

async function countKeys(kv: Deno.Kv, prefix: Deno.KvKey): Promise<number> {
  let n = 0;
  for await (const _ of kv.list({ prefix })) n++;
  return n;
}

Deno.test("put then get returns the value, version 1 and the writer", async () => {
  await withMemory(async (objects) => {
    const put = await objects.put("proc/1", "plan", { steps: ["a", "b"] }, { writer: 1 });
    assert.deepEqual(put, {
      namespace: "proc/1",
      name: "plan",
      version: 1,
      writer: 1,
      updatedAt: 1000,
      value: { steps: ["a", "b"] },
    });
    assert.deepEqual(await objects.get("proc/1", "plan"), put);
  });
});

Deno.test("each put raises the version by one and records its writer", async () => {
  await withMemory(async (objects) => {
    await objects.put("shared", "x", 1, { writer: 3 });
    await objects.put("shared", "x", 2, { writer: 4 });
    const third = await objects.put("shared", "x", 3, { writer: 5 });
    assert.equal(third.version, 3);
    const got = await objects.get("shared", "x");
    assert.equal(got.version, 3);
    assert.equal(got.writer, 5);
    assert.equal(got.value, 3);
  });
});

Deno.test("get of a missing object fails with ENOENT", async () => {
  await withMemory(async (objects) => {
    await assertCode(objects.get("ns", "x"), "ENOENT", /^Cannot get object "ns\/x": not found$/);
  });
});

Deno.test("expectedVersion guards a write and leaves the object unchanged on mismatch", async () => {
  await withMemory(async (objects) => {
    await objects.put("ns", "x", "v1", { writer: 1, expectedVersion: 0 });
    await assertCode(
      objects.put("ns", "x", "again", { writer: 1, expectedVersion: 0 }),
      "EEXIST",
      /^Cannot put object "ns\/x": version 0 expected, found 1$/,
    );
    assert.equal((await objects.get("ns", "x")).value, "v1");
    const ok = await objects.put("ns", "x", "v2", { writer: 1, expectedVersion: 1 });
    assert.equal(ok.version, 2);
  });
});

Deno.test("list returns metadata without values, sorted, with prefix and limit", async () => {
  await withMemory(async (objects) => {
    for (const name of ["b2", "a1", "b1", "c"]) {
      await objects.put("ns", name, { name }, { writer: 2 });
    }
    await objects.put("ns/sub", "b0", 0, { writer: 2 });
    await objects.put("other", "b9", 0, { writer: 2 });
    const all = await objects.list("ns");
    assert.deepEqual(all.map((r) => r.name), ["a1", "b1", "b2", "c"]);
    assert.ok(all.every((r) => !("value" in r)));
    assert.deepEqual((await objects.list("ns", { prefix: "b" })).map((r) => r.name), ["b1", "b2"]);
    assert.deepEqual((await objects.list("ns", { limit: 2 })).map((r) => r.name), ["a1", "b1"]);
    assert.deepEqual(await objects.list("ns", { prefix: "b/" }), []);
    await assertCode(objects.list("ns", { limit: 0 }), "EINVAL");
  });
});

Deno.test("delete removes an object; deleting a missing one fails with ENOENT", async () => {
  await withMemory(async (objects) => {
    await objects.put("ns", "x", 1, { writer: 1 });
    await objects.delete("ns", "x");
    await assertCode(objects.get("ns", "x"), "ENOENT");
    await assertCode(
      objects.delete("ns", "x"),
      "ENOENT",
      /^Cannot delete object "ns\/x": not found$/,
    );
    const fresh = await objects.put("ns", "x", 2, { writer: 1 });
    assert.equal(fresh.version, 1);
  });
});

Deno.test("a typed put accepts a matching value and keeps the type on later puts", async () => {
  await withMemory(async (objects) => {
    await objects.defineType("ns", "note", NOTE, { definer: 1 });
    const first = await objects.put("ns", "n", { title: "hi" }, { writer: 1, type: "note" });
    assert.equal(first.type, "note");
    const second = await objects.put("ns", "n", { title: "again", tags: ["x"] }, { writer: 1 });
    assert.equal(second.type, "note");
    assert.equal((await objects.get("ns", "n")).type, "note");
  });
});

Deno.test("a value that does not match its type fails with EINVAL and nothing is stored", async () => {
  await withMemory(async (objects) => {
    await objects.defineType("ns", "note", NOTE, { definer: 1 });
    await assertCode(
      objects.put("ns", "n", { title: 5 }, { writer: 1, type: "note" }),
      "EINVAL",
      /^Cannot put object "ns\/n": value does not match type "note": title: /,
    );
    await assertCode(objects.get("ns", "n"), "ENOENT");
    // The same object untyped is accepted, so the refusal came from the type.
    await objects.put("ns", "n", { title: 5 }, { writer: 1 });
    // An object once typed keeps being checked without naming the type.
    await objects.put("ns", "m", { title: "ok" }, { writer: 1, type: "note" });
    await assertCode(
      objects.put("ns", "m", { title: "ok", extra: true }, { writer: 2 }),
      "EINVAL",
      /does not match type "note"/,
    );
    const kept = await objects.get("ns", "m");
    assert.deepEqual(kept.value, { title: "ok" });
    assert.equal(kept.version, 1);
  });
});

Deno.test("a put with an undefined type fails with ENOENT", async () => {
  await withMemory(async (objects) => {
    await assertCode(
      objects.put("ns", "x", {}, { writer: 1, type: "note" }),
      "ENOENT",
      /^Cannot put object "ns\/x": type "note" is not defined$/,
    );
    // Types are per namespace.
    await objects.defineType("elsewhere", "note", NOTE, { definer: 1 });
    await assertCode(objects.put("ns", "x", { title: "a" }, { writer: 1, type: "note" }), "ENOENT");
    await assertCode(objects.get("ns", "x"), "ENOENT");
  });
});

Deno.test("defineType is idempotent for the same schema and refuses another", async () => {
  await withMemory(async (objects) => {
    const first = await objects.defineType("ns", "note", NOTE, { definer: 1 });
    const again = await objects.defineType("ns", "note", structuredClone(NOTE), { definer: 2 });
    assert.deepEqual(again, first);
    assert.equal(again.definedBy, 1);
    await assertCode(
      objects.defineType("ns", "note", { type: "string" }, { definer: 2 }),
      "EEXIST",
      /already defined with another schema/,
    );
  });
});

Deno.test("a type stored with a regular expression before they were refused fails every write without running it", async () => {
  await withMemory(async (objects, kv) => {
    const schema = { type: "string", pattern: "^(a+)+$" };
    await kv.set(["obj_type", "ns", "old"], {
      namespace: "ns",
      name: "old",
      schema,
      definedBy: 1,
      definedAt: 0,
      digest: "0".repeat(64),
    });
    await assertCode(
      objects.put("ns", "x", "a".repeat(25) + "b", { writer: 1, type: "old" }),
      "EINVAL",
      /^Cannot put object "ns\/x": value cannot be checked against type "old": "pattern" is not supported \(regular expressions from a process do not run on the host\)$/,
    );
    assert.equal(await countKeys(kv, ["obj", "ns"]), 0);
  });
});

Deno.test("defineType refuses a schema it cannot check", async () => {
  await withMemory(async (objects, kv) => {
    await assertCode(
      objects.defineType("ns", "bad", { type: "nonsense" }, { definer: 1 }),
      "EINVAL",
      /^Cannot define type "ns\/bad": "type" must be one of /,
    );
    await assertCode(
      objects.defineType("ns", "bad", { $ref: "#/$defs/missing" }, { definer: 1 }),
      "EINVAL",
    );
    assert.equal(await countKeys(kv, ["obj_type", "ns"]), 0);
  });
});

Deno.test("values that are not JSON fail with EINVAL and nothing is stored", async () => {
  await withMemory(async (objects, kv) => {
    const cyclic: Record<string, unknown> = { a: 1 };
    cyclic.self = cyclic;
    const cases: [unknown, RegExp][] = [
      [{ f: () => 1 }, /value at "f" is not JSON \(a function\)/],
      [10n, /value is not JSON \(a bigint\)/],
      [cyclic, /value at "self" is not JSON \(a cycle\)/],
      [[1, undefined], /value at "1" is not JSON \(undefined\)/],
      [{ n: NaN }, /value at "n" is not JSON \(the number NaN\)/],
      [{ d: new Date(0) }, /value at "d" is not JSON \(a Date object\)/],
    ];
    for (const [value, pattern] of cases) {
      await assertCode(objects.put("ns", "x", value, { writer: 1 }), "EINVAL", pattern);
    }
    assert.equal(await countKeys(kv, ["obj", "ns"]), 0);
    // Shared (non-cyclic) references are plain JSON.
    const shared = { k: 1 };
    const ok = await objects.put("ns", "x", { a: shared, b: shared }, { writer: 1 });
    assert.deepEqual(ok.value, { a: { k: 1 }, b: { k: 1 } });
  });
});

Deno.test("a large value is stored in chunks and read back equal", async () => {
  await withMemory(async (objects, kv) => {
    const text = "é漢x".repeat(50_000); // about 300 KiB of UTF-8
    const value = { text, list: Array.from({ length: 2000 }, (_, i) => i / 7) };
    await objects.put("ns", "big", value, { writer: 1 });
    const chunks = await countKeys(kv, ["obj_chunk", "ns", "big"]);
    assert.ok(chunks > 1, `expected several chunks, found ${chunks}`);
    const raw = await kv.get<Record<string, unknown>>(["obj", "ns", "big"]);
    assert.equal(raw.value?.data, undefined);
    assert.deepEqual((await objects.get("ns", "big")).value, value);

    // Overwriting with a small value removes the old chunks.
    await objects.put("ns", "big", "small", { writer: 1 });
    assert.equal(await countKeys(kv, ["obj_chunk", "ns", "big"]), 0);
    assert.equal((await objects.get("ns", "big")).value, "small");

    // Deleting a chunked object removes its chunks.
    await objects.put("ns", "big", value, { writer: 1 });
    await objects.delete("ns", "big");
    assert.equal(await countKeys(kv, ["obj_chunk", "ns"]), 0);
  });
});

Deno.test("a value of almost 1 MiB is accepted and one over 1 MiB is refused", async () => {
  await withMemory(async (objects, kv) => {
    const near = "a".repeat(1024 * 1024 - 2); // with its quotes: exactly 1 MiB
    await objects.put("ns", "edge", near, { writer: 1 });
    assert.equal((await objects.get("ns", "edge")).value, near);
    await assertCode(
      objects.put("ns", "over", near + "a", { writer: 1 }),
      "EINVAL",
      /more than the 1048576 allowed/,
    );
    await assertCode(objects.get("ns", "over"), "ENOENT");
    const chunks = await countKeys(kv, ["obj_chunk", "ns"]);
    assert.equal(chunks, await countKeys(kv, ["obj_chunk", "ns", "edge"]));
  });
});

Deno.test("a chunked value failing its inherited type leaves no chunks behind", async () => {
  await withMemory(async (objects, kv) => {
    await objects.defineType("ns", "note", NOTE, { definer: 1 });
    await objects.put("ns", "n", { title: "short" }, { writer: 1, type: "note" });
    await assertCode(
      objects.put("ns", "n", { title: 7, tags: ["x".repeat(100_000)] }, { writer: 1 }),
      "EINVAL",
    );
    assert.equal(await countKeys(kv, ["obj_chunk", "ns"]), 0);
    assert.deepEqual((await objects.get("ns", "n")).value, { title: "short" });
  });
});

Deno.test("concurrent puts to one object all commit with distinct versions", async () => {
  await withMemory(async (objects) => {
    const n = 20;
    const records = await Promise.all(
      Array.from({ length: n }, (_, i) => objects.put("ns", "counter", i, { writer: i + 1 })),
    );
    const versions = records.map((r) => r.version).sort((a, b) => a - b);
    assert.deepEqual(versions, Array.from({ length: n }, (_, i) => i + 1));
    const last = records.find((r) => r.version === n)!;
    const got = await objects.get("ns", "counter");
    assert.equal(got.version, n);
    assert.equal(got.value, last.value);
    assert.equal(got.writer, last.writer);
  });
});

Deno.test("concurrent chunked puts leave exactly one chunk set", async () => {
  await withMemory(async (objects, kv) => {
    const values = Array.from({ length: 4 }, (_, i) => String(i).repeat(100_000));
    await Promise.all(values.map((v) => objects.put("ns", "big", v, { writer: 1 })));
    const got = await objects.get("ns", "big");
    assert.equal(got.version, 4);
    assert.ok(values.includes(got.value as string));
    assert.equal(await countKeys(kv, ["obj_chunk", "ns", "big"]), 2);
  });
});

Deno.test("copyNamespace copies objects, chunks and types", async () => {
  await withMemory(async (objects, kv) => {
    await objects.defineType("proc/1", "note", NOTE, { definer: 1 });
    await objects.put("proc/1", "n", { title: "t" }, { writer: 1, type: "note" });
    await objects.put("proc/1", "n", { title: "t2" }, { writer: 1 });
    const big = "z".repeat(200_000);
    await objects.put("proc/1", "big", big, { writer: 1 });
    await objects.put("proc/10", "unrelated", 1, { writer: 10 });

    assert.equal(await objects.copyNamespace("proc/1", "proc/2"), 2);
    const copied = await objects.get("proc/2", "n");
    assert.deepEqual(copied, { ...(await objects.get("proc/1", "n")), namespace: "proc/2" });
    assert.equal(copied.version, 2);
    assert.equal((await objects.get("proc/2", "big")).value, big);
    await assertCode(objects.get("proc/2", "unrelated"), "ENOENT");
    // The type came along and is enforced in the copy.
    await assertCode(objects.put("proc/2", "n", { title: 1 }, { writer: 2 }), "EINVAL");

    // The copy is independent: deleting the source keeps the copy readable.
    await objects.delete("proc/1", "big");
    assert.equal((await objects.get("proc/2", "big")).value, big);

    // Copying again replaces rather than duplicates.
    assert.equal(await objects.copyNamespace("proc/1", "proc/2"), 1);
    assert.equal(await countKeys(kv, ["obj", "proc/2"]), 2);
  });
});

Deno.test("copyNamespace refuses a target with a conflicting type and copies nothing", async () => {
  await withMemory(async (objects) => {
    await objects.defineType("a", "note", NOTE, { definer: 1 });
    await objects.put("a", "x", { title: "t" }, { writer: 1 });
    await objects.defineType("b", "note", { type: "string" }, { definer: 2 });
    await assertCode(objects.copyNamespace("a", "b"), "EEXIST", /type "note"/);
    assert.deepEqual(await objects.list("b"), []);
    await assertCode(objects.copyNamespace("a", "a"), "EINVAL");
  });
});

Deno.test("validateName accepts good names and rejects traversal, empties and NUL", () => {
  validateName("namespace", "proc/12");
  validateName("namespace", "shared/notes.v2/a_b-c");
  validateName("object", "a.b_c-1");
  validateName("type", "note");
  const badNamespaces = [
    "../x",
    "a//b",
    "",
    "a\0b",
    "/a",
    "a/",
    "a/../b",
    "a/..",
    "x y",
    "a".repeat(201),
  ];
  for (const bad of badNamespaces) {
    assert.throws(
      () => validateName("namespace", bad),
      (e: unknown) =>
        e instanceof SyscallError && e.code === "EINVAL" && /^Cannot use namespace/.test(e.message),
      `namespace ${JSON.stringify(bad)} was accepted`,
    );
  }
  for (const bad of ["../x", "a/b", "", "a\0b", "a b", "x".repeat(201)]) {
    assert.throws(
      () => validateName("object", bad),
      SyscallError,
      `object ${JSON.stringify(bad)} was accepted`,
    );
    assert.throws(
      () => validateName("type", bad),
      SyscallError,
      `type ${JSON.stringify(bad)} was accepted`,
    );
  }
  assert.throws(() => validateName("namespace", "a\0b"), /"a\\u0000b"/);
});

Deno.test("operations refuse bad names before touching the store", async () => {
  await withMemory(async (objects, kv) => {
    await assertCode(objects.put("../x", "a", 1, { writer: 1 }), "EINVAL");
    await assertCode(objects.put("ns", "../a", 1, { writer: 1 }), "EINVAL");
    await assertCode(objects.put("ns", "a", 1, { writer: 1, type: "a/b" }), "EINVAL");
    await assertCode(objects.defineType("a//b", "t", NOTE, { definer: 1 }), "EINVAL");
    await assertCode(objects.list("a\0b"), "EINVAL");
    assert.equal(await countKeys(kv, []), 0);
    // The same value under good names is stored.
    await objects.put("ns", "a", 1, { writer: 1 });
    assert.equal(await countKeys(kv, []), 1);
  });
});

Deno.test("writes charge their payer, and overwrites and deletes give the bytes back", async () => {
  const kv = await Deno.openKv(":memory:");
  try {
    const moves: { pid: number; bytes: number }[][] = [];
    const objects = new ObjectMemory(kv, {
      meter: {
        prepareCharges: (changes) => {
          return Promise.resolve({
            result: undefined,
            apply: (op: Deno.AtomicOperation) => {
              moves.push([...changes]);
              op.sum(["moves"], 1n);
            },
          });
        },
      },
    });
    const size = (value: unknown) => JSON.stringify(value).length + OBJECT_OVERHEAD_BYTES;
    await objects.put("shared", "a", "x".repeat(100), { writer: 1, chargeTo: 1 });
    await objects.put("shared", "a", "y", { writer: 2, chargeTo: 2 });
    await objects.put("shared", "b", "z", { writer: 9 }); // an operator's write: nobody pays
    await objects.copyNamespace("shared", "copy", { chargeTo: 3 });
    await objects.delete("shared", "a");
    await objects.delete("copy", "b");
    assert.deepEqual(moves, [
      [{ pid: 1, bytes: size("x".repeat(100)) }],
      [{ pid: 2, bytes: size("y") }, { pid: 1, bytes: -size("x".repeat(100)) }],
      [{ pid: 3, bytes: size("y") }],
      [{ pid: 3, bytes: size("z") }],
      [{ pid: 2, bytes: -size("y") }],
      [{ pid: 3, bytes: -size("z") }],
    ]);
  } finally {
    kv.close();
  }
});

Deno.test("a write its meter refuses stores nothing, not even a large value's chunks", async () => {
  const kv = await Deno.openKv(":memory:");
  try {
    const objects = new ObjectMemory(kv, {
      meter: {
        prepareCharges: () => Promise.reject(new SyscallError("EBUDGET", "Cannot put: over quota")),
      },
    });
    await assertCode(
      objects.put("proc/1", "big", "x".repeat(500_000), { writer: 1, chargeTo: 1 }),
      "EBUDGET",
    );
    assert.equal(await countKeys(kv, ["obj"]), 0);
    assert.equal(await countKeys(kv, ["obj_chunk"]), 0);
  } finally {
    kv.close();
  }
});
