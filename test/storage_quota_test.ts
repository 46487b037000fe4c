/**
 * Storage quotas: a process with no capabilities cannot fill the host's
 * store. Each test writes past a quota and asserts what is stored stays
 * within it, counted from the store itself.
 */

import assert from "node:assert/strict";
import type { Kernel } from "../runtime/kernel.ts";
import { ScriptedModel } from "../runtime/model.ts";
import { OBJECT_OVERHEAD_BYTES } from "../runtime/object_memory.ts";
import { type Attempt, program, withKernel } from "./_programs.ts";

const MIB = 1024 * 1024;
/** A string whose JSON is just under 1 MiB. */
const VALUE_CHARS = MIB - 16;
/** Room for three such objects, not four. */
const QUOTA = 3.5 * MIB;
/** Syscall messages must carry a 1 MiB value. */
const LIMITS = { maxMessageBytes: 2 * MIB };

/** Bytes of object values stored in `namespace`, read from the store. */
async function storedBytes(kernel: Kernel, namespace: string): Promise<number> {
  let total = 0;
  for await (
    const entry of kernel.store.kv.list<{ size: number }>({ prefix: ["obj", namespace] })
  ) {
    total += entry.value.size;
  }
  return total;
}

/** Bytes of large object chunks in the store, whoever they belong to. */
async function chunkBytes(kernel: Kernel): Promise<number> {
  let total = 0;
  for await (const entry of kernel.store.kv.list<Uint8Array>({ prefix: ["obj_chunk"] })) {
    total += entry.value.length;
  }
  return total;
}

function outcomes(attempts: Attempt[]): { ok: number; refused: number } {
  let ok = 0;
  let refused = 0;
  for (const a of attempts) {
    if (a.ok) ok++;
    else {
      assert.equal(a.code, "EBUDGET", a.message);
      assert.match(a.message, /storageBytes quota of 3670016/);
      refused++;
    }
  }
  return { ok, refused };
}

const PUT_LOOP = program(`
  const value = "x".repeat(${VALUE_CHARS});
  const out = [];
  for (let i = 0; i < input.n; i++) {
    out.push(await attempt(() => sys.obj.put("self", "o" + i, value)));
  }
  return out;
`);

Deno.test("a process with no capabilities cannot store objects past its storage quota", async () => {
  await withKernel(async (h) => {
    const end = await h.run(PUT_LOOP, {
      input: { n: 8 },
      image: { budget: { storageBytes: QUOTA }, limits: LIMITS },
    });
    assert.equal(end.state, "exited", end.error?.message);
    const { ok, refused } = outcomes(end.result as Attempt[]);
    assert.equal(ok, 3);
    assert.equal(refused, 5);
    const stored = await storedBytes(h.kernel, `proc/${end.pid}`);
    assert.ok(stored <= QUOTA, `${stored} bytes stored`);
    assert.ok(await chunkBytes(h.kernel) <= QUOTA);
    const used = (await h.kernel.quotas.usage(end.pid)).storageBytes;
    assert.equal(used, stored + 3 * OBJECT_OVERHEAD_BYTES);
  });
});

Deno.test("parallel object writes cannot together exceed the storage quota", async () => {
  await withKernel(async (h) => {
    const end = await h.run(
      program(`
        const value = "x".repeat(${VALUE_CHARS});
        return await Promise.all(Array.from({ length: 8 }, (_, i) =>
          attempt(() => sys.obj.put("self", "p" + i, value))));
      `),
      { image: { budget: { storageBytes: QUOTA }, limits: LIMITS } },
    );
    assert.equal(end.state, "exited", end.error?.message);
    const { ok } = outcomes(end.result as Attempt[]);
    assert.ok(ok <= 3, `${ok} writes stored`);
    assert.ok(await storedBytes(h.kernel, `proc/${end.pid}`) <= QUOTA);
    assert.ok(await chunkBytes(h.kernel) <= QUOTA);
  });
});

