/**
 * Object Memory through syscalls (SPEC section 9): a private namespace per
 * process, shared namespaces only through `obj:` capabilities, types
 * enforced on every write, versions and writer pids recorded.
 */

import assert from "node:assert/strict";
import {
  type Attempt,
  everythingAbout,
  failed,
  program,
  succeeded,
  withKernel,
} from "./_programs.ts";
import { FROZEN_MS, watchHealth } from "./_liveness.ts";

const CANARY = "CANARY-" + crypto.randomUUID();

interface Stored {
  namespace: string;
  name: string;
  value: unknown;
  type?: string;
  version: number;
  writer: number;
}

Deno.test("a process reads and writes its private namespace as self", async () => {
  await withKernel(async (h) => {
    const end = await h.run(program(`
      const first = await sys.obj.put("self", "note", { text: "one" });
      const second = await sys.obj.put("self", "note", { text: "two" });
      const got = await sys.obj.get("self", "note");
      const explicit = await sys.obj.get("proc/" + (await sys.proc.self()).pid, "note");
      await sys.obj.put("self", "other", 1);
      const list = await sys.obj.list("self");
      await sys.obj.delete("self", "other");
      return {
        first, second, got, explicit, list,
        afterDelete: (await sys.obj.list("self")).map((o) => o.name),
        deleted: await attempt(() => sys.obj.get("self", "other")),
      };
    `));
    assert.equal(end.state, "exited", end.error?.message);
    const result = end.result as Record<string, unknown>;
    assert.deepEqual(result.first, { version: 1 });
    assert.deepEqual(result.second, { version: 2 });
    const got = result.got as Stored;
    assert.deepEqual(got.value, { text: "two" });
    assert.equal(got.namespace, `proc/${end.pid}`);
    assert.equal(got.version, 2);
    assert.equal(got.writer, end.pid);
    assert.deepEqual(result.explicit, result.got);
    assert.deepEqual((result.list as Stored[]).map((o) => [o.name, o.version]), [
      ["note", 2],
      ["other", 1],
    ]);
    assert.deepEqual(result.afterDelete, ["note"]);
    failed(result.deleted, "ENOENT");
    const stored = await h.kernel.objects.get(`proc/${end.pid}`, "note");
    assert.equal(stored.writer, end.pid);
  });
});

Deno.test("another process's private namespace is denied, and its values never leak", async () => {
  await withKernel(async (h) => {
    const owner = await h.run(
      program(`
      await sys.obj.put("self", "secret", { token: input });
      return (await sys.proc.self()).pid;
    `),
      { input: CANARY },
    );
    assert.equal(owner.state, "exited", owner.error?.message);
    const ns = `proc/${owner.pid}`;
    const thief = await h.run(
      program(`
        const ns = input;
        return {
          get: await attempt(() => sys.obj.get(ns, "secret")),
          list: await attempt(() => sys.obj.list(ns)),
          put: await attempt(() => sys.obj.put(ns, "secret", { token: "replaced" })),
          remove: await attempt(() => sys.obj.delete(ns, "secret")),
          define: await attempt(() => sys.obj.defineType(ns, "t", { type: "string" })),
        };
      `),
      { input: ns },
    );
    assert.equal(thief.state, "exited", thief.error?.message);
    for (const [name, attempt] of Object.entries(thief.result as Record<string, Attempt>)) {
      assert.equal(attempt.ok, false, `${name} was allowed`);
      assert.equal((attempt as { code: string }).code, "EPERM", name);
    }
    const kept = await h.kernel.objects.get(ns, "secret");
    assert.deepEqual(kept.value, { token: CANARY });
    assert.equal(kept.version, 1);
    assert.equal(kept.writer, owner.pid);
    assert.ok(!(await everythingAbout(h.kernel, thief.pid)).includes(CANARY));
  });
});

Deno.test("a shared namespace needs an obj capability with the right right", async () => {
  await withKernel(async (h) => {
    const writer = await h.run(
      program(`return {
        put: await attempt(() => sys.obj.put("shared/notes", "n1", { text: "hello" })),
        again: await attempt(() => sys.obj.put("shared/notes", "n1", { text: "hello again" })),
        elsewhere: await attempt(() => sys.obj.put("shared/other", "n1", 1)),
      };`),
      { image: { capabilities: ["obj:read,write:shared/notes"] } },
    );
    const w = writer.result as Record<string, Attempt>;
    assert.deepEqual(succeeded(w.put), { version: 1 });
    assert.deepEqual(succeeded(w.again), { version: 2 });
    failed(w.elsewhere, "EPERM", /no capability grants obj:write/);

    const source = program(`return {
      get: await attempt(() => sys.obj.get("shared/notes", "n1")),
      put: await attempt(() => sys.obj.put("shared/notes", "n1", { text: "overwritten" })),
      remove: await attempt(() => sys.obj.delete("shared/notes", "n1")),
    };`);
    const reader = await h.run(source, { image: { capabilities: ["obj:read:shared/notes"] } });
    const r = reader.result as Record<string, Attempt>;
    const got = succeeded<Stored>(r.get);
    assert.deepEqual(got.value, { text: "hello again" });
    assert.equal(got.writer, writer.pid);
    assert.equal(got.version, 2);
    failed(r.put, "EPERM");
    failed(r.remove, "EPERM");

    const stranger = await h.run(source);
    for (const attempt of Object.values(stranger.result as Record<string, Attempt>)) {
      failed(attempt, "EPERM");
    }
    const kept = await h.kernel.objects.get("shared/notes", "n1");
    assert.equal(kept.version, 2);
    assert.equal(kept.writer, writer.pid);
  });
});

