/**
 * JSON Schemas written by processes (Object Memory types, JIT tool inputs),
 * checked on the host's event loop. Two rules keep a hostile schema from
 * stalling the host:
 *
 * - No regular expression a process wrote ever runs: `pattern`,
 *   `patternProperties` and `format: "regex"` are refused when the schema is
 *   compiled (a `propertyNames` schema is a schema like any other, so a
 *   `pattern` inside it is refused too). The few formats checked run fixed
 *   expressions that take linear time.
 * - A check is bounded by the size of the value: it may take at most
 *   {@link BASE_STEPS} plus {@link STEPS_PER_UNIT} steps per unit of the
 *   value's weight (a node, or 32 characters of a string or key), and may
 *   nest at most {@link MAX_CHECK_DEPTH} levels; beyond either it stops
 *   with a {@link SchemaError}. Alternatives (`anyOf`, `oneOf`, `allOf`),
 *   recursion through `$ref` and `uniqueItems` all count, so no schema can
 *   make a small value expensive.
 *
 * The subset of JSON Schema 2020-12 understood: `type`, `enum`, `const`,
 * `allOf`, `anyOf`, `oneOf`, `not`, `$ref` (to `#`, `#/$defs/<name>` or
 * `#/definitions/<name>`), `$defs` and `definitions` (at the root), the
 * number keywords (`minimum`, `maximum`, `exclusiveMinimum`,
 * `exclusiveMaximum`, `multipleOf`), the string keywords (`minLength`,
 * `maxLength`, `format` among {@link FORMATS}), the array keywords
 * (`items`, `prefixItems`, `additionalItems` after an array of `items`,
 * `minItems`, `maxItems`, `uniqueItems`, `contains`, `minContains`,
 * `maxContains`), the object keywords (`properties`, `required`,
 * `additionalProperties`, `propertyNames`, `minProperties`,
 * `maxProperties`), and annotations (`title`, `description`, `default`,
 * `examples`, `$comment`, `deprecated`, `readOnly`, `writeOnly`,
 * `contentEncoding`, `contentMediaType`, `$schema` and `$id` at the root,
 * and any key starting with `x-`). Anything else is refused: a keyword the
 * checker does not understand would be a constraint it silently skips.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { compileSchema } from "./json_schema.ts";
 * const note = compileSchema({
 *   type: "object",
 *   properties: { title: { type: "string", maxLength: 80 } },
 *   required: ["title"],
 * });
 * assert(note.check({ title: "hi" }) === undefined);
 * assert(note.check({})?.message === "is required");
 * ```
 *
 * @module
 */

/** A schema refused when compiled, or a check that would exceed its bounds. */
export class SchemaError extends Error {
  /** Creates an error with a one-line message. */
  constructor(message: string) {
    super(message);
    this.name = "SchemaError";
  }
}

/** Why a value does not match: where in the value, and what is wrong there. */
export interface SchemaIssue {
  /** Keys and indices from the value's root to the offending part. */
  path: (string | number)[];
  /** What is wrong, e.g. `expected string, got number`. */
  message: string;
}

/** A compiled schema. */
export interface CompiledSchema {
  /**
   * The first reason `value` does not match, or undefined when it does.
   * Throws a {@link SchemaError} when checking it would take more steps or
   * nest deeper than the bounds allow.
   */
  check(value: unknown): SchemaIssue | undefined;
}

/** Largest schema accepted, in UTF-8 bytes of its JSON. */
export const MAX_SCHEMA_BYTES = 16 * 1024;
/** Deepest nesting of subschemas accepted in a schema. */
export const MAX_SCHEMA_DEPTH = 32;
/** Steps every check may take, whatever the value. */
export const BASE_STEPS = 4096;
/** Further steps a check may take per unit of the value's weight. */
export const STEPS_PER_UNIT = 16;
/** Deepest nesting of subschema applications during one check. */
export const MAX_CHECK_DEPTH = 2048;
/** The formats checked; any other `format` is refused. */
export const FORMATS = ["date-time", "date", "time", "email", "uuid", "uri", "ipv4"] as const;

/** Characters of a string counted as one unit of weight and one step of work. */
const CHARS_PER_UNIT = 32;
/** Deepest nesting of arrays and objects in a value that is checked. */
const MAX_VALUE_DEPTH = 512;

