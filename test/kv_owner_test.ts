/**
 * One owner per KV prefix. Parses every non-test module of the project,
 * finds the Deno KV keys it builds (array literals whose first element is a
 * string: `["journal", pid, seq]`) and checks them against the table in
 * `docs/storage.md`, the single source of who owns what:
 *
 * - every prefix used in the source is listed in the table;
 * - a key is **written** (`set`, `delete`, `sum`, `min`, `max`,
 *   `writeChunked`) only by its owner. A key built where its use cannot be
 *   told (held in a `…Key`/`…Prefix` variable, typed `Deno.KvKey`, returned
 *   by a function typed so, pushed onto a list of keys) counts as a write.
 *
 * Reads (`get`, `getMany`, `list`, `watch`, `check`, `readChunked`) by other
 * modules are allowed: many modules read the journal or the process records
 * to decide what to do, and the owner alone keeps the records consistent by
 * being the only one that changes them.
 *
 * @module
 */

import { deepStrictEqual as assertEquals } from "node:assert/strict";
import { parse } from "@babel/parser";
import { join, relative, sep as SEPARATOR } from "node:path";
import { fileURLToPath as fromFileUrl } from "node:url";

const ROOT = fromFileUrl(new URL("..", import.meta.url));

/** How a key is used where it is built. */
type Use = "read" | "write";

/** One key built in the source. */
interface KeyUse {
  module: string;
  line: number;
  prefix: string;
  use: Use;
}

/** KV calls: method or helper name → index of the key argument and its use. */
const KV_CALLS: Record<string, { key: number; use: Use }> = {
  set: { key: 0, use: "write" },
  delete: { key: 0, use: "write" },
  sum: { key: 0, use: "write" },
  min: { key: 0, use: "write" },
  max: { key: 0, use: "write" },
  writeChunked: { key: 1, use: "write" },
  get: { key: 0, use: "read" },
  getMany: { key: 0, use: "read" },
  list: { key: 0, use: "read" },
  watch: { key: 0, use: "read" },
  check: { key: 0, use: "read" },
  readChunked: { key: 1, use: "read" },
};

// deno-lint-ignore no-explicit-any
type Node = any;

function calleeName(callee: Node): string | undefined {
  if (callee.type === "Identifier") return callee.name;
  if (callee.type === "MemberExpression" || callee.type === "OptionalMemberExpression") {
    const p = callee.property;
    if (p.type === "Identifier") return p.name;
    if (p.type === "PrivateName") return p.id.name;
    if (p.type === "StringLiteral") return p.value;
  }
  return undefined;
}

function calleeObjectName(callee: Node): string | undefined {
  if (callee.type !== "MemberExpression") return undefined;
  const o = callee.object;
  if (o.type === "Identifier") return o.name;
  if (o.type === "MemberExpression") return calleeName(o);
  return undefined;
}

function typedAsKey(annotation: Node): boolean {
  if (!annotation) return false;
  return JSON.stringify(annotation).includes('"KvKey"');
}

const STATEMENT = /Statement$|Declaration$|^Program$|^ClassBody$|^SwitchCase$/;

/**
 * How the array at the end of `path` (its ancestors, outermost first) is used
 * as a key, if it is one. With `inferred` false, only a KV call's key argument
 * counts; otherwise a key whose use cannot be told counts as a write.
 */
function keyUse(path: Node[], inferred = true): Use | undefined {
  let child = path[path.length - 1];
  for (let i = path.length - 2; i >= 0; i--) {
    const node = path[i];
    switch (node.type) {
      case "CallExpression":
      case "OptionalCallExpression":
      case "NewExpression": {
        if (node.callee === child) return undefined;
        const name = calleeName(node.callee);
        const call = name !== undefined && Object.hasOwn(KV_CALLS, name)
          ? KV_CALLS[name]
          : undefined;
        if (call) return node.arguments.indexOf(child) === call.key ? call.use : undefined;
        if (!inferred) break;
        if (name === "push" && /keys$/i.test(calleeObjectName(node.callee) ?? "")) return "write";
        break;
      }
      case "VariableDeclarator": {
        if (node.init !== child || !inferred) return undefined;
        const id = node.id;
        if (typedAsKey(id.typeAnnotation)) return "write";
        if (id.type === "Identifier" && /(key|prefix)$/i.test(id.name)) return "write";
        return undefined;
      }
      case "ArrowFunctionExpression":
      case "FunctionExpression":
      case "FunctionDeclaration":
      case "ClassMethod":
      case "ClassPrivateMethod":
      case "ObjectMethod":
        if (inferred && typedAsKey(node.returnType)) return "write";
        if (node.type !== "ArrowFunctionExpression" && node.type !== "FunctionExpression") {
          return undefined;
        }
        break;
      case "ReturnStatement": {
        // Continue from the function that returns the key.
        let j = i - 1;
        while (j >= 0 && !/Function|Method/.test(path[j].type)) j--;
        if (j < 0) return undefined;
        i = j + 1;
        child = path[j + 1] ?? node;
        continue;
      }
      default:
        if (STATEMENT.test(node.type)) return undefined;
    }
    child = node;
  }
  return undefined;
}