Deno.test("deleting or shrinking an object gives its bytes back", async () => {
  await withKernel(async (h) => {
    const end = await h.run(
      program(`
        const value = "x".repeat(${VALUE_CHARS});
        const put = (name, v = value) => attempt(() => sys.obj.put("self", name, v));
        for (const name of ["a", "b", "c"]) await put(name);
        const full = await put("d");
        await sys.obj.delete("self", "a");
        const afterDelete = await put("d");
        await put("b", "small");
        const afterShrink = await put("e");
        return { full, afterDelete, afterShrink };
      `),
      { image: { budget: { storageBytes: QUOTA }, limits: LIMITS } },
    );
    assert.equal(end.state, "exited", end.error?.message);
    const result = end.result as Record<string, Attempt>;
    outcomes([result.full]);
    assert.equal(result.full.ok, false);
    assert.equal(result.afterDelete.ok, true, JSON.stringify(result.afterDelete));
    assert.equal(result.afterShrink.ok, true, JSON.stringify(result.afterShrink));
    const stored = await storedBytes(h.kernel, `proc/${end.pid}`);
    assert.ok(stored <= QUOTA);
    const used = (await h.kernel.quotas.usage(end.pid)).storageBytes;
    assert.equal(used, stored + 4 * OBJECT_OVERHEAD_BYTES);
  });
});

Deno.test("a parent's storage quota bounds what its children store together", async () => {
  await withKernel(async (h) => {
    const child = await h.program("filler", PUT_LOOP, { limits: LIMITS });
    const end = await h.run(
      program(`
        const pids = [];
        for (let i = 0; i < 3; i++) {
          pids.push((await sys.proc.spawn({ image: input.child, input: { n: 2 } })).pid);
        }
        const results = [];
        for (const pid of pids) results.push((await sys.proc.wait(pid)).result);
        return { pids, results: results.flat() };
      `),
      {
        input: { child },
        // A child's limits are at most its parent's: the parent carries the large messages too.
        image: { capabilities: ["proc:spawn:*"], budget: { storageBytes: QUOTA }, limits: LIMITS },
      },
    );
    assert.equal(end.state, "exited", end.error?.message);
    const { pids, results } = end.result as { pids: number[]; results: Attempt[] };
    const { ok } = outcomes(results);
    assert.equal(ok, 3);
    let stored = 0;
    for (const pid of pids) stored += await storedBytes(h.kernel, `proc/${pid}`);
    assert.ok(stored <= QUOTA, `${stored} bytes stored by the tree`);
    assert.equal(
      (await h.kernel.quotas.usage(end.pid)).storageBytes,
      stored + 3 * OBJECT_OVERHEAD_BYTES,
    );
  });
});

Deno.test("a transcript that would go over the storage quota is not recorded", async () => {
  const model = new ScriptedModel({ turns: [{ content: "ok" }] });
  await withKernel(async (h) => {
    const end = await h.run(
      program(`
        const messages = Array.from({ length: 4 }, () => ({ role: "user", content: "y".repeat(200000) }));
        return await attempt(() => sys.model.complete({ messages }));
      `),
      { image: { budget: { storageBytes: 100_000 } } },
    );
    assert.equal(end.state, "exited", end.error?.message);
    const result = end.result as Attempt;
    assert.equal(result.ok, false);
    if (!result.ok) {
      assert.equal(result.code, "EBUDGET");
      assert.match(result.message, /transcript .* storageBytes quota of 100000/);
    }
    assert.deepEqual(await h.kernel.transcript(end.pid), []);
    assert.ok((await h.kernel.quotas.usage(end.pid)).storageBytes <= 100_000);
  }, { model });
});

Deno.test("checkpoints are charged to the storage quota", async () => {
  await withKernel(async (h) => {
    const end = await h.run(
      program(`
        const state = "z".repeat(300000);
        const out = [];
        for (let i = 0; i < 6; i++) out.push(await attempt(() => sys.ckpt.save(state)));
        return out;
      `),
      { image: { budget: { storageBytes: MIB } } },
    );
    assert.equal(end.state, "exited", end.error?.message);
    const saves = end.result as Attempt[];
    assert.equal(saves.filter((s) => s.ok).length, 3);
    for (const s of saves.filter((s) => !s.ok)) {
      assert.equal((s as { code: string }).code, "EBUDGET");
    }
    let kept = 0;
    for await (const _ of h.kernel.store.kv.list({ prefix: ["ckpt", end.pid] })) kept++;
    assert.equal(kept, 3);
  });
});