type _Format = typeof FORMATS[number];
type _Type = "null" | "boolean" | "object" | "array" | "number" | "integer" | "string";
const TYPES: readonly _Type[] = [
  "null",
  "boolean",
  "object",
  "array",
  "number",
  "integer",
  "string",
];

const REGEX_REFUSAL = "regular expressions from a process do not run on the host";
const ONLY_LOCAL_REFS = "only #, #/$defs/<name> and #/definitions/<name> are followed";

/** Keywords refused with a reason of their own. */
const REFUSED: Readonly<Record<string, string>> = {
  pattern: REGEX_REFUSAL,
  patternProperties: REGEX_REFUSAL,
  if: "conditional schemas are not checked",
  then: "conditional schemas are not checked",
  else: "conditional schemas are not checked",
  dependentSchemas: "dependencies between properties are not checked",
  dependentRequired: "dependencies between properties are not checked",
  dependencies: "dependencies between properties are not checked",
  unevaluatedItems: "use items or additionalProperties instead",
  unevaluatedProperties: "use items or additionalProperties instead",
  $dynamicRef: ONLY_LOCAL_REFS,
  $dynamicAnchor: ONLY_LOCAL_REFS,
  $recursiveRef: ONLY_LOCAL_REFS,
  $recursiveAnchor: ONLY_LOCAL_REFS,
  $anchor: ONLY_LOCAL_REFS,
  $vocabulary: "only the vocabularies of JSON Schema 2020-12 are known",
  contentSchema: "the content of strings is not checked",
};

const ANNOTATIONS = new Set([
  "title",
  "description",
  "default",
  "examples",
  "$comment",
  "deprecated",
  "readOnly",
  "writeOnly",
  "contentEncoding",
  "contentMediaType",
]);

const META_SCHEMAS = new Set([
  "https://json-schema.org/draft/2020-12/schema",
  "https://json-schema.org/draft/2019-09/schema",
  "http://json-schema.org/draft-07/schema",
  "http://json-schema.org/draft-07/schema#",
  "http://json-schema.org/draft-06/schema",
  "http://json-schema.org/draft-06/schema#",
]);

/** A compiled schema node. `true`/`false` schemas are `always`. */
interface _Node {
  always?: boolean;
  types?: ReadonlySet<_Type>;
  /** The values allowed, and how a message names them (built once, when compiled). */
  enum?: { values: readonly unknown[]; shown: string };
  const?: { value: unknown; shown: string };
  ref?: _Node;
  allOf?: _Node[];
  anyOf?: _Node[];
  oneOf?: _Node[];
  not?: _Node;
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  exclusiveMaximum?: number;
  multipleOf?: number;
  minLength?: number;
  maxLength?: number;
  format?: _Format;
  prefixItems?: _Node[];
  items?: _Node;
  minItems?: number;
  maxItems?: number;
  uniqueItems?: boolean;
  contains?: _Node;
  minContains?: number;
  maxContains?: number;
  properties?: ReadonlyMap<string, _Node>;
  required?: readonly string[];
  additionalProperties?: _Node;
  propertyNames?: _Node;
  minProperties?: number;
  maxProperties?: number;
}

/**
 * Compiles a schema written by a process. Throws a {@link SchemaError}
 * naming the first keyword refused and where it is, e.g. `"pattern" at
 * #/properties/name is not supported (regular expressions from a process do
 * not run on the host)`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { compileSchema, SchemaError } from "./json_schema.ts";
 * try {
 *   compileSchema({ type: "string", pattern: "^(a+)+$" });
 * } catch (error) {
 *   assert(error instanceof SchemaError);
 * }
 * ```
 */
export function compileSchema(schema: unknown): CompiledSchema {
  let text: string | undefined;
  try {
    text = JSON.stringify(schema);
  } catch {
    throw new SchemaError("the schema is not JSON");
  }
  if (text === undefined) throw new SchemaError("the schema is not JSON");
  const bytes = new TextEncoder().encode(text).length;
  if (bytes > MAX_SCHEMA_BYTES) {
    throw new SchemaError(
      `the schema is ${bytes} bytes of JSON, more than the ${MAX_SCHEMA_BYTES} allowed`,
    );
  }
  const node = _withinStack("the schema", () => {
    const compiler = new _Compiler(JSON.parse(text));
    const root = compiler.root();
    compiler.requireProgress();
    return root;
  });
  return {
    check: (value) => _withinStack("checking the value", () => new _Checker(value).run(node)),
  };
}

