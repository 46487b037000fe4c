import assert from "node:assert/strict";
import { join } from "node:path";
import { canonicalJson, digestOf, sha256Hex } from "../broker/digest.ts";
import { SyscallError } from "../broker/errors.ts";
import {
  type AgentImage,
  AgentImageSchema,
  imageDigest,
  ImageError,
  ImageRegistry,
  imageTag,
  loadImageFile,
  parseImage,
} from "./image.ts";

const SUMMARIZER = {
  name: "summarizer",
  version: "1.0.0",
  description: "Reads a repository and writes a summary",
  entry: "libos:agent",
  model: { provider: "openai", name: "gpt-4o-mini" },
  system: "You summarize repositories.",
  tools: ["read_file", "list_dir", "write_file", "ask_human", "exit"],
  capabilities: ["fs:read:**", "fs:write:out/**"],
  policy: { "exec:run:*": "ask" },
  budget: { toolCalls: 200, tokens: 200000, children: 4, wallMs: 3600000 },
};

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir();
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function withRegistry(
  fn: (registry: ImageRegistry, kv: Deno.Kv) => Promise<void>,
): Promise<void> {
  const kv = await Deno.openKv(":memory:");
  try {
    await fn(new ImageRegistry(kv), kv);
  } finally {
    kv.close();
  }
}

function image(overrides: Partial<AgentImage> = {}): AgentImage {
  return { ...parseImage('{"name":"demo","version":"1.0.0"}'), ...overrides };
}

/** The one-line error `fn` throws, asserting it is an ImageError. */
function imageErrorOf(fn: () => unknown): string {
  try {
    fn();
  } catch (error) {
    assert.ok(error instanceof ImageError, String(error));
    assert.equal(error.message.includes("\n"), false, error.message);
    return error.message;
  }
  return assert.fail("expected an ImageError");
}

async function rejectionOf(promise: Promise<unknown>): Promise<Error> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof Error);
    return error;
  }
  return assert.fail("expected a rejection");
}

Deno.test("parseImage() reads the SPEC example and keeps every field", () => {
  const parsed = parseImage(JSON.stringify(SUMMARIZER), { source: "s.json" });
  assert.deepEqual(parsed, SUMMARIZER);
  assert.equal(imageTag(parsed), "summarizer@1.0.0");
});

Deno.test("parseImage() applies defaults", () => {
  assert.deepEqual(parseImage('{"name":"a","version":"1"}'), {
    name: "a",
    version: "1",
    entry: "libos:agent",
    tools: [],
    capabilities: [],
    policy: {},
  });
});

Deno.test("parseImage() reads YAML by format or extension", () => {
  const yaml = [
    "name: summarizer",
    "version: 1.0.0",
    "tools: [read_file, exit]",
    "capabilities:",
    '  - "fs:read:**"',
    "policy:",
    '  "exec:run:*": ask',
    "budget: { tokens: 1000 }",
  ].join("\n");
  const expected = {
    name: "summarizer",
    version: "1.0.0",
    entry: "libos:agent",
    tools: ["read_file", "exit"],
    capabilities: ["fs:read:**"],
    policy: { "exec:run:*": "ask" },
    budget: { tokens: 1000 },
  };
  assert.deepEqual(parseImage(yaml, { format: "yaml" }), expected);
  assert.deepEqual(parseImage(yaml, { source: "img.yml" }), expected);
  assert.deepEqual(parseImage(yaml), expected);
});