Deno.test("a namespace glob in a capability covers only the namespaces it names", async () => {
  await withKernel(async (h) => {
    const end = await h.run(
      program(`return {
        inside: await attempt(() => sys.obj.put("team/a", "x", 1)),
        deeper: await attempt(() => sys.obj.put("team/a/b", "x", 1)),
        sibling: await attempt(() => sys.obj.put("teams/a", "x", 1)),
        dots: await attempt(() => sys.obj.put("team/../proc/1", "x", 1)),
      };`),
      { image: { capabilities: ["obj:write:team/*"] } },
    );
    const result = end.result as Record<string, Attempt>;
    succeeded(result.inside);
    failed(result.deeper, "EPERM");
    failed(result.sibling, "EPERM");
    assert.equal(result.dots.ok, false);
    assert.deepEqual(await h.kernel.objects.list("proc/1"), []);
  });
});

Deno.test("types are enforced on every write and a rejected value is not stored", async () => {
  await withKernel(async (h) => {
    const end = await h.run(program(`
      const schema = {
        type: "object",
        properties: { title: { type: "string" }, stars: { type: "integer", minimum: 0 } },
        required: ["title"],
        additionalProperties: false,
      };
      const out = {};
      out.define = await attempt(() => sys.obj.defineType("self", "note", schema));
      out.invalid = await attempt(() => sys.obj.put("self", "n", { stars: -1 }, { type: "note" }));
      out.afterInvalid = await attempt(() => sys.obj.get("self", "n"));
      out.valid = await attempt(() => sys.obj.put("self", "n", { title: "ok" }, { type: "note" }));
      out.untypedBad = await attempt(() => sys.obj.put("self", "n", { title: 5 }));
      out.untypedGood = await attempt(() => sys.obj.put("self", "n", { title: "fine", stars: 3 }));
      out.unknownType = await attempt(() => sys.obj.put("self", "m", 1, { type: "nope" }));
      out.redefine = await attempt(() => sys.obj.defineType("self", "note", { type: "string" }));
      out.final = await sys.obj.get("self", "n");
      return out;
    `));
    assert.equal(end.state, "exited", end.error?.message);
    const out = end.result as Record<string, Attempt>;
    succeeded(out.define);
    failed(out.invalid, "EINVAL");
    failed(out.afterInvalid, "ENOENT");
    assert.deepEqual(succeeded(out.valid), { version: 1 });
    failed(out.untypedBad, "EINVAL");
    assert.deepEqual(succeeded(out.untypedGood), { version: 2 });
    failed(out.unknownType, "ENOENT");
    failed(out.redefine, "EEXIST");
    const final = out.final as unknown as Stored;
    assert.equal(final.type, "note");
    assert.equal(final.version, 2);
    assert.deepEqual(final.value, { title: "fine", stars: 3 });
    assert.equal(final.writer, end.pid);
  });
});

Deno.test("defining a type in a shared namespace needs write authority there", async () => {
  await withKernel(async (h) => {
    const source = program(`return await attempt(() =>
      sys.obj.defineType("shared/types", "note", { type: "object" }));`);
    const reader = await h.run(source, { image: { capabilities: ["obj:read:shared/types"] } });
    failed(reader.result, "EPERM");
    const writer = await h.run(source, { image: { capabilities: ["obj:write:shared/types"] } });
    succeeded(writer.result);
  });
});

Deno.test("expectedVersion turns a lost update into EEXIST", async () => {
  await withKernel(async (h) => {
    const end = await h.run(program(`
      await sys.obj.put("self", "counter", 1);
      return {
        stale: await attempt(() => sys.obj.put("self", "counter", 2, { expectedVersion: 0 })),
        current: await attempt(() => sys.obj.put("self", "counter", 2, { expectedVersion: 1 })),
        fresh: await attempt(() => sys.obj.put("self", "new", 1, { expectedVersion: 0 })),
        value: (await sys.obj.get("self", "counter")).value,
      };
    `));
    const result = end.result as Record<string, Attempt | number>;
    failed(result.stale, "EEXIST", /version 0 expected, found 1/);
    assert.deepEqual(succeeded(result.current), { version: 2 });
    assert.deepEqual(succeeded(result.fresh), { version: 1 });
    assert.equal(result.value, 2);
  });
});