/**
 * Runs `work`, turning a stack overflow into a {@link SchemaError}. The
 * nesting bounds keep compiling and checking well within V8's stack; this
 * is a second line behind them.
 */
function _withinStack<T>(what: string, work: () => T): T {
  try {
    return work();
  } catch (error) {
    if (error instanceof RangeError) throw new SchemaError(`${what} nests too deeply`);
    throw error;
  }
}

/** Compiles one schema document: its root, and the definitions `$ref` reaches. */
class _Compiler {
  #root: unknown;
  #defs = new Map<string, { raw: unknown; at: string }>();
  #resolved = new Map<string, _Node>();
  #nodes: { node: _Node; at: string }[] = [];

  constructor(root: unknown) {
    this.#root = root;
    if (_isObject(root)) {
      for (const keyword of ["$defs", "definitions"]) {
        const defs = root[keyword];
        if (defs === undefined) continue;
        if (!_isObject(defs)) _refuse(keyword, "#", "must map names to schemas");
        for (const [name, raw] of Object.entries(defs)) {
          this.#defs.set(`#/${keyword}/${_pointerSegment(name)}`, {
            raw,
            at: `#/${keyword}/${_pointerSegment(name)}`,
          });
        }
      }
    }
  }

  /** The compiled root; every definition is compiled too, used or not. */
  root(): _Node {
    // Registered before it is filled, so a reference to "#" finds it.
    const node: _Node = {};
    this.#resolved.set("#", node);
    this.#compile(this.#root, "#", 0, node);
    for (const ref of this.#defs.keys()) this.#resolve(ref, ref);
    return node;
  }

  /**
   * Refuses a schema in which a value could be checked against the same
   * node again without descending into it (`{"$ref": "#"}` at the root, or
   * two definitions whose `allOf` name each other): such a check never ends.
   */
  requireProgress(): void {
    const state = new Map<_Node, "open" | "done">();
    const at = new Map(this.#nodes.map(({ node, at }) => [node, at]));
    const visit = (node: _Node): void => {
      const seen = state.get(node);
      if (seen === "done") return;
      if (seen === "open") {
        throw new SchemaError(
          `the schema at ${
            at.get(node) ?? "#"
          } refers back to itself without descending into the value`,
        );
      }
      state.set(node, "open");
      for (const next of _sameValue(node)) visit(next);
      state.set(node, "done");
    };
    for (const { node } of this.#nodes) visit(node);
  }

  #resolve(ref: string, at: string): _Node {
    const done = this.#resolved.get(ref);
    if (done) return done;
    const def = this.#defs.get(ref);
    if (!def) {
      _unsupported(
        "$ref",
        at,
        `${_shown(ref)} names no definition of this schema; ${ONLY_LOCAL_REFS}`,
      );
    }
    // Registered before it is filled, so a recursive reference finds it.
    const node: _Node = {};
    this.#resolved.set(ref, node);
    return this.#compile(def.raw, def.at, 1, node);
  }

  /** Fills `node` from the schema `raw` found at `at`, `depth` subschemas down. */
  #compile(raw: unknown, at: string, depth: number, node: _Node = {}): _Node {
    if (depth > MAX_SCHEMA_DEPTH) {
      throw new SchemaError(`the schema at ${at} is nested deeper than ${MAX_SCHEMA_DEPTH} levels`);
    }
    this.#nodes.push({ node, at });
    if (typeof raw === "boolean") {
      node.always = raw;
      return node;
    }
    if (!_isObject(raw)) {
      throw new SchemaError(`the schema at ${at} is not an object or a boolean`);
    }
    const sub = (value: unknown, where: string): _Node => this.#compile(value, where, depth + 1);
    const list = (keyword: string): _Node[] => {
      const value = raw[keyword];
      if (!Array.isArray(value) || value.length === 0) {
        _refuse(keyword, at, "must be a non-empty array of schemas");
      }
      return (value as unknown[]).map((v, i) => sub(v, `${at}/${keyword}/${i}`));
    };
    for (const [keyword, value] of Object.entries(raw)) {
      if (Object.hasOwn(REFUSED, keyword)) _unsupported(keyword, at, REFUSED[keyword]);
      switch (keyword) {
        case "type":
          node.types = _types(value, at);
          break;
        case "enum":
          if (!Array.isArray(value)) _refuse(keyword, at, "must be an array");
          node.enum = {
            values: value as unknown[],
            shown: `one of ${(value as unknown[]).slice(0, 10).map(_shown).join(", ")}${
              (value as unknown[]).length > 10 ? ", …" : ""
            }`,
          };
          break;
        case "const":
          node.const = { value, shown: _shown(value) };
          break;
        case "$ref":
          if (typeof value !== "string") _refuse(keyword, at, "must be a string");
          node.ref = this.#resolve(value as string, at);
          break;
        case "allOf":
        case "anyOf":
        case "oneOf":
          node[keyword] = list(keyword);
          break;
        case "not":
          node.not = sub(value, `${at}/not`);
          break;
        case "minimum":
        case "maximum":
        case "exclusiveMinimum":
        case "exclusiveMaximum":
          node[keyword] = _number(keyword, value, at);
          break;
        case "multipleOf":
          node.multipleOf = _number(keyword, value, at);
          if (node.multipleOf <= 0) _refuse(keyword, at, "must be greater than 0");
          break;
        case "minLength":
        case "maxLength":
        case "minItems":
        case "maxItems":
        case "minContains":
        case "maxContains":
        case "minProperties":
        case "maxProperties":
          node[keyword] = _count(keyword, value, at);
          break;
        case "format":
          node.format = _format(value, at);
          break;
        case "items":
          if (Array.isArray(value)) {
            node.prefixItems = list("items");
          } else node.items = sub(value, `${at}/items`);
          break;
        case "prefixItems":
          if (Array.isArray(raw.items)) _refuse(keyword, at, "cannot follow an array of items");
          node.prefixItems = list("prefixItems");
          break;
        case "additionalItems":
          if (!Array.isArray(raw.items)) _refuse(keyword, at, "needs an array of items");
          node.items = sub(value, `${at}/additionalItems`);
          break;
        case "uniqueItems":
          if (typeof value !== "boolean") _refuse(keyword, at, "must be true or false");
          node.uniqueItems = value as boolean;
          break;
        case "contains":
          node.contains = sub(value, `${at}/contains`);
          break;
        case "properties": {
          if (!_isObject(value)) _refuse(keyword, at, "must map names to schemas");
          const properties = new Map<string, _Node>();
          for (const [name, schema] of Object.entries(value as Record<string, unknown>)) {
            properties.set(name, sub(schema, `${at}/properties/${_pointerSegment(name)}`));
          }
          node.properties = properties;
          break;
        }
        case "required":
          if (!Array.isArray(value) || !value.every((v) => typeof v === "string")) {
            _refuse(keyword, at, "must be an array of strings");
          }
          node.required = [...new Set(value as string[])];
          break;
        case "additionalProperties":
          node.additionalProperties = sub(value, `${at}/additionalProperties`);
          break;
        case "propertyNames":
          node.propertyNames = sub(value, `${at}/propertyNames`);
          break;
        case "$defs":
        case "definitions":
          if (depth !== 0) _refuse(keyword, at, "is only read at the root");
          break;
        case "$schema":
          if (depth !== 0) _refuse(keyword, at, "is only read at the root");
          if (typeof value !== "string" || !META_SCHEMAS.has(value)) {
            _unsupported(keyword, at, "the dialects known are JSON Schema 2020-12 to draft-06");
          }
          break;
        case "$id":
          if (depth !== 0) _refuse(keyword, at, "is only read at the root");
          if (typeof value !== "string") _refuse(keyword, at, "must be a string");
          break;
        default:
          if (!ANNOTATIONS.has(keyword) && !keyword.startsWith("x-")) {
            _unsupported(keyword, at, "a keyword the checker does not know would go unchecked");
          }
      }
    }
    return node;
  }
}