Deno.test("parseImage() errors are one line with the source and path", () => {
  const bad = (patch: Record<string, unknown>) =>
    imageErrorOf(() =>
      parseImage(JSON.stringify({ ...SUMMARIZER, ...patch }), {
        source: "x.json",
      })
    );
  assert.equal(
    bad({ budget: { tokens: -5 } }),
    'Cannot load image "x.json": budget.tokens: expected a positive integer',
  );
  assert.equal(
    bad({ budget: { tokens: 1.5 } }),
    'Cannot load image "x.json": budget.tokens: expected a positive integer',
  );
  assert.equal(
    bad({ limits: { memoryMb: 0 } }),
    'Cannot load image "x.json": limits.memoryMb: expected a positive integer',
  );
  assert.equal(
    bad({ limits: { maxMessageBytes: 1024, stackMb: 1 } }),
    'Cannot load image "x.json": limits: unknown field "stackMb"',
  );
  assert.equal(
    bad({ extra: true }),
    'Cannot load image "x.json": unknown field "extra"',
  );
  assert.equal(
    bad({ budget: { coins: 3 } }),
    'Cannot load image "x.json": budget: unknown field "coins"',
  );
  assert.equal(
    bad({ tools: ["read_file", 7] }),
    'Cannot load image "x.json": tools[1]: expected string, got number',
  );
  assert.equal(
    bad({ policy: { "fs:read:**": "maybe" } }),
    'Cannot load image "x.json": policy["fs:read:**"]: expected one of "allow", "deny", "ask"',
  );
  assert.match(
    bad({ name: "Bad Name" }),
    /^Cannot load image "x\.json": name: expected a lowercase name/,
  );
  assert.match(bad({ version: "" }), /: version: expected a version/);
  assert.match(bad({ tools: ["exit", "exit"] }), /tools\[1\]: duplicate tool "exit"/);
  assert.equal(
    imageErrorOf(() => parseImage('{"version":"1"}', { source: "x.json" })),
    'Cannot load image "x.json": name: is required',
  );
  assert.match(
    imageErrorOf(() => parseImage("{ nope", { source: "x.json" })),
    /^Cannot load image "x\.json": invalid JSON: /,
  );
  assert.match(
    imageErrorOf(() => parseImage("a: [1\n", { source: "x.yaml" })),
    /^Cannot load image "x\.yaml": invalid YAML: /,
  );
  assert.match(
    imageErrorOf(() => parseImage("[1, 2]", { format: "json" })),
    /^Cannot load image: expected object, got array$/,
  );
});

Deno.test("parseImage() names a bad capability and a bad policy rule", () => {
  const capMessage = imageErrorOf(() =>
    parseImage(
      JSON.stringify({ ...SUMMARIZER, capabilities: ["fs:read:**", "bogus:x:y"] }),
      { source: "x.json" },
    )
  );
  assert.match(capMessage, /^Cannot load image "x\.json": capabilities\[1\]: /);
  assert.ok(capMessage.includes('"bogus:x:y"'), capMessage);

  const policyMessage = imageErrorOf(() =>
    parseImage(
      JSON.stringify({ ...SUMMARIZER, policy: { "bogus:x:y": "deny" } }),
      { source: "x.json" },
    )
  );
  assert.match(policyMessage, /^Cannot load image "x\.json": policy: /);
  assert.ok(policyMessage.includes("bogus:x:y"), policyMessage);
});

Deno.test("parseImage() accepts only relative module entries inside the directory", () => {
  for (const entry of ["main.ts", "./agents/main.js", "src/a.b.ts"]) {
    assert.equal(
      parseImage(JSON.stringify({ name: "a", version: "1", entry })).entry,
      entry,
    );
  }
  for (
    const entry of [
      "../main.ts",
      "a/../../main.ts",
      "/etc/main.ts",
      "C:/main.ts",
      "https://evil.test/main.ts",
      "file:///tmp/main.ts",
      "main.py",
      "a\\..\\main.ts",
      "a//main.ts",
      "libos:other",
    ]
  ) {
    const message = imageErrorOf(() =>
      parseImage(JSON.stringify({ name: "a", version: "1", entry }))
    );
    assert.match(message, /entry: expected "libos:agent" or a relative module/);
  }
});

Deno.test("parseImage() refuses an image too large to store", () => {
  const message = imageErrorOf(() =>
    parseImage(JSON.stringify({ name: "a", version: "1", system: "x".repeat(40_000) }))
  );
  assert.match(message, /over the limit of 30000/);
});

Deno.test("AgentImageSchema is strict and fills defaults", () => {
  assert.equal(AgentImageSchema.safeParse({ name: "a", version: "1", x: 1 }).success, false);
  const parsed = AgentImageSchema.parse({ name: "a", version: "1" });
  assert.deepEqual(parsed.tools, []);
  assert.equal(parsed.entry, "libos:agent");
});

