/**
 * The import-graph check (`test/_import_graph.ts`): the project passes it,
 * and on a small project of its own it finds cycles through runtime and
 * type-only imports alike, and follows guest code into a host module.
 */

import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  checkImportGraph,
  type GraphRules,
  loadImportGraph,
  projectModules,
} from "./_import_graph.ts";

const CHECKER = fileURLToPath(new URL("./_import_graph.ts", import.meta.url));

Deno.test("the project has no import cycle and no guest import of a host module", async () => {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--no-prompt", "--allow-read", "--allow-run", CHECKER],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(code, 0, new TextDecoder().decode(stderr));
  assert.match(new TextDecoder().decode(stdout), /no import cycle, no guest import/);
});

/** Writes `files` (path → source) under a fresh folder and checks its graph against `rules`. */
async function check(
  files: Record<string, string>,
  rules: Partial<GraphRules> = {},
): Promise<{ errors: string[] }> {
  const root = await Deno.makeTempDir();
  try {
    for (const [path, source] of Object.entries(files)) {
      await Deno.mkdir(dirname(join(root, path)), { recursive: true });
      await Deno.writeTextFile(join(root, path), source);
    }
    const graph = await loadImportGraph(root, await projectModules(root));
    return checkImportGraph(graph, {
      guestEntry: "guest/main.ts",
      guest: ["guest/"],
      shared: ["abi.ts"],
      ...rules,
    });
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

const GUEST_MAIN = { "guest/main.ts": "export const main = 1;\n" };

Deno.test("a cycle through runtime imports fails the check", async () => {
  const { errors } = await check({
    ...GUEST_MAIN,
    "a.ts": 'import { b } from "./b.ts";\nexport const a = () => b;\n',
    "b.ts": 'import { c } from "./c.ts";\nexport const b = c;\n',
    "c.ts": 'import { a } from "./a.ts";\nexport const c = () => a;\n',
  });
  assert.deepEqual(errors, ["Import cycle through runtime imports: a.ts → b.ts → c.ts → a.ts"]);
});

Deno.test("re-exports, dynamic imports and import { type X } count as runtime imports", async () => {
  const { errors } = await check({
    ...GUEST_MAIN,
    "a.ts": 'export * from "./b.ts";\nexport const a = 1;\n',
    "b.ts": 'export const b = () => import("./c.ts");\n',
    "c.ts": 'import { type A } from "./d.ts";\nexport const c: A = 1;\n',
    "d.ts": 'import { a } from "./a.ts";\nexport type A = typeof a;\n',
  });
  assert.deepEqual(errors, [
    "Import cycle through runtime imports: a.ts → b.ts → c.ts → d.ts → a.ts",
  ]);
});

Deno.test("a cycle through an import type fails the check", async () => {
  const { errors } = await check({
    ...GUEST_MAIN,
    "a.ts": 'import type { B } from "./b.ts";\nexport type A = B[];\nexport const a = 1;\n',
    "b.ts": 'import { a } from "./a.ts";\nexport type B = string;\nexport const b = a;\n',
  });
  assert.deepEqual(errors, [
    "Import cycle through type-only imports (2 modules): a.ts → b.ts → a.ts",
  ]);
});

Deno.test("a cycle of type-only imports alone, import() types included, fails the check", async () => {
  const { errors } = await check({
    ...GUEST_MAIN,
    "kernel.ts":
      'import type { Mailbox } from "./mailbox.ts";\nexport type Kernel = { m: Mailbox };\n',
    "mailbox.ts": 'export type Mailbox = { k: import("./kernel.ts").Kernel };\n',
  });
  assert.deepEqual(errors, [
    "Import cycle through type-only imports (2 modules): kernel.ts → mailbox.ts → kernel.ts",
  ]);
});

Deno.test("a runtime cycle inside a larger type-only one is reported as both", async () => {
  const { errors } = await check({
    ...GUEST_MAIN,
    "a.ts": 'import { b } from "./b.ts";\nexport const a = () => b;\n',
    "b.ts": 'import { a } from "./a.ts";\nimport type { C } from "./c.ts";\n' +
      "export const b = (c: C) => [a, c];\n",
    "c.ts": 'import type { a } from "./a.ts";\nexport type C = typeof a;\n',
  });
  assert.deepEqual(errors, [
    "Import cycle through runtime imports: a.ts → b.ts → a.ts",
    "Import cycle through type-only imports (3 modules): b.ts → c.ts → a.ts → b.ts",
  ]);
});

Deno.test("doc-comment examples that import a module are not imports", async () => {
  const { errors } = await check({
    ...GUEST_MAIN,
    "kernel.ts":
      'import { Mailbox } from "./mailbox.ts";\nexport class Kernel {\n  m = Mailbox;\n}\n',
    "mailbox.ts": '/**\n * @example\n * ```ts\n * import { Kernel } from "./kernel.ts";\n' +
      " * ```\n */\nexport class Mailbox {}\n",
  });
  assert.deepEqual(errors, []);
});

Deno.test("guest code importing a host module, even for its types, fails the check", async () => {
  const files = {
    "guest/main.ts": 'import { sys } from "./libc.ts";\nexport const main = sys;\n',
    "guest/libc.ts": 'import type { Args } from "../abi.ts";\nexport const sys = (a: Args) => a;\n',
    "abi.ts": "export type Args = string;\n",
    "kernel.ts": 'import { main } from "./guest/main.ts";\nexport class Kernel {\n  m = main;\n}\n',
    "store.ts": "export type Store = { kv: string };\n",
  };
  assert.deepEqual((await check(files)).errors, []);

  const { errors } = await check({
    ...files,
    "abi.ts": 'import type { Store } from "./store.ts";\nexport type Args = Store;\n',
  });
  assert.deepEqual(errors, [
    'Guest code reaches host module "store.ts": guest/main.ts → guest/libc.ts → abi.ts → store.ts',
  ]);
});

Deno.test("the check fails when the guest entry is missing", async () => {
  const { errors } = await check({ "a.ts": "export const a = 1;\n" });
  assert.deepEqual(errors, ['Cannot find the guest entry "guest/main.ts" in the import graph']);
});