/** The nodes checked against the same value as `node`. */
function _sameValue(node: _Node): _Node[] {
  const out: _Node[] = [];
  if (node.ref) out.push(node.ref);
  if (node.not) out.push(node.not);
  for (const list of [node.allOf, node.anyOf, node.oneOf]) if (list) out.push(...list);
  return out;
}

/** Throws: `keyword` (at `at`) has a value it may not have. */
function _refuse(keyword: string, at: string, why: string): never {
  throw new SchemaError(`${_keyword(keyword, at)} ${why}`);
}

/** Throws: `keyword` (at `at`) is not supported, and why. */
function _unsupported(keyword: string, at: string, why: string): never {
  throw new SchemaError(`${_keyword(keyword, at)} is not supported (${why})`);
}

/** A keyword and where it is, as messages name it: `"pattern" at #/properties/a`. */
function _keyword(keyword: string, at: string): string {
  return `${_shown(keyword)}${at === "#" ? "" : ` at ${at}`}`;
}

function _types(value: unknown, at: string): ReadonlySet<_Type> {
  const list = Array.isArray(value) ? value : [value];
  if (list.length === 0) _refuse("type", at, "must name at least one type");
  for (const t of list) {
    if (!TYPES.includes(t as _Type)) {
      _refuse("type", at, `must be one of ${TYPES.join(", ")}`);
    }
  }
  return new Set(list as _Type[]);
}