Deno.test("imageDigest() is the SHA-256 of the canonical JSON", async () => {
  const parsed = parseImage(JSON.stringify(SUMMARIZER));
  assert.equal(await imageDigest(parsed), await sha256Hex(canonicalJson(parsed)));
  const reordered = Object.fromEntries(Object.entries(SUMMARIZER).reverse());
  assert.equal(
    await imageDigest(parseImage(JSON.stringify(reordered))),
    await imageDigest(parsed),
  );
  assert.notEqual(
    await imageDigest({ ...parsed, system: "Something else." }),
    await imageDigest(parsed),
  );
});

Deno.test("loadImageFile() reads JSON and YAML files", async () => {
  await withTempDir(async (dir) => {
    await Deno.writeTextFile(join(dir, "a.json"), JSON.stringify(SUMMARIZER));
    await Deno.writeTextFile(join(dir, "b.yaml"), "name: b\nversion: 2.0.0\n");
    assert.deepEqual((await loadImageFile(join(dir, "a.json"))).image, SUMMARIZER);
    const loaded = await loadImageFile(join(dir, "b.yaml"));
    assert.equal(imageTag(loaded.image), "b@2.0.0");
    assert.equal(loaded.entrySource, undefined);
  });
});

Deno.test("loadImageFile() reads a module entry relative to the image file", async () => {
  await withTempDir(async (dir) => {
    await Deno.mkdir(join(dir, "img", "src"), { recursive: true });
    const source = "export default async function main() { return 1; }\n";
    await Deno.writeTextFile(join(dir, "img", "src", "main.ts"), source);
    await Deno.writeTextFile(
      join(dir, "img", "m.json"),
      '{"name":"m","version":"1","entry":"src/main.ts"}',
    );
    const loaded = await loadImageFile(join(dir, "img", "m.json"));
    assert.equal(loaded.entrySource, source);
  });
});

Deno.test("loadImageFile() refuses entries that escape the image's directory", async () => {
  await withTempDir(async (dir) => {
    const secret = "SECRET-OUTSIDE-SOURCE";
    await Deno.mkdir(join(dir, "img"));
    await Deno.writeTextFile(join(dir, "outside.ts"), `export const s = "${secret}";`);
    await Deno.symlink(join(dir, "outside.ts"), join(dir, "img", "link.ts"));

    const cases = [
      ["up.json", "../outside.ts"],
      ["abs.json", join(dir, "outside.ts")],
      ["link.json", "link.ts"],
    ];
    for (const [file, entry] of cases) {
      const path = join(dir, "img", file);
      await Deno.writeTextFile(path, JSON.stringify({ name: "e", version: "1", entry }));
      const error = await rejectionOf(loadImageFile(path));
      assert.ok(error instanceof ImageError, String(error));
      assert.ok(error.message.startsWith(`Cannot load image "${path}": `), error.message);
      assert.equal(error.message.includes(secret), false);
    }

    // The same module inside the directory loads.
    await Deno.copyFile(join(dir, "outside.ts"), join(dir, "img", "inside.ts"));
    const ok = join(dir, "img", "ok.json");
    await Deno.writeTextFile(ok, '{"name":"e","version":"1","entry":"inside.ts"}');
    assert.ok((await loadImageFile(ok)).entrySource?.includes(secret));
  });
});