Deno.test("a child's private namespace is its own, not its parent's", async () => {
  await withKernel(async (h) => {
    const child = await h.program(
      "child",
      program(`return {
        own: await attempt(() => sys.obj.put("self", "x", "child")),
        parent: await attempt(() => sys.obj.get("proc/" + input, "x")),
      };`),
    );
    const end = await h.run(
      program(`
        await sys.obj.put("self", "x", "parent");
        const me = (await sys.proc.self()).pid;
        const { pid } = await sys.proc.spawn({ image: input.child, input: me });
        const result = (await sys.proc.wait(pid)).result;
        return { child: result, pid, mine: (await sys.obj.get("self", "x")).value };
      `),
      { input: { child }, image: { capabilities: ["proc:spawn:*"] } },
    );
    assert.equal(end.state, "exited", end.error?.message);
    const result = end.result as { child: Record<string, Attempt>; pid: number; mine: string };
    succeeded(result.child.own);
    failed(result.child.parent, "EPERM");
    assert.equal(result.mine, "parent");
    assert.equal((await h.kernel.objects.get(`proc/${result.pid}`, "x")).value, "child");
  });
});

// `^(a+)+$` against "aaa…ab" backtracks through every split of the a's:
// with 29 of them, minutes of a regular-expression engine's time.
const CATASTROPHIC = "^(a+)+$";
const EVIL = "a".repeat(29) + "b";

Deno.test("a process's regular expressions never run on the host: types with them are refused and the host keeps answering", async () => {
  await withKernel(async (h) => {
    const watch = watchHealth(h.kernel);
    const end = await h.run(program(`
      const re = ${JSON.stringify(CATASTROPHIC)};
      const evil = ${JSON.stringify(EVIL)};
      const types = {
        pattern: { type: "string", pattern: re },
        nested: { type: "object", properties: { s: { type: "string", pattern: re } } },
        patternProperties: { type: "object", patternProperties: { [re]: { type: "number" } } },
        propertyNames: { type: "object", propertyNames: { pattern: re } },
        format: { type: "string", format: "regex" },
      };
      const values = { pattern: evil, nested: { s: evil }, patternProperties: { [evil]: 1 },
        propertyNames: { [evil]: 1 }, format: "(" };
      const out = {};
      for (const [name, schema] of Object.entries(types)) {
        out[name] = {
          define: await attempt(() => sys.obj.defineType("self", name, schema)),
          put: await attempt(() => sys.obj.put("self", name, values[name], { type: name })),
        };
      }
      return out;
    `));
    const seen = await watch.stop();
    assert.ok(seen.answers > 0);
    assert.ok(seen.longestGapMs < FROZEN_MS, `the host did not answer for ${seen.longestGapMs} ms`);
    assert.equal(end.state, "exited", end.error?.message);
    const out = end.result as Record<string, { define: Attempt; put: Attempt }>;
    failed(
      out.pattern.define,
      "EINVAL",
      new RegExp(
        `^Cannot define type "proc/${end.pid}/pattern": "pattern" is not supported ` +
          `\\(regular expressions from a process do not run on the host\\)$`,
      ),
    );
    for (const name of ["nested", "patternProperties", "propertyNames", "format"]) {
      failed(out[name].define, "EINVAL", /regular expressions from a process do not run/);
    }
    for (const name of Object.keys(out)) failed(out[name].put, "ENOENT", /is not defined/);
    assert.deepEqual(await h.kernel.objects.list(`proc/${end.pid}`), []);
  });
});

Deno.test("checking a value against a type is bounded by the value's size, and the host keeps answering", async () => {
  await withKernel(async (h) => {
    const watch = watchHealth(h.kernel);
    // Each level offers two alternatives that both fail only at the bottom:
    // checking every path is 2^depth work unless the checker stops itself.
    const end = await h.run(program(`
      const schema = {
        $defs: { n: { anyOf: [
          { type: "array", items: { $ref: "#/$defs/n" } },
          { type: "array", items: { $ref: "#/$defs/n" } },
        ] } },
        $ref: "#/$defs/n",
      };
      let value = [1];
      for (let i = 0; i < 20; i++) value = [value];
      return {
        define: await attempt(() => sys.obj.defineType("self", "tree", schema)),
        put: await attempt(() => sys.obj.put("self", "t", value, { type: "tree" })),
        small: await attempt(() => sys.obj.put("self", "ok", [[[]]], { type: "tree" })),
      };
    `));
    const seen = await watch.stop();
    assert.ok(seen.answers > 0);
    assert.ok(seen.longestGapMs < FROZEN_MS, `the host did not answer for ${seen.longestGapMs} ms`);
    assert.equal(end.state, "exited", end.error?.message);
    const out = end.result as Record<string, Attempt>;
    succeeded(out.define);
    failed(
      out.put,
      "EINVAL",
      /cannot be checked against type "tree": checking the value takes more than \d+ steps/,
    );
    assert.deepEqual(succeeded(out.small), { version: 1 });
    assert.deepEqual((await h.kernel.objects.list(`proc/${end.pid}`)).map((o) => o.name), ["ok"]);
  });
});