function _number(keyword: string, value: unknown, at: string): number {
  if (typeof value !== "number" || !Number.isFinite(value)) {
    _refuse(keyword, at, "must be a number");
  }
  return value as number;
}

function _count(keyword: string, value: unknown, at: string): number {
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0) {
    _refuse(keyword, at, "must be a non-negative whole number");
  }
  return value as number;
}

function _format(value: unknown, at: string): _Format {
  if (value === "regex") _unsupported("format", at, `"regex": ${REGEX_REFUSAL}`);
  if (!FORMATS.includes(value as _Format)) {
    _unsupported("format", at, `${_shown(value)}: the formats checked are ${FORMATS.join(", ")}`);
  }
  return value as _Format;
}

/** A name as one segment of a JSON Pointer (RFC 6901). */
function _pointerSegment(name: string): string {
  return name.replaceAll("~", "~0").replaceAll("/", "~1");
}

function _isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** The JSON kind of a value, as messages name it. */
function _kind(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  return typeof value;
}

/** Units of weight of a string or key. */
function _units(text: string): number {
  return 1 + Math.floor(text.length / CHARS_PER_UNIT);
}

/** The weight of a value (nodes, plus string length in units) and its depth; iterative. */
function _measure(value: unknown): { weight: number; depth: number } {
  let weight = 0;
  let depth = 0;
  const stack: [unknown, number][] = [[value, 1]];
  while (stack.length) {
    const [next, level] = stack.pop()!;
    weight++;
    if (level > depth) depth = level;
    if (typeof next === "string") weight += _units(next) - 1;
    else if (Array.isArray(next)) {
      if (level > MAX_VALUE_DEPTH) continue;
      for (const item of next) stack.push([item, level + 1]);
    } else if (_isObject(next)) {
      if (level > MAX_VALUE_DEPTH) continue;
      for (const [key, member] of Object.entries(next)) {
        weight += _units(key);
        stack.push([member, level + 1]);
      }
    }
  }
  return { weight, depth };
}

/** One check of one value: counts its steps and its nesting. */
class _Checker {
  #value: unknown;
  #steps = 0;
  #budget: number;
  #depth = 0;
  #path: (string | number)[] = [];

  constructor(value: unknown) {
    const { weight, depth } = _measure(value);
    if (depth > MAX_VALUE_DEPTH) {
      throw new SchemaError(`the value is nested deeper than ${MAX_VALUE_DEPTH} levels`);
    }
    this.#value = value;
    this.#budget = BASE_STEPS + STEPS_PER_UNIT * weight;
  }

