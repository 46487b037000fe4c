import assert from "node:assert/strict";
import { BUILTIN_TOOLS } from "../tools/builtin.ts";
import { buildToolCatalog, CATALOG_PATH } from "./_build_tool_catalog.ts";
import { BUILTIN_TOOL_CATALOG } from "./_tool_catalog.ts";

Deno.test("the tool catalog is what the generator builds from tools/builtin.ts (deno task bundle)", async () => {
  assert.equal(
    await Deno.readTextFile(CATALOG_PATH),
    await buildToolCatalog(),
    "runtime/_tool_catalog.ts is stale: run deno task bundle",
  );
});

Deno.test("the catalog lists every built-in tool with its name, description and input schema", () => {
  assert.deepEqual(Object.keys(BUILTIN_TOOL_CATALOG), Object.keys(BUILTIN_TOOLS));
  for (const [key, tool] of Object.entries(BUILTIN_TOOLS)) {
    assert.deepEqual(BUILTIN_TOOL_CATALOG[key], {
      name: tool.name,
      description: tool.description,
      input: tool.input,
    });
  }
});