Deno.test("a process that fills its journal quota fails with EBUDGET", async () => {
  await withKernel(async (h) => {
    const quota = 2 * MIB;
    const end = await h.run(
      program(`
        await sys.obj.put("self", "big", "q".repeat(200000));
        for (let i = 0; i < 100; i++) await attempt(() => sys.obj.get("self", "big"));
        return "never";
      `),
      { image: { budget: { journalBytes: quota } } },
    );
    assert.equal(end.state, "failed");
    assert.equal(end.error?.code, "EBUDGET");
    assert.match(end.error!.message, /journalBytes quota of 2097152/);
    await h.kernel.journal.flush();
    let records = 0;
    for await (const _ of h.kernel.store.kv.list({ prefix: ["journal", end.pid] })) records++;
    // Each read journals about 200 KB: the quota stops it after about ten, not a hundred.
    assert.ok(records < 20, `${records} journal records`);
    const used = (await h.kernel.quotas.usage(end.pid)).journalBytes;
    assert.ok(used <= quota + 300_000, `${used} bytes of journal`);
  });
});

/** Bytes of the values kept under `prefix`, as JSON, read from the store. */
async function keptBytes(kernel: Kernel, prefix: Deno.KvKey): Promise<number> {
  let total = 0;
  for await (const entry of kernel.store.kv.list({ prefix })) {
    total += JSON.stringify(entry.value).length;
  }
  return total;
}

Deno.test("events a process emits are kept at its storage quota's cost", async () => {
  await withKernel(async (h) => {
    const end = await h.run(
      program(`
        const data = "e".repeat(50000);
        return await Promise.all(
          Array.from({ length: 40 }, () => attempt(() => sys.event.emit("flood", data))),
        );
      `),
      { image: { capabilities: ["event:emit:*"], budget: { storageBytes: MIB } } },
    );
    assert.equal(end.state, "exited", end.error?.message);
    const emits = end.result as Attempt[];
    const refused = emits.filter((e) => !e.ok) as { code: string }[];
    assert.ok(refused.length >= 20, `${refused.length} of 40 emits refused`);
    for (const r of refused) assert.equal(r.code, "EBUDGET");
    const kept = await keptBytes(h.kernel, ["topic_event", "flood"]);
    assert.ok(kept <= MIB, `${kept} bytes of events kept`);
    assert.ok(kept >= (40 - refused.length) * 50000);
  });
});

Deno.test("messages a process sends are charged to it until they are received", async () => {
  await withKernel(async (h) => {
    const end = await h.run(
      program(`
        const self = (await sys.proc.self()).pid;
        const data = "m".repeat(50000);
        const sent = await Promise.all(
          Array.from({ length: 40 }, () => attempt(() => sys.msg.send(self, data))),
        );
        const ok = sent.filter((s) => s.ok).length;
        for (let i = 0; i < ok; i++) await sys.msg.recv();
        const again = [];
        for (let i = 0; i < 5; i++) again.push(await attempt(() => sys.msg.send(self, data)));
        return { sent, again };
      `),
      { image: { capabilities: ["proc:send:*"], budget: { storageBytes: MIB } } },
    );
    assert.equal(end.state, "exited", end.error?.message);
    const { sent, again } = end.result as { sent: Attempt[]; again: Attempt[] };
    const refused = sent.filter((s) => !s.ok) as { code: string }[];
    assert.ok(refused.length >= 20, `${refused.length} of 40 sends refused`);
    for (const r of refused) assert.equal(r.code, "EBUDGET");
    // What was received was given back: five more fit.
    assert.deepEqual(again.map((a) => a.ok), [true, true, true, true, true]);
    const kept = await keptBytes(h.kernel, ["mail", end.pid]);
    assert.ok(kept <= MIB, `${kept} bytes of mail kept`);
    assert.ok(kept >= 5 * 50000);
  });
});