  run(node: _Node): SchemaIssue | undefined {
    const message = this.#check(node, this.#value);
    return message === undefined ? undefined : { path: [...this.#path], message };
  }

  #spend(steps: number): undefined {
    this.#steps += steps;
    if (this.#steps > this.#budget) {
      throw new SchemaError(
        `checking the value takes more than ${this.#budget} steps, the most a value of its size may take`,
      );
    }
  }

  /** Whether `value` matches `node`, without a message or a path. */
  #matches(node: _Node, value: unknown): boolean {
    const depth = this.#path.length;
    const message = this.#check(node, value);
    this.#path.length = depth;
    return message === undefined;
  }

  /**
   * The message of the first mismatch of `value` against `node`, with
   * `#path` left pointing at it; undefined (and `#path` unchanged) when it
   * matches.
   */
  #check(node: _Node, value: unknown): string | undefined {
    this.#spend(1);
    if (++this.#depth > MAX_CHECK_DEPTH) {
      throw new SchemaError(`checking the value nests deeper than ${MAX_CHECK_DEPTH} schemas`);
    }
    try {
      if (node.always !== undefined) return node.always ? undefined : "is not allowed";
      return this.#checkTyped(node, value) ?? this.#checkApplicators(node, value);
    } finally {
      this.#depth--;
    }
  }

  #checkTyped(node: _Node, value: unknown): string | undefined {
    if (node.types && !_hasType(node.types, value)) {
      return `expected ${[...node.types].join(" or ")}, got ${_kind(value)}`;
    }
    if (node.const && !this.#equal(node.const.value, value)) return `expected ${node.const.shown}`;
    if (node.enum && !node.enum.values.some((option) => this.#equal(option, value))) {
      return `expected ${node.enum.shown}`;
    }
    if (typeof value === "number") return _checkNumber(node, value);
    if (typeof value === "string") return this.#checkString(node, value);
    if (Array.isArray(value)) return this.#checkArray(node, value);
    if (_isObject(value)) return this.#checkObject(node, value);
    return undefined;
  }

  #checkApplicators(node: _Node, value: unknown): string | undefined {
    if (node.ref) {
      const message = this.#check(node.ref, value);
      if (message !== undefined) return message;
    }
    for (const each of node.allOf ?? []) {
      const message = this.#check(each, value);
      if (message !== undefined) return message;
    }
    if (node.anyOf && !node.anyOf.some((option) => this.#matches(option, value))) {
      return "matches none of the schemas in anyOf";
    }
    if (node.oneOf) {
      let matched = 0;
      for (const option of node.oneOf) {
        if (this.#matches(option, value) && ++matched > 1) break;
      }
      if (matched !== 1) {
        return matched === 0
          ? "matches none of the schemas in oneOf"
          : "matches more than one of the schemas in oneOf";
      }
    }
    if (node.not && this.#matches(node.not, value)) return "matches a schema it must not";
    return undefined;
  }

  #checkString(node: _Node, value: string): string | undefined {
    if (node.minLength !== undefined || node.maxLength !== undefined || node.format) {
      this.#spend(_units(value));
    }
    if (node.minLength !== undefined || node.maxLength !== undefined) {
      const length = _codePoints(value);
      if (node.minLength !== undefined && length < node.minLength) {
        return `must be at least ${node.minLength} characters`;
      }
      if (node.maxLength !== undefined && length > node.maxLength) {
        return `must be at most ${node.maxLength} characters`;
      }
    }
    if (node.format && !FORMAT_CHECKS[node.format](value)) return `must be a valid ${node.format}`;
    return undefined;
  }

  #checkArray(node: _Node, value: unknown[]): string | undefined {
    if (node.minItems !== undefined && value.length < node.minItems) {
      return `must have at least ${node.minItems} items`;
    }
    if (node.maxItems !== undefined && value.length > node.maxItems) {
      return `must have at most ${node.maxItems} items`;
    }
    const prefix = node.prefixItems ?? [];
    for (let i = 0; i < value.length; i++) {
      const schema = i < prefix.length ? prefix[i] : node.items;
      if (!schema) break;
      this.#path.push(i);
      const message = this.#check(schema, value[i]);
      if (message !== undefined) return message;
      this.#path.pop();
    }
    if (node.uniqueItems) {
      const seen = new Map<string, number>();
      for (let i = 0; i < value.length; i++) {
        const key = this.#canonical(value[i]);
        const first = seen.get(key);
        if (first !== undefined) {
          this.#path.push(i);
          return `duplicates the item at ${first}`;
        }
        seen.set(key, i);
      }
    }
    if (node.contains) {
      const min = node.minContains ?? 1;
      const max = node.maxContains ?? Infinity;
      let count = 0;
      for (const item of value) {
        if (this.#matches(node.contains, item) && ++count > max) break;
      }
      if (count < min) return `must contain at least ${min} matching items`;
      if (count > max) return `must contain at most ${max} matching items`;
    }
    return undefined;
  }

  #checkObject(node: _Node, value: Record<string, unknown>): string | undefined {
    const named = node.properties || node.additionalProperties || node.propertyNames;
    if (!named && node.minProperties === undefined && node.maxProperties === undefined) {
      return this.#checkRequired(node, value);
    }
    const keys = Object.keys(value);
    this.#spend(keys.length);
    if (node.minProperties !== undefined && keys.length < node.minProperties) {
      return `must have at least ${node.minProperties} properties`;
    }
    if (node.maxProperties !== undefined && keys.length > node.maxProperties) {
      return `must have at most ${node.maxProperties} properties`;
    }
    const missing = this.#checkRequired(node, value);
    if (missing !== undefined) return missing;
    if (named) {
      for (const key of keys) {
        this.#path.push(key);
        if (node.propertyNames) {
          const message = this.#check(node.propertyNames, key);
          if (message !== undefined) return `name ${message}`;
        }
        const declared = node.properties?.get(key);
        if (!declared && node.additionalProperties?.always === false) {
          this.#path.pop();
          return `unknown field ${_shown(key)}`;
        }
        const schema = declared ?? node.additionalProperties;
        const message = schema ? this.#check(schema, value[key]) : this.#spend(1);
        if (message !== undefined) return message;
        this.#path.pop();
      }
    }
    return undefined;
  }

  #checkRequired(node: _Node, value: Record<string, unknown>): string | undefined {
    for (const key of node.required ?? []) {
      this.#spend(1);
      if (!Object.hasOwn(value, key)) {
        this.#path.push(key);
        return "is required";
      }
    }
    return undefined;
  }

  /** JSON equality of a schema's value `a` and a checked value `b`, counting its steps. */
  #equal(a: unknown, b: unknown): boolean {
    this.#spend(1);
    if (typeof a === "string" && typeof b === "string" && a.length === b.length) {
      this.#spend(_units(a) - 1);
    }
    if (a === b) return true;
    if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
    if (Array.isArray(a) !== Array.isArray(b)) return false;
    if (Array.isArray(a)) {
      const other = b as unknown[];
      return a.length === other.length && a.every((item, i) => this.#equal(item, other[i]));
    }
    const left = a as Record<string, unknown>;
    const right = b as Record<string, unknown>;
    const keys = Object.keys(left);
    const count = Object.keys(right).length;
    this.#spend(keys.length + count);
    if (keys.length !== count) return false;
    return keys.every((key) => Object.hasOwn(right, key) && this.#equal(left[key], right[key]));
  }

  /** A text equal for two values exactly when they are equal as JSON, counting its steps. */
  #canonical(value: unknown): string {
    let steps = 0;
    const walk = (v: unknown): unknown => {
      steps++;
      if (Array.isArray(v)) return v.map(walk);
      if (_isObject(v)) {
        const keys = Object.keys(v).sort();
        steps += keys.length;
        return keys.map((key) => [key, walk(v[key])]);
      }
      if (typeof v === "string") steps += _units(v) - 1;
      return v;
    };
    const text = JSON.stringify(walk(value));
    this.#spend(steps);
    return text;
  }
}

