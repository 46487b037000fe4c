import assert from "node:assert/strict";
import { eraseTypes } from "./type_erasure.ts";

/** Imports `source` as a module of `kind` and calls its default export. */
async function runAs(kind: "typescript" | "javascript", source: string): Promise<unknown> {
  const bytes = new TextEncoder().encode(source);
  const module = await import(
    `data:application/${kind};base64,${btoa(String.fromCharCode(...bytes))}`
  );
  return module.default();
}

const ONLY_TYPES = `interface Point { x: number; y?: number }
export type Pair<T> = [T, T];
declare const outside: number;
function twice<T>(value: T): Pair<T> { return [value, value]; }
function pick(a: string): string;
function pick(a: number): number;
function pick(a: any) { return a; }
class Box<T> extends Array<T> {
  declare label: string;
  first(): T | undefined { return this[0]; }
}
export default function (): unknown {
  let late!: number;
  late = 2;
  const p = { x: 1 } satisfies Point;
  const q = <Point> { x: (p.x as number) + late };
  const box = new Box<number>();
  box.push(q.x!);
  const pair = twice<string>(pick("a"));
  const arrow = <T,>(v: T): T => v;
  return [box.first(), pair, arrow(pick(3)), typeof (globalThis as any).outside];
}
`;

Deno.test("a module whose TypeScript is only types becomes JavaScript that means the same", async () => {
  const javascript = await eraseTypes(ONLY_TYPES);
  assert.ok(javascript !== undefined, "erased");
  for (const word of ["interface", "satisfies", " as ", "declare", "Pair<", "<T>"]) {
    assert.ok(!javascript.includes(word), `no ${word.trim()} left`);
  }
  assert.equal(javascript.split("\n").length, ONLY_TYPES.split("\n").length, "same lines");
  const expected = [3, ["a", "a"], 3, "undefined"];
  assert.deepEqual(await runAs("typescript", ONLY_TYPES), expected);
  assert.deepEqual(await runAs("javascript", javascript), expected);
});

Deno.test("a module with TypeScript that means something at run time gets no JavaScript", async () => {
  for (
    const source of [
      "enum Color { Red, Green }\nexport default () => Color.Green;",
      "namespace N { export const n = 1; }\nexport default () => N.n;",
      "class P { constructor(private x: number) {} }\nexport default () => new P(1);",
      "class P { private x = 1; }\nexport default () => new P();",
      "abstract class A { abstract m(): void; }\nexport default () => 1;",
      "function d(..._: unknown[]) {}\n@d class C {}\nexport default () => C;",
    ]
  ) {
    assert.equal(await eraseTypes(source), undefined, source);
  }
});

Deno.test("an erasure that would change how a module parses gives no JavaScript", async () => {
  // Blanking `as any` would make `(c)` call `b`: the trees differ, so the module stays TypeScript.
  assert.equal(await eraseTypes("const b = 1, c = 2;\nconst a = b as any\n(c);"), undefined);
  // A statement taken out leaves a `;`, so the next line does not join the one before.
  const joined = await eraseTypes("let y = 1, z = 2;\nlet x = y\ninterface I {}\n(z)");
  assert.ok(joined !== undefined);
  assert.match(joined, /let x = y\n;/);
});

Deno.test("a module that does not parse gives no JavaScript", async () => {
  assert.equal(await eraseTypes("export function run( { return 1; }"), undefined);
  assert.equal(await eraseTypes("export default () => <div>jsx</div>;"), undefined);
});

Deno.test("a module that imports or exports names gets no JavaScript: TypeScript drops those that are only types", async () => {
  const typeOnly = `data:application/typescript;base64,${btoa("export interface X { n: number }")}`;
  const source =
    `import { X } from "${typeOnly}";\nexport default () => { const x: X = { n: 1 }; return x.n; };`;
  // As TypeScript it runs (the import of a type only is dropped) ...
  assert.equal(await runAs("typescript", source), 1);
  // ... and blanked as JavaScript it would not: it stays TypeScript.
  assert.equal(await eraseTypes(source), undefined);
  for (
    const other of [
      `import X from "${typeOnly}";\nexport default () => 1;`,
      `import * as M from "${typeOnly}";\nexport default () => 1;`,
      "interface Y {}\nexport { Y };\nexport default () => 1;",
      `export * from "${typeOnly}";\nexport default () => 1;`,
    ]
  ) {
    assert.equal(await eraseTypes(other), undefined, other);
  }
  // An import of a module for its effect names nothing: erased as before.
  assert.ok(await eraseTypes(`import "${typeOnly}";\nexport default (): number => 1;`));
});