Deno.test("loadImageFile() gives one clear line for unreadable files", async () => {
  await withTempDir(async (dir) => {
    const missing = join(dir, "missing.json");
    assert.equal(
      (await rejectionOf(loadImageFile(missing))).message,
      `Cannot load image "${missing}": no such file`,
    );
    const txt = join(dir, "image.txt");
    await Deno.writeTextFile(txt, "{}");
    assert.match(
      (await rejectionOf(loadImageFile(txt))).message,
      /expected a \.json, \.yaml or \.yml file$/,
    );
    const big = join(dir, "big.json");
    await Deno.writeTextFile(big, " ".repeat(1024 * 1024 + 1));
    assert.match((await rejectionOf(loadImageFile(big))).message, /over 1 MiB$/);

    const noEntry = join(dir, "noentry.json");
    await Deno.writeTextFile(noEntry, '{"name":"e","version":"1","entry":"gone.ts"}');
    assert.equal(
      (await rejectionOf(loadImageFile(noEntry))).message,
      `Cannot load image "${noEntry}": cannot read entry "gone.ts": no such file`,
    );
    await Deno.mkdir(join(dir, "dir.ts"));
    const dirEntry = join(dir, "direntry.json");
    await Deno.writeTextFile(dirEntry, '{"name":"e","version":"1","entry":"dir.ts"}');
    assert.match(
      (await rejectionOf(loadImageFile(dirEntry))).message,
      /cannot read entry "dir\.ts": not a regular file$/,
    );
  });
});

Deno.test("register() stores by tag and digest; get() finds both", async () => {
  await withRegistry(async (registry) => {
    const parsed = parseImage(JSON.stringify(SUMMARIZER));
    const registered = await registry.register(parsed);
    assert.equal(registered.tag, "summarizer@1.0.0");
    assert.equal(registered.digest, await imageDigest(parsed));
    assert.deepEqual(registered.image, parsed);

    for (
      const ref of [
        "summarizer@1.0.0",
        registered.digest,
        `sha256:${registered.digest}`,
      ]
    ) {
      assert.deepEqual(await registry.get(ref), registered, ref);
    }
    assert.equal(await registry.get("summarizer@9.9.9"), undefined);
    assert.equal(await registry.get("f".repeat(64)), undefined);
  });
});

Deno.test("get() reads an image from the store once; what it remembers no reader can change", async () => {
  const kv = await Deno.openKv(":memory:");
  try {
    const registry = new ImageRegistry(kv);
    const registered = await registry.register(
      parseImage(JSON.stringify({
        name: "prog",
        version: "1.0.0",
        entry: "./main.ts",
      })),
      { entrySource: "export default () => 1;" },
    );
    let reads = 0;
    const [get, list] = [kv.get.bind(kv), kv.list.bind(kv)];
    kv.get = ((key: Deno.KvKey) => (reads++, get(key))) as typeof kv.get;
    kv.list = ((selector: Deno.KvListSelector) => (reads++, list(selector))) as typeof kv.list;
    const first = await registry.get("prog@1.0.0");
    const readsOfFirst = reads;
    assert.ok(readsOfFirst > 0);
    const again = await registry.get("prog@1.0.0");
    const byDigest = await registry.get(registered.digest);
    assert.equal(reads, readsOfFirst, "no store read after the first");
    assert.equal(again?.entrySource, "export default () => 1;");
    assert.equal(byDigest, first);
    assert.throws(() => {
      (first!.image as { capabilities: string[] }).capabilities.push("fs:write:**");
    }, TypeError);
    assert.deepEqual((await registry.get("prog@1.0.0"))?.image.capabilities, []);
  } finally {
    kv.close();
  }
});

Deno.test("register() is idempotent and refuses a taken tag", async () => {
  await withRegistry(async (registry, kv) => {
    const first = await registry.register(image({ system: "one" }));
    const again = await registry.register(image({ system: "one" }));
    assert.deepEqual(again, first);

    const error = await rejectionOf(registry.register(image({ system: "two" })));
    assert.ok(error instanceof SyscallError);
    assert.equal(error.code, "EEXIST");
    assert.equal(
      error.message,
      'Cannot register image "demo@1.0.0": the tag is already taken by other content',
    );
    assert.equal((await kv.get(["image", "tag", "demo@1.0.0"])).value, first.digest);
    assert.equal((await registry.get("demo@1.0.0"))?.image.system, "one");
  });
});