function _hasType(types: ReadonlySet<_Type>, value: unknown): boolean {
  const kind = _kind(value);
  if (types.has(kind as _Type)) return true;
  return kind === "number" && types.has("integer") && Number.isInteger(value);
}

function _checkNumber(node: _Node, value: number): string | undefined {
  if (node.minimum !== undefined && value < node.minimum) return `must be >= ${node.minimum}`;
  if (node.maximum !== undefined && value > node.maximum) return `must be <= ${node.maximum}`;
  if (node.exclusiveMinimum !== undefined && value <= node.exclusiveMinimum) {
    return `must be > ${node.exclusiveMinimum}`;
  }
  if (node.exclusiveMaximum !== undefined && value >= node.exclusiveMaximum) {
    return `must be < ${node.exclusiveMaximum}`;
  }
  if (node.multipleOf !== undefined) {
    const quotient = value / node.multipleOf;
    const off = Math.abs(quotient - Math.round(quotient));
    if (!Number.isFinite(quotient) || off > 4 * Number.EPSILON * Math.max(1, Math.abs(quotient))) {
      return `must be a multiple of ${node.multipleOf}`;
    }
  }
  return undefined;
}

function _codePoints(text: string): number {
  let count = 0;
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    // A high surrogate followed by a low one is one code point.
    if (unit >= 0xd800 && unit <= 0xdbff && i + 1 < text.length) {
      const next = text.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) i++;
    }
    count++;
  }
  return count;
}

