/**
 * Property-based fuzzing of the syscall ABI: random and malformed calls
 * (unknown names, wrong shapes, `__proto__` and `constructor` keys, huge
 * strings, deep nesting) go through `Broker.dispatch` with a real process
 * context. The broker never throws, always answers with a well-formed reply
 * whose error carries an ABI code, and never pollutes `Object.prototype`.
 *
 * Fixed seed in CI; `LIBOS_FUZZ_RUNS=N` (and `LIBOS_FUZZ_SEED=S`) for a
 * larger or different run.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { Kernel } from "../runtime/kernel.ts";
import { PARKED } from "./broker.ts";
import { SYSCALL_NAMES } from "./abi.ts";
import { ERROR_CODES } from "./errors.ts";

const RUNS = Number(Deno.env.get("LIBOS_FUZZ_RUNS") ?? 150);
const SEED = Number(Deno.env.get("LIBOS_FUZZ_SEED") ?? 20240601);

/** Calls that end, park or replace the caller: fuzzed elsewhere, not here. */
const SKIPPED = new Set(["proc.exit", "proc.exec", "proc.fork", "time.sleep", "proc.wait"]);

const key = fc.oneof(
  fc.constantFrom("__proto__", "constructor", "prototype", "path", "name", "args", "polluted"),
  fc.string({ maxLength: 8 }),
);

function nested(depth: number): fc.Arbitrary<unknown> {
  return fc.constant(null).map(() => {
    let value: unknown = "leaf";
    for (let i = 0; i < depth; i++) value = JSON.parse(`{"__proto__":{"polluted":1},"a":[1]}`);
    return value;
  });
}

const value: fc.Arbitrary<unknown> = fc.letrec((tie) => ({
  value: fc.oneof(
    { depthSize: "small" },
    fc.jsonValue(),
    fc.string({ unit: "binary", maxLength: 64 }),
    fc.constant("x".repeat(200_000)),
    fc.constant("../../../../etc/passwd"),
    fc.constant("a\u0000b"),
    fc.dictionary(key, tie("value"), { maxKeys: 4 }),
    fc.array(tie("value"), { maxLength: 4 }),
  ),
})).value;

const args = fc.oneof(
  value,
  fc.dictionary(key, value, { maxKeys: 5 }),
  fc.integer({ min: 50, max: 2000 }).chain((d) => nested(d)),
  fc.constant(
    JSON.parse(`{"__proto__":{"polluted":"yes"},"constructor":{"prototype":{"polluted":"yes"}}}`),
  ),
);

/** Names of `Object.prototype` members: see the ignored test at the end. */
const PROTO_NAMES = new Set(Object.getOwnPropertyNames(Object.prototype));

const name = fc.oneof(
  fc.constantFrom(...SYSCALL_NAMES.filter((n) => !SKIPPED.has(n))),
  fc.oneof(fc.string({ maxLength: 40 }), fc.constantFrom(...PROTO_NAMES)),
  fc.constantFrom("fs.read.x", "fs.", ".", "FS.READ"),
);

Deno.test("fuzz: every dispatched call gets a well-formed reply and pollutes nothing", async () => {
  const root = await Deno.realPath(await Deno.makeTempDir({ prefix: "libos-abi-fuzz-" }));
  const kernel = await Kernel.open({ store: ":memory:" });
  try {
    await kernel.images.register({
      name: "fuzz",
      version: "1.0.0",
      entry: "./main.ts",
      tools: [],
      capabilities: [],
      policy: {},
    } as never, { entrySource: "export default () => null;" });
    const proc = await kernel.spawn({ image: "fuzz@1.0.0", workspace: root });
    const protoKeys = Object.getOwnPropertyNames(Object.prototype).sort();
    let seq = 0;
    let id = 0;
    await fc.assert(
      fc.asyncProperty(name, args, async (n, a) => {
        const callId = ++id;
        const reply = await kernel.broker.dispatch({
          pid: proc.pid,
          image: proc.image,
          workspace: proc.workspace,
          policy: proc.policy,
          seq: ++seq,
        }, { id: callId, name: n, args: a });
        if (reply === PARKED) return;
        assert.equal(reply.id, callId);
        assert.equal(typeof reply.ok, "boolean");
        if (!reply.ok) {
          assert.ok(ERROR_CODES.includes(reply.error.code), `code ${reply.error.code}`);
          assert.equal(typeof reply.error.message, "string");
        }
        assert.equal(({} as Record<string, unknown>).polluted, undefined);
        assert.deepEqual(Object.getOwnPropertyNames(Object.prototype).sort(), protoKeys);
      }),
      { numRuns: RUNS, seed: SEED },
    );
    // Nothing the fuzzer sent was allowed to touch the workspace.
    assert.deepEqual(await Array.fromAsync(Deno.readDir(root)), []);
  } finally {
    await kernel.close();
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test({
  name: "a syscall named after an Object.prototype member is answered ENOSYS",
  fn: async () => {
    const kernel = await Kernel.open({ store: ":memory:" });
    try {
      for (const n of ["toString", "constructor", "__proto__", "hasOwnProperty"]) {
        const reply = await kernel.broker.dispatch(
          { pid: 1, image: "x@1.0.0", workspace: "/nonexistent", policy: [], seq: 1 },
          { id: 1, name: n, args: {} },
        );
        assert.notEqual(reply, PARKED);
        assert.equal(reply !== PARKED && !reply.ok && reply.error.code, "ENOSYS");
      }
    } finally {
      await kernel.close();
    }
  },
});