Deno.test("concurrent registrations of one tag: exactly one content wins", async () => {
  await withRegistry(async (registry) => {
    const attempts = Array.from(
      { length: 8 },
      (_, i) => registry.register(image({ system: `variant ${i % 2}` })),
    );
    const results = await Promise.allSettled(attempts);
    const winners = results.flatMap((r) => r.status === "fulfilled" ? [r.value] : []);
    assert.ok(winners.length >= 1);
    assert.equal(new Set(winners.map((w) => w.digest)).size, 1);
    for (const r of results) {
      if (r.status === "rejected") {
        assert.equal((r.reason as SyscallError).code, "EEXIST");
      }
    }
    const stored = await registry.get("demo@1.0.0");
    assert.equal(stored?.digest, winners[0].digest);
    assert.equal((await registry.list()).length, 1);
  });
});

Deno.test("register() covers the entry source in the digest", async () => {
  await withRegistry(async (registry) => {
    const mod = image({ entry: "main.ts" });
    const source = "export default async function main() {}\n";
    const registered = await registry.register(mod, { entrySource: source });
    const entryDigest = await sha256Hex(source);
    assert.equal(registered.entryDigest, entryDigest);
    assert.equal(registered.digest, await digestOf({ entryDigest, image: mod }));
    assert.notEqual(registered.digest, await imageDigest(mod));
    assert.equal((await registry.get("demo@1.0.0"))?.entrySource, source);

    // Same image, other source: the tag is taken by other content.
    const error = await rejectionOf(
      registry.register(mod, { entrySource: source + "// changed\n" }),
    );
    assert.equal((error as SyscallError).code, "EEXIST");
    assert.equal((await registry.get("demo@1.0.0"))?.entrySource, source);
  });
});

Deno.test("register() stores a large entry source in chunks", async () => {
  await withRegistry(async (registry, kv) => {
    const source = "// ünïcödé ✓\n" + "const x = 1;\n".repeat(60_000);
    assert.ok(source.length > 600_000);
    const registered = await registry.register(image({ entry: "big.ts" }), {
      entrySource: source,
    });
    const chunks = await Array.fromAsync(
      kv.list({ prefix: ["image", "src", registered.entryDigest!] }),
    );
    assert.ok(chunks.length > 1);
    assert.equal((await registry.get(registered.digest))?.entrySource, source);
  });
});

Deno.test("get() refuses a damaged entry source", async () => {
  await withRegistry(async (registry, kv) => {
    const registered = await registry.register(image({ entry: "main.ts" }), {
      entrySource: "export default () => 1;",
    });
    await kv.set(["image", "src", registered.entryDigest!, 0], "export default () => 2;");
    const error = await rejectionOf(registry.get("demo@1.0.0"));
    assert.ok(error instanceof ImageError);
    assert.match(error.message, /entry source is missing or damaged/);
  });
});

Deno.test("register() validates the image and its entry source", async () => {
  await withRegistry(async (registry) => {
    const cases: [AgentImage, string | undefined, RegExp][] = [
      [
        { ...image(), budget: { tokens: 0 } },
        undefined,
        /budget\.tokens: expected a positive integer/,
      ],
      [{ ...image(), capabilities: ["nope"] }, undefined, /capabilities\[0\]/],
      [image({ entry: "main.ts" }), undefined, /entry "main\.ts" needs its module source/],
      [image(), "export default 1;", /takes no module source/],
      [image({ entry: "../x.ts" }), "export default 1;", /entry: expected/],
    ];
    for (const [img, entrySource, pattern] of cases) {
      const error = await rejectionOf(registry.register(img, { entrySource }));
      assert.ok(error instanceof SyscallError, String(error));
      assert.equal(error.code, "EINVAL");
      assert.match(error.message, pattern);
    }
    assert.deepEqual(await registry.list(), []);
  });
});

Deno.test("list() returns images sorted by tag, without sources", async () => {
  await withRegistry(async (registry) => {
    await registry.register(image({ name: "zeta" }));
    await registry.register(image({ name: "alpha", entry: "a.ts" }), {
      entrySource: "export default 1;",
    });
    await registry.register(image({ name: "mid" }));
    const listed = await registry.list();
    assert.deepEqual(listed.map((i) => i.tag), ["alpha@1.0.0", "mid@1.0.0", "zeta@1.0.0"]);
    assert.ok(listed.every((i) => i.entrySource === undefined));
    assert.ok(listed[0].entryDigest);
  });
});