/** A value as a message names it: its JSON, cut at 60 characters. */
function _shown(value: unknown): string {
  // A long string is cut before it is quoted, so a message never costs its length.
  const text = typeof value === "string" && value.length > 60
    ? JSON.stringify(value.slice(0, 60)) + "…"
    : JSON.stringify(value) ?? String(value);
  return text.length > 60 ? `${text.slice(0, 60)}…` : text;
}

// The format checks: fixed expressions written here, each anchored and
// without nested or adjacent overlapping repetition, so they run in time
// linear in the string.
const DATE = /^(\d{4})-(\d{2})-(\d{2})$/;
const TIME = /^(\d{2}):(\d{2}):(\d{2})(?:\.\d+)?(?:[Zz]|[+-](\d{2}):(\d{2}))$/;
const UUID = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;
const EMAIL_LOCAL = /^[^\s@"(),:;<>[\\\]]+$/;
const LABEL = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;
const OCTET = /^(?:0|[1-9]\d{0,2})$/;
const URI_FORBIDDEN = new Set(['"', "<", ">", "{", "}", "|", "\\", "^", "`"]);

function _isDate(text: string): boolean {
  const match = DATE.exec(text);
  if (!match) return false;
  const [year, month, day] = [Number(match[1]), Number(match[2]), Number(match[3])];
  if (month < 1 || month > 12 || day < 1) return false;
  const leap = (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0;
  const days = [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1];
  return day <= days;
}

function _isTime(text: string): boolean {
  const match = TIME.exec(text);
  if (!match) return false;
  const [hour, minute, second] = [Number(match[1]), Number(match[2]), Number(match[3])];
  const offsetOk = match[4] === undefined || (Number(match[4]) <= 23 && Number(match[5]) <= 59);
  return hour <= 23 && minute <= 59 && second <= 60 && offsetOk;
}

/** True when `text` has no space, control character or character a URI must escape. */
function _uriCharacters(text: string): boolean {
  for (const ch of text) {
    const code = ch.codePointAt(0)!;
    if (code <= 0x20 || code === 0x7f || URI_FORBIDDEN.has(ch)) return false;
  }
  return true;
}

function _isHostname(text: string): boolean {
  if (text.length === 0 || text.length > 253) return false;
  return text.split(".").every((label) => LABEL.test(label));
}

const FORMAT_CHECKS: Readonly<Record<_Format, (text: string) => boolean>> = {
  "date-time": (text) => {
    const t = text.search(/[Tt]/);
    return t === 10 && _isDate(text.slice(0, t)) && _isTime(text.slice(t + 1));
  },
  date: _isDate,
  time: _isTime,
  email: (text) => {
    const at = text.lastIndexOf("@");
    if (at < 1 || at > 64) return false;
    const domain = text.slice(at + 1);
    return EMAIL_LOCAL.test(text.slice(0, at)) && domain.includes(".") && _isHostname(domain);
  },
  uuid: (text) => UUID.test(text),
  uri: (text) =>
    _uriCharacters(text) && /^[A-Za-z][A-Za-z0-9+.-]*:/.test(text) &&
    URL.canParse(text),
  ipv4: (text) => {
    const parts = text.split(".");
    return parts.length === 4 && parts.every((p) => OCTET.test(p) && Number(p) <= 255);
  },
};
