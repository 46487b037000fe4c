import assert from "node:assert/strict";
import {
  compileSchema,
  MAX_CHECK_DEPTH,
  MAX_SCHEMA_BYTES,
  MAX_SCHEMA_DEPTH,
  SchemaError,
} from "./json_schema.ts";

const REGEX = /regular expressions from a process do not run on the host/;

function refused(schema: unknown, why: RegExp): void {
  assert.throws(() => compileSchema(schema), (error: unknown) => {
    assert.ok(error instanceof SchemaError, `expected a SchemaError, got ${error}`);
    assert.match(error.message, why);
    return true;
  }, JSON.stringify(schema).slice(0, 200));
}

/** The message of the first issue, or "ok". */
function verdict(schema: unknown, value: unknown): string {
  const issue = compileSchema(schema).check(value);
  return issue ? `${issue.path.join(".")}: ${issue.message}` : "ok";
}

/** `[[[…leaf…]]]`, `depth` arrays deep. */
function nested(depth: number, leaf: unknown = 1): unknown {
  let value: unknown = leaf;
  for (let i = 0; i < depth; i++) value = [value];
  return value;
}

Deno.test("compileSchema refuses every way a process could make the host run its regular expression", () => {
  refused(
    { type: "string", pattern: "^(a+)+$" },
    /^"pattern" is not supported \(regular expressions from a process do not run on the host\)$/,
  );
  refused(
    { properties: { a: { pattern: "x" } } },
    /^"pattern" at #\/properties\/a is not supported/,
  );
  refused({ patternProperties: { "^a": {} } }, REGEX);
  refused({ propertyNames: { pattern: "^a" } }, /"pattern" at #\/propertyNames/);
  refused({ format: "regex" }, REGEX);
  refused({ anyOf: [{ type: "null" }, { pattern: "x" }] }, /at #\/anyOf\/1/);
  refused({ $defs: { s: { pattern: "x" } } }, /at #\/\$defs\/s/);
  refused({ items: { not: { pattern: "x" } } }, /at #\/items\/not/);
  refused({ contains: { propertyNames: { pattern: "x" } } }, REGEX);
});

Deno.test("compileSchema refuses keywords it would not check, and malformed ones", () => {
  for (
    const [schema, why] of [
      [{ if: { type: "string" }, then: { minLength: 1 } }, /"if" is not supported/],
      [{ dependentRequired: { a: ["b"] } }, /"dependentRequired" is not supported/],
      [{ unevaluatedProperties: false }, /"unevaluatedProperties" is not supported/],
      [{ nullable: true }, /"nullable" is not supported \(a keyword the checker does not know/],
      [{ format: "hostname" }, /"format" is not supported \("hostname": the formats checked/],
      [{ $ref: "https://example.com/s.json" }, /"\$ref" is not supported/],
      [{ $ref: "#/properties/a" }, /"\$ref" is not supported/],
      [{ $dynamicRef: "#x" }, /"\$dynamicRef" is not supported/],
      [{ $anchor: "x" }, /"\$anchor" is not supported/],
      [{ items: { $defs: { a: {} } } }, /"\$defs" at #\/items is only read at the root/],
      [{ items: { $id: "x" } }, /"\$id" at #\/items is only read at the root/],
      [{ $schema: "http://example.com/mine" }, /"\$schema" is not supported/],
      [{ type: "nonsense" }, /"type" must be one of/],
      [{ type: [] }, /"type" must name at least one type/],
      [{ minLength: -1 }, /"minLength" must be a non-negative whole number/],
      [{ multipleOf: 0 }, /"multipleOf" must be greater than 0/],
      [{ maximum: "3" }, /"maximum" must be a number/],
      [{ anyOf: [] }, /"anyOf" must be a non-empty array of schemas/],
      [{ required: [1] }, /"required" must be an array of strings/],
      [{ additionalItems: false }, /"additionalItems" needs an array of items/],
      [{ properties: { a: 5 } }, /the schema at #\/properties\/a is not an object or a boolean/],
      [[], /the schema at # is not an object or a boolean/],
    ] as const
  ) refused(schema, why);
  // Annotations and extensions are accepted.
  compileSchema({
    $schema: "https://json-schema.org/draft/2020-12/schema",
    $id: "https://example.com/note",
    title: "note",
    description: "d",
    default: {},
    examples: [{}],
    $comment: "c",
    deprecated: false,
    readOnly: false,
    writeOnly: false,
    "x-order": 1,
  });
});

Deno.test("compileSchema bounds a schema's size and nesting, and refuses a $ref loop that never descends", () => {
  refused({ description: "x".repeat(MAX_SCHEMA_BYTES) }, /bytes of JSON, more than the 16384/);
  let deep: Record<string, unknown> = { type: "string" };
  for (let i = 0; i < MAX_SCHEMA_DEPTH + 1; i++) deep = { items: deep };
  refused(deep, /nested deeper than 32 levels/);
  refused({ $ref: "#" }, /the schema at # refers back to itself without descending/);
  refused({ allOf: [{ $ref: "#" }] }, /refers back to itself/);
  refused(
    { $defs: { a: { anyOf: [{ $ref: "#/$defs/b" }] }, b: { not: { $ref: "#/$defs/a" } } } },
    /refers back to itself/,
  );
  // A loop through items or properties descends into the value, so it ends.
  compileSchema({ type: "array", items: { $ref: "#" } });
  compileSchema({
    $defs: { n: { properties: { next: { $ref: "#/$defs/n" } } } },
    $ref: "#/$defs/n",
  });
});

Deno.test("types, enum and const", () => {
  assert.equal(verdict({ type: "string" }, 1), ": expected string, got number");
  assert.equal(verdict({ type: ["string", "null"] }, null), "ok");
  assert.equal(verdict({ type: "integer" }, 2), "ok");
  assert.equal(verdict({ type: "integer" }, 2.5), ": expected integer, got number");
  assert.equal(verdict({ type: "number" }, 2), "ok");
  assert.equal(verdict({ type: "object" }, []), ": expected object, got array");
  assert.equal(verdict({ enum: ["a", { b: [1] }] }, { b: [1] }), "ok");
  assert.equal(verdict({ enum: ["a", "b"] }, "c"), ': expected one of "a", "b"');
  assert.equal(verdict({ const: { a: [1, { b: 2 }] } }, { a: [1, { b: 2 }] }), "ok");
  assert.equal(verdict({ const: { a: 1 } }, { a: 1, b: 2 }), ': expected {"a":1}');
  assert.equal(verdict(true, 1), "ok");
  assert.equal(verdict(false, 1), ": is not allowed");
  assert.equal(verdict({}, { anything: [1] }), "ok");
});

Deno.test("number and string keywords", () => {
  assert.equal(verdict({ minimum: 1 }, 0), ": must be >= 1");
  assert.equal(verdict({ maximum: 1 }, 2), ": must be <= 1");
  assert.equal(verdict({ exclusiveMinimum: 1 }, 1), ": must be > 1");
  assert.equal(verdict({ exclusiveMaximum: 1 }, 1), ": must be < 1");
  assert.equal(verdict({ multipleOf: 0.1 }, 0.3), "ok");
  assert.equal(verdict({ multipleOf: 3 }, 10), ": must be a multiple of 3");
  assert.equal(verdict({ minimum: 5 }, "short"), "ok", "number keywords ignore strings");
  // Lengths count code points: one emoji is one character.
  assert.equal(verdict({ maxLength: 1 }, "😀"), "ok");
  assert.equal(verdict({ minLength: 2 }, "😀"), ": must be at least 2 characters");
  assert.equal(verdict({ maxLength: 2 }, "abc"), ": must be at most 2 characters");
});

Deno.test("formats are checked, each without a process's regular expression", () => {
  const cases: [string, string[], string[]][] = [
    ["date", ["2024-02-29"], ["2023-02-29", "2024-13-01", "24-01-01", "2024-01-01x"]],
    ["time", ["23:59:60Z", "12:00:00.5+02:00"], ["24:00:00Z", "12:00:00", "12:00:00+25:00"]],
    ["date-time", ["2024-02-29T12:00:00Z", "2024-02-29t12:00:00.1-01:30"], [
      "2024-02-29 12:00:00Z",
      "2024-02-30T12:00:00Z",
    ]],
    ["email", ["a.b+c@example.com"], ["a@b", "@example.com", "a b@example.com", "a@-x.com"]],
    ["uuid", ["123e4567-e89b-12d3-a456-426614174000"], ["123e4567-e89b-12d3-a456-42661417400"]],
    ["uri", ["https://example.com/a?b#c", "urn:isbn:123"], ["/relative", "http://a b", "no"]],
    ["ipv4", ["192.168.0.1"], ["256.1.1.1", "1.2.3", "01.2.3.4"]],
  ];
  for (const [format, good, bad] of cases) {
    for (const value of good) assert.equal(verdict({ format }, value), "ok", `${format} ${value}`);
    for (const value of bad) {
      assert.equal(verdict({ format }, value), `: must be a valid ${format}`, `${format} ${value}`);
    }
  }
});

Deno.test("array keywords", () => {
  assert.equal(verdict({ items: { type: "string" } }, ["a", 1]), "1: expected string, got number");
  assert.equal(verdict({ prefixItems: [{ type: "string" }], items: false }, ["a"]), "ok");
  assert.equal(
    verdict({ prefixItems: [{ type: "string" }], items: false }, ["a", 1]),
    "1: is not allowed",
  );
  assert.equal(
    verdict({ items: [{ type: "string" }], additionalItems: false }, ["a", 1]),
    "1: is not allowed",
  );
  assert.equal(verdict({ minItems: 2 }, [1]), ": must have at least 2 items");
  assert.equal(verdict({ maxItems: 1 }, [1, 2]), ": must have at most 1 items");
  assert.equal(
    verdict({ uniqueItems: true }, [{ a: 1, b: 2 }, { b: 2, a: 1 }]),
    "1: duplicates the item at 0",
  );
  assert.equal(verdict({ uniqueItems: true }, [1, "1", [1], { "1": 1 }]), "ok");
  assert.equal(verdict({ contains: { type: "string" } }, [1, "a"]), "ok");
  assert.equal(
    verdict({ contains: { type: "string" } }, [1]),
    ": must contain at least 1 matching items",
  );
  assert.equal(
    verdict({ contains: { type: "string" }, maxContains: 1 }, ["a", "b"]),
    ": must contain at most 1 matching items",
  );
  assert.equal(verdict({ contains: { type: "string" }, minContains: 0 }, [1]), "ok");
});

Deno.test("object keywords", () => {
  const note = {
    type: "object",
    properties: { title: { type: "string" }, tags: { type: "array", items: { type: "string" } } },
    required: ["title"],
    additionalProperties: false,
  };
  assert.equal(verdict(note, { title: "t", tags: ["a"] }), "ok");
  assert.equal(verdict(note, {}), "title: is required");
  assert.equal(
    verdict(note, { title: "t", tags: ["a", 2] }),
    "tags.1: expected string, got number",
  );
  assert.equal(verdict(note, { title: "t", extra: 1 }), ': unknown field "extra"');
  assert.equal(
    verdict({ additionalProperties: { type: "number" } }, { a: 1, b: "x" }),
    "b: expected number, got string",
  );
  assert.equal(
    verdict({ propertyNames: { maxLength: 3 } }, { abcd: 1 }),
    "abcd: name must be at most 3 characters",
  );
  assert.equal(verdict({ minProperties: 1 }, {}), ": must have at least 1 properties");
  assert.equal(verdict({ maxProperties: 1 }, { a: 1, b: 2 }), ": must have at most 1 properties");
  assert.equal(verdict({ required: ["a"] }, "not an object"), "ok");
});

Deno.test("applicators and $ref", () => {
  assert.equal(verdict({ allOf: [{ type: "number" }, { minimum: 3 }] }, 2), ": must be >= 3");
  assert.equal(verdict({ anyOf: [{ type: "string" }, { type: "number" }] }, 1), "ok");
  assert.equal(
    verdict({ anyOf: [{ type: "string" }, { type: "number" }] }, null),
    ": matches none of the schemas in anyOf",
  );
  assert.equal(
    verdict({ oneOf: [{ type: "number" }, { minimum: 0 }] }, 1),
    ": matches more than one of the schemas in oneOf",
  );
  assert.equal(verdict({ oneOf: [{ type: "number" }, { minimum: 0 }] }, -1), "ok");
  assert.equal(verdict({ not: { type: "string" } }, "x"), ": matches a schema it must not");
  const tree = {
    $defs: {
      node: {
        type: "object",
        properties: { kids: { type: "array", items: { $ref: "#/$defs/node" } } },
        required: ["kids"],
      },
    },
    $ref: "#/$defs/node",
  };
  assert.equal(verdict(tree, { kids: [{ kids: [] }] }), "ok");
  assert.equal(
    verdict(tree, { kids: [{ kids: [] }, { kids: [{}] }] }),
    "kids.1.kids.0.kids: is required",
  );
  assert.equal(
    verdict({ definitions: { s: { type: "string" } }, items: { $ref: "#/definitions/s" } }, [1]),
    "0: expected string, got number",
  );
  // A $ref with siblings applies both.
  assert.equal(
    verdict({ $defs: { s: { type: "string" } }, $ref: "#/$defs/s", minLength: 2 }, "a"),
    ": must be at least 2 characters",
  );
});

Deno.test("a check stops within a budget set by the value's size, however the schema multiplies the work", () => {
  // Two alternatives per level that both fail only at the bottom: 2^depth paths.
  const exponential = compileSchema({
    $defs: {
      n: {
        anyOf: [
          { type: "array", items: { $ref: "#/$defs/n" } },
          { type: "array", items: { $ref: "#/$defs/n" } },
        ],
      },
    },
    $ref: "#/$defs/n",
  });
  assert.throws(() => exponential.check(nested(64)), (error: unknown) => {
    assert.ok(error instanceof SchemaError);
    assert.match(error.message, /^checking the value takes more than \d+ steps/);
    return true;
  });
  // The same schema on a value it accepts, and a small mismatch, are cheap.
  assert.equal(exponential.check([[[]]]), undefined);
  assert.equal(exponential.check(nested(3))?.message, "matches none of the schemas in anyOf");
  // Many alternatives over every item of a large array: too much work for its size.
  const wide = compileSchema({
    type: "array",
    items: {
      anyOf: [
        ...Array.from({ length: 40 }, (_, i) => ({ type: "string", minLength: i + 1 })),
        { type: "string" },
      ],
    },
  });
  assert.throws(() => wide.check(new Array(10_000).fill("")), /takes more than/);
  // Ordinary work is proportional to the value, so a large value passes.
  const rows = compileSchema({
    type: "array",
    items: {
      type: "object",
      properties: { id: { type: "integer" }, name: { type: "string", maxLength: 40 } },
      required: ["id", "name"],
      additionalProperties: false,
    },
  });
  const many = Array.from({ length: 20_000 }, (_, id) => ({ id, name: `row ${id}` }));
  assert.equal(rows.check(many), undefined);
});

Deno.test("listing an object's keys and comparing values count toward the budget each time", () => {
  const wide: Record<string, number> = {};
  for (let i = 0; i < 1000; i++) wide[`k${i}`] = i;
  const alternatives = (schema: unknown) =>
    compileSchema({ anyOf: [...new Array(40).fill(schema), {}] });
  // Every alternative lists the thousand keys, then fails.
  assert.throws(() => alternatives({ minProperties: 1001 }).check(wide), /takes more than/);
  // Every alternative compares its constant with the thousand-key object.
  assert.throws(() => alternatives({ const: { k0: 0 } }).check(wide), /takes more than/);
  // Once, it is cheap.
  assert.equal(compileSchema({ minProperties: 1000 }).check(wide), undefined);
});

Deno.test("a check bounds the value's nesting and its own", () => {
  const anyArray = compileSchema({ type: "array", items: { $ref: "#" } });
  assert.equal(anyArray.check(nested(511, [])), undefined);
  assert.throws(() => anyArray.check(nested(600, [])), /nested deeper than 512 levels/);
  // Thirty schemas applied per level of the value reach the check's own bound first.
  let chain: Record<string, unknown> = { $ref: "#" };
  for (let i = 0; i < 29; i++) chain = { allOf: [chain] };
  const deep = compileSchema({ type: "array", items: chain });
  assert.throws(
    () => deep.check(nested(500, [])),
    new RegExp(`nests deeper than ${MAX_CHECK_DEPTH} schemas`),
  );
});