/** Every KV key built in `text`, the source of `module`. */
function keysIn(module: string, text: string): KeyUse[] {
  const file = parse(text, { sourceType: "module", plugins: ["typescript"] });
  const found: KeyUse[] = [];
  const path: Node[] = [];
  const visit = (node: Node): void => {
    if (!node || typeof node.type !== "string") return;
    path.push(node);
    if (node.type === "ArrayExpression" && node.elements.length > 0) {
      const first = node.elements[0];
      if (first?.type === "StringLiteral") {
        const use = keyUse(path);
        if (use) {
          found.push({ module, line: node.loc.start.line, prefix: first.value, use });
        }
      } else if (first && first.type !== "SpreadElement" && keyUse(path, false) === "write") {
        // A key written with a computed first element: its prefix cannot be checked.
        found.push({ module, line: node.loc.start.line, prefix: "<computed>", use: "write" });
      }
    }
    for (const [field, value] of Object.entries(node)) {
      if (field === "loc" || field === "leadingComments" || field === "trailingComments") continue;
      if (Array.isArray(value)) { for (const v of value) visit(v); }
      else if (value && typeof value === "object") visit(value);
    }
    path.pop();
  };
  visit(file.program);
  return found;
}

/** The owners table of `docs/storage.md`: prefix → owning module. */
function owners(doc: string): Map<string, string> {
  const table = new Map<string, string>();
  for (const row of doc.split("\n")) {
    const cells = row.split("|").map((c) => c.trim());
    if (cells.length < 4) continue;
    const owner = /^`([^`]+\.ts)`$/.exec(cells[2]);
    if (!owner) continue;
    for (const key of cells[1].matchAll(/`\[\s*"([^"]+)"/g)) table.set(key[1], owner[1]);
  }
  return table;
}

/** Writes by a module other than the owner, and prefixes missing from the table. */
function violations(uses: KeyUse[], table: Map<string, string>): string[] {
  const found = new Set<string>();
  for (const u of uses) {
    const owner = table.get(u.prefix);
    if (owner === undefined) {
      found.add(`${u.module}:${u.line}: ["${u.prefix}", …] is not listed in docs/storage.md`);
    } else if (u.use === "write" && u.module !== owner) {
      found.add(`${u.module}:${u.line}: writes ["${u.prefix}", …], owned by ${owner}`);
    }
  }
  return [...found];
}

/** The project's non-test modules: path relative to the root → source. */
async function sources(): Promise<Map<string, string>> {
  const files = new Map<string, string>();
  const walk = async (dir: string): Promise<void> => {
    for await (const entry of Deno.readDir(dir)) {
      const path = join(dir, entry.name);
      const rel = relative(ROOT, path).split(SEPARATOR).join("/");
      if (entry.isDirectory) {
        if (entry.name.startsWith(".") || entry.name === "node_modules" || rel === "test") continue;
        await walk(path);
      } else if (
        entry.isFile && entry.name.endsWith(".ts") && !entry.name.endsWith("_test.ts") &&
        rel !== "runtime/_worker_bundle.ts" && !rel.endsWith("/_worker_bundle.ts")
      ) {
        files.set(rel, await Deno.readTextFile(path));
      }
    }
  };
  await walk(ROOT);
  return files;
}

Deno.test("kv owner: every KV prefix in the source is listed in docs/storage.md and written only by its owner", async () => {
  const table = owners(await Deno.readTextFile(join(ROOT, "docs", "storage.md")));
  const uses: KeyUse[] = [];
  for (const [module, text] of await sources()) uses.push(...keysIn(module, text));
  // The scan must see the keys it is meant to check, or it checks nothing.
  const written = new Set(uses.filter((u) => u.use === "write").map((u) => u.prefix));
  for (const prefix of ["proc", "journal", "event", "cap", "obj", "audit", "meta", "ckpt"]) {
    assertEquals(written.has(prefix), true, `the scan found no write of ["${prefix}", …]`);
  }
  for (const owner of new Set(table.values())) {
    assertEquals(await Deno.stat(join(ROOT, owner)).then(() => true, () => false), true, owner);
  }
  assertEquals(violations(uses, table), []);
});

Deno.test("kv owner: the scan reports a stray write, an undocumented prefix and a computed prefix", () => {
  const table = owners(
    "| key | owner | value |\n| --- | --- | --- |\n" +
      '| `["journal", pid, seq]` | `broker/journal.ts` | journal |\n' +
      '| `["proc", pid]` | `runtime/process_table.ts` | process |\n',
  );
  const stray = [
    "const a = await kv.get(['journal', 1, 2]);",
    "for await (const e of kv.list({ prefix: ['proc'] })) void e;",
    "await kv.atomic().check(a).set(['journal', 1, 2], {}).commit();",
    "const stale: Deno.KvKey[] = [1].map((s) => ['proc', s]);",
    "const countKey = ['journal_size', 1];",
    "const k = (): Deno.KvKey => ['proc', 3];",
    "const name = 'x';",
    "op.delete([name, 1]);",
    "op.set(['proc', 1], { tags: ['not', 'a', 'key'] });",
    "const words = new Set(['not', 'a', 'key']);",
  ].join("\n");
  const uses = keysIn("runtime/stray.ts", stray);
  assertEquals(violations(uses, table), [
    'runtime/stray.ts:3: writes ["journal", …], owned by broker/journal.ts',
    'runtime/stray.ts:4: writes ["proc", …], owned by runtime/process_table.ts',
    'runtime/stray.ts:5: ["journal_size", …] is not listed in docs/storage.md',
    'runtime/stray.ts:6: writes ["proc", …], owned by runtime/process_table.ts',
    'runtime/stray.ts:8: ["<computed>", …] is not listed in docs/storage.md',
    'runtime/stray.ts:9: writes ["proc", …], owned by runtime/process_table.ts',
  ]);
  assertEquals(
    violations(keysIn("runtime/process_table.ts", "op.set(['proc', 1], {});"), table),
    [],
  );
});
