import assert from "node:assert/strict";
import { toolEntrySource, ToolModuleError } from "./tool_module.ts";

const META = `name: "count", description: "counts", input: { type: "object" },
  manifest: { capabilities: ["fs:read:data/**"] }`;

const NAMED_META = `export const name = "count";
export const description = "counts";
export const input = { type: "object" };
export const manifest = { capabilities: ["fs:read:data/**"] };`;

async function refusal(source: string): Promise<string> {
  const error = await toolEntrySource(source).then(() => undefined, (e) => e);
  assert.ok(error instanceof ToolModuleError, `refused: ${source}`);
  return error.message;
}

Deno.test("named exports: run is called by its local name", async () => {
  for (
    const [source, call] of [
      ["export function run(args: unknown) { return 1; }", "run(input, sys)"],
      ["export async function run(args: unknown, sys: unknown) { return 1; }", "run(input, sys)"],
      ["export const run = async (args: unknown) => 1;", "run(input, sys)"],
      ["export const run = function (args: unknown) { return 1; };", "run(input, sys)"],
      ["function impl() { return 1; }\nexport { impl as run };", "impl(input, sys)"],
      [`${NAMED_META}\nexport function run() { return 1; }`, "run(input, sys)"],
    ]
  ) {
    const entry = await toolEntrySource(source);
    assert.ok(entry.startsWith(source), source);
    assert.ok(entry.includes(`return await ${call};`), source);
  }
});

Deno.test("a default-exported object literal is taken, its run called as a method", async () => {
  for (
    const source of [
      `export default { ${META}, async run(args: unknown, sys: unknown) { return 1; } };`,
      `export default { ${META}, run: (args: unknown) => 1 } satisfies Record<string, unknown>;`,
      `export default { ${META}, run: function (args: unknown) { return 1; } } as const;`,
      `export /* the tool */ default ({ "name": "count", run() { return 1; } });`,
      `function run() { return 1; }\nexport default { name: "count", run };`,
      `const NAME = "count";\nexport default { name: NAME, input: { type: \`object\` }, run() { return 1; } };`,
    ]
  ) {
    const entry = await toolEntrySource(source);
    assert.ok(!/export\s+(\/\*.*\*\/\s*)?default\s*[({]/.test(entry), source);
    assert.match(entry, /const __libosToolModule =/);
    assert.ok(entry.includes("return await __libosToolModule.run(input, sys);"), source);
  }
});

Deno.test("both shapes are taken when they agree", async () => {
  const same = `${NAMED_META}
export function run() { return 1; }
export default { name, description, input, manifest, run };`;
  assert.match(await toolEntrySource(same), /__libosToolModule\.run\(input, sys\)/);
  const equal = `${NAMED_META}
export function run() { return 1; }
export default { ${META}, run };`;
  assert.match(await toolEntrySource(equal), /__libosToolModule\.run\(input, sys\)/);
  // A default export without run calls the named one.
  const describedOnly = `export function run() { return 1; }\nexport default { ${META} };`;
  assert.match(await toolEntrySource(describedOnly), /return await run\(input, sys\)/);
});

Deno.test("both shapes are refused when they disagree", async () => {
  assert.match(
    await refusal(`export function run() { return 1; }
export default { name: "count", run() { return 2; } };`),
    /default export's run is not the exported run/,
  );
  assert.match(
    await refusal(`function other() { return 2; }
export function run() { return 1; }
export default { run: other };`),
    /default export's run is not the exported run/,
  );
  assert.match(
    await refusal(`${NAMED_META}
export function run() { return 1; }
export default { name, manifest: { capabilities: ["fs:read:**"] }, run };`),
    /default export's manifest differs from the exported manifest/,
  );
  assert.match(
    await refusal(`export const name = "count" + "er";
export default { name: "counter", run() { return 1; } };`),
    /cannot compare its default export's name/,
  );
});

Deno.test("a default export whose shape cannot be verified is refused", async () => {
  const cases: [string, RegExp][] = [
    [`const tool = { run() { return 1; } };\nexport default tool;`, /object literal/],
    [
      `function make() { return { run() { return 1; } }; }\nexport default make();`,
      /object literal/,
    ],
    [`export default new Proxy({ run() { return 1; } }, {});`, /object literal/],
    [`export default function run() { return 1; }`, /object literal/],
    [`export default class { run() { return 1; } }`, /object literal/],
    [`const tool = { run() { return 1; } };\nexport { tool as default };`, /object literal/],
    [`export default { get run() { return () => 1; } };`, /getters or setters/],
    [`export default { run() { return 1; }, set name(v: string) {} };`, /getters or setters/],
    [`const base = { run() { return 1; } };\nexport default { ...base };`, /spread/],
    [`export default { ["run"]() { return 1; } };`, /computed keys/],
    [`export default { run() { return 1; }, __proto__: { x: 1 } };`, /may only have/],
    [`export default { run() { return 1; }, version: 1 };`, /may only have .* not "version"/],
    [`export default { run() { return 1; }, run: () => 2 };`, /run twice/],
    [`export default { run: 5 };`, /run must be a function/],
    [
      `const lib = { f() { return 1; } };\nexport default { run: lib.f };`,
      /run must be a function/,
    ],
    [
      `function make() { return () => 1; }\nexport default { run: make() };`,
      /run must be a function/,
    ],
    [`export default { *run() { yield 1; } };`, /run must be a function/],
    [`let f = () => 1;\nexport default { run: f };`, /run must be a function/],
    [
      `export default { manifest: JSON.parse("{}"), run() { return 1; } };`,
      /manifest must be a literal/,
    ],
    [`let name = "x";\nexport default { name, run() { return 1; } };`, /name must be a literal/],
    [`export default { name: \`a\${1}\`, run() { return 1; } };`, /name must be a literal/],
    [
      `export default { input: { ["type"]: "object" }, run() { return 1; } };`,
      /input must be a literal/,
    ],
    [
      `export default { input: { get type() { return "x"; } }, run() { return 1; } };`,
      /input must/,
    ],
    [`export default { name: "count" };`, /must export a function named run/],
  ];
  for (const [source, why] of cases) assert.match(await refusal(source), why, source);
});

Deno.test("named exports that are not functions, re-exports and unparsable sources are refused", async () => {
  const cases: [string, RegExp][] = [
    ["export const name = 'x';", /must export a function named run/],
    ["export const run = 5;", /run must be a function/],
    ["export let run = () => 1;", /run must be a function/],
    ["export const { run } = { run: () => 1 };", /run must be a function/],
    ["export function* run() { yield 1; }", /run must be a function/],
    ['export * from "data:text/javascript,export const run = () => 1";', /re-exports/],
    ['export { run } from "./other.ts";', /re-exports/],
    ["export function run( { return 1; }", /does not parse/],
  ];
  for (const [source, why] of cases) assert.match(await refusal(source), why, source);
});
