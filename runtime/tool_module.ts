/**
 * The shape of a JIT tool module (SPEC section 10), read from its syntax
 * tree without running it. A tool module exports `run` and may describe
 * itself, in either of two shapes or both:
 *
 * - named exports: `export function run(args, sys)` (or `async`, or
 *   `export const run = …` bound to a function), beside
 *   `export const name/description/input/manifest`;
 * - a default export written in place as an object literal:
 *   `export default { name, description, input, manifest, run }`.
 *
 * The default export is taken only when every part of it is verified: an
 * object literal (optionally under `as`/`satisfies`) with no spread,
 * computed key, getter or setter, no property beyond those five, literal
 * values (or constants bound to literals) for the descriptive ones, and a
 * function for `run`. Anything else (an identifier, a call, a `Proxy`, a
 * class) is refused, since what it holds is only known by running it. When
 * both shapes are present they must agree: the same `run` binding and equal
 * values. The registration's own `name`, `description`, `input` and
 * `manifest` are the ones that count; the module's are a description.
 *
 * Re-exports (`export … from`) are refused: they import.
 *
 * @module
 */

import type { parse as parseModule } from "@babel/parser";
import { canonicalJson } from "../broker/digest.ts";

type File = ReturnType<typeof parseModule>;
type Statement = File["program"]["body"][number];
type ExportDefault = Extract<Statement, { type: "ExportDefaultDeclaration" }>;
type Node = { type: string; start?: number | null; end?: number | null };

/** The properties a tool module's default export may have. */
export const TOOL_MODULE_KEYS = ["name", "description", "input", "manifest", "run"] as const;

/** The local name the entry module gives a tool's default export. */
const DEFAULT_LOCAL = "__libosToolModule";

/** Deepest nesting of a literal value that is evaluated. */
const MAX_LITERAL_DEPTH = 64;

/** A top-level binding of the module. */
interface Binding {
  kind: "function" | "const" | "mutable" | "other";
  /** The function, or the constant's initializer (without `as`/`satisfies`). */
  node?: Node;
}

/** Why a tool module is refused, as a sentence fragment after "Cannot register tool "x": ". */
export class ToolModuleError extends Error {}

let parser: Promise<typeof parseModule> | undefined;

/**
 * Checks the shape of a tool module and returns the source of the entry
 * module that runs it: the tool's source followed by a default export that
 * calls its `run` with `(input, sys)`. Throws {@link ToolModuleError}.
 *
 * @example
 * ```ts ignore
 * const entry = await toolEntrySource("export default { run: (a: { n: number }) => a.n * 2 };");
 * ```
 */
export async function toolEntrySource(source: string): Promise<string> {
  parser ??= import("@babel/parser").then((m) => m.parse);
  const parse = await parser;
  let file: File;
  try {
    file = parse(source, { sourceType: "module", plugins: ["typescript"] });
  } catch (error) {
    throw new ToolModuleError(`its source does not parse: ${(error as Error).message}`);
  }
  const bindings = new Map<string, Binding>();
  /** Exported name → the local binding it exports. */
  const exported = new Map<string, string>();
  let defaultExport: ExportDefault | undefined;
  for (const statement of file.program.body) {
    switch (statement.type) {
      case "ImportDeclaration":
      case "TSImportEqualsDeclaration":
        throw new ToolModuleError("imports are not allowed");
      case "ExportAllDeclaration":
        throw new ToolModuleError("re-exports are not allowed");
      case "TSExportAssignment":
        throw new ToolModuleError("export = is not allowed: export a function named run");
      case "ExportDefaultDeclaration":
        defaultExport = statement;
        break;
      case "ExportNamedDeclaration": {
        if (statement.source) throw new ToolModuleError("re-exports are not allowed");
        if (statement.exportKind === "type") break;
        if (statement.declaration) {
          for (const name of declare(statement.declaration as Node, bindings)) {
            exported.set(name, name);
          }
        }
        for (const specifier of statement.specifiers) {
          if (specifier.type !== "ExportSpecifier") {
            throw new ToolModuleError("re-exports are not allowed");
          }
          if (specifier.exportKind === "type") continue;
          const as = keyName(specifier.exported as Node);
          if (as === "default") throw new ToolModuleError(DEFAULT_SHAPE);
          if (as !== undefined) exported.set(as, (specifier.local as { name: string }).name);
        }
        break;
      }
      default:
        declare(statement as Node, bindings);
    }
  }

  const namedRun = exported.has("run") ? exportedRun(exported.get("run"), bindings) : undefined;
  if (!defaultExport) {
    if (!namedRun) {
      throw new ToolModuleError("the source must export a function named run");
    }
    return entryCalling(source, namedRun);
  }

  const object = withoutTypes(defaultExport.declaration as Node) as Node & {
    properties?: Node[];
  };
  if (object.type !== "ObjectExpression") throw new ToolModuleError(DEFAULT_SHAPE);
  const seen = new Set<string>();
  let hasRun = false;
  for (const property of object.properties ?? []) {
    const key = propertyKey(property, seen);
    if (key === "run") {
      hasRun = true;
      const local = defaultRun(property, bindings);
      if (namedRun && local !== namedRun) {
        throw new ToolModuleError(
          "its default export's run is not the exported run: export one function, or make them agree",
        );
      }
      continue;
    }
    const value = (property as Node & { value: Node }).value;
    const literal = literalValue(value, bindings, 0);
    if (!literal) {
      throw new ToolModuleError(
        `its default export's ${key} must be a literal value (or a constant bound to one)`,
      );
    }
    if (exported.has(key)) agree(key, value, literal.value, exported.get(key), bindings);
  }
  if (!hasRun && !namedRun) {
    throw new ToolModuleError(
      "the source must export a function named run or a default export with run",
    );
  }
  return entryCalling(
    withDefaultAsLocal(source, defaultExport),
    hasRun ? `${DEFAULT_LOCAL}.run` : namedRun!,
  );
}

/** `module` followed by the entry's default export, which calls `run` with `(input, sys)`. */
function entryCalling(module: string, run: string): string {
  return `${module}\n;export default async function __libosToolMain(sys, input) {\n` +
    `  return await ${run}(input, sys);\n}\n`;
}

const DEFAULT_SHAPE =
  "its default export must be an object literal { name, description, input, manifest, run } written in place";

/** Records the bindings a top-level declaration makes; returns their names. */
function declare(node: Node, bindings: Map<string, Binding>): string[] {
  switch (node.type) {
    case "FunctionDeclaration": {
      const fn = node as Node & { id: { name: string } | null; generator: boolean };
      if (!fn.id) return [];
      bindings.set(fn.id.name, { kind: fn.generator ? "other" : "function", node });
      return [fn.id.name];
    }
    case "VariableDeclaration": {
      const decl = node as Node & {
        kind: string;
        declarations: { id: Node & { name?: string }; init: Node | null }[];
      };
      const names: string[] = [];
      for (const { id, init } of decl.declarations) {
        if (id.type !== "Identifier" || !id.name) {
          // A destructured binding holds what only running the module tells.
          for (const name of patternNames(id)) {
            bindings.set(name, { kind: "other" });
            names.push(name);
          }
          continue;
        }
        const kind = decl.kind === "const" && init ? "const" : "mutable";
        bindings.set(id.name, { kind, node: init ? withoutTypes(init) : undefined });
        names.push(id.name);
      }
      return names;
    }
    case "ClassDeclaration":
    case "TSEnumDeclaration":
    case "TSModuleDeclaration": {
      const id = (node as Node & { id?: { name?: string } | null }).id;
      if (!id?.name) return [];
      bindings.set(id.name, { kind: "other" });
      return [id.name];
    }
    default:
      return [];
  }
}

/** The identifiers a destructuring pattern binds. */
function patternNames(node: Node): string[] {
  const names: string[] = [];
  const visit = (value: unknown): void => {
    if (!value || typeof value !== "object") return;
    if (Array.isArray(value)) return value.forEach(visit);
    const n = value as Node & Record<string, unknown>;
    if (n.type === "Identifier") names.push(n.name as string);
    else if (n.type === "ObjectProperty") visit(n.value);
    else {
      for (const key of ["properties", "elements", "argument", "left"]) visit(n[key]);
    }
  };
  visit(node);
  return names;
}

/** The local function the named export `run` is bound to. */
function exportedRun(local: string | undefined, bindings: Map<string, Binding>): string {
  if (local !== undefined && isFunctionBinding(bindings.get(local))) return local;
  throw new ToolModuleError("its export run must be a function declared in the module");
}

function isFunctionBinding(binding: Binding | undefined): boolean {
  if (binding?.kind === "function") return true;
  return binding?.kind === "const" && isFunction(binding.node);
}

function isFunction(node: Node | undefined): boolean {
  if (!node) return false;
  if (node.type === "ArrowFunctionExpression") return true;
  return node.type === "FunctionExpression" && !(node as Node & { generator: boolean }).generator;
}

/**
 * The key of a default-export property, refusing what cannot be verified:
 * spread, computed keys, getters and setters, unknown or repeated keys.
 */
function propertyKey(property: Node, seen: Set<string>): string {
  if (property.type === "SpreadElement") {
    throw new ToolModuleError("its default export may not spread another object");
  }
  const p = property as Node & { computed: boolean; key: Node; kind?: string };
  if (p.computed) throw new ToolModuleError("its default export may not have computed keys");
  if (property.type === "ObjectMethod" && p.kind !== "method") {
    throw new ToolModuleError("its default export may not have getters or setters");
  }
  const key = keyName(p.key);
  if (key === undefined || !(TOOL_MODULE_KEYS as readonly string[]).includes(key)) {
    throw new ToolModuleError(
      `its default export may only have ${TOOL_MODULE_KEYS.join(", ")}, not "${
        String(key ?? "?").slice(0, 64)
      }"`,
    );
  }
  if (seen.has(key)) throw new ToolModuleError(`its default export has ${key} twice`);
  seen.add(key);
  return key;
}

function keyName(key: Node): string | undefined {
  if (key.type === "Identifier") return (key as Node & { name: string }).name;
  if (key.type === "StringLiteral") return (key as Node & { value: string }).value;
  return undefined;
}

/**
 * Checks the default export's `run`: a method, a function written in place,
 * or a module function. Returns the local name it refers to, if any.
 */
function defaultRun(property: Node, bindings: Map<string, Binding>): string | undefined {
  const notFunction = () =>
    new ToolModuleError("its default export's run must be a function declared in the module");
  if (property.type === "ObjectMethod") {
    if ((property as Node & { generator: boolean }).generator) throw notFunction();
    return undefined;
  }
  const value = withoutTypes((property as Node & { value: Node }).value);
  if (value.type === "Identifier") {
    const name = (value as Node & { name: string }).name;
    if (!isFunctionBinding(bindings.get(name))) throw notFunction();
    return name;
  }
  if (!isFunction(value)) throw notFunction();
  return undefined;
}

/** Whether a default-export value agrees with the named export of the same key. */
function agree(
  key: string,
  value: Node,
  literal: unknown,
  local: string | undefined,
  bindings: Map<string, Binding>,
): void {
  const own = withoutTypes(value);
  if (own.type === "Identifier" && (own as Node & { name: string }).name === local) return;
  const binding = local === undefined ? undefined : bindings.get(local);
  const named = binding?.kind === "const" ? literalValue(binding.node, bindings, 0) : undefined;
  if (!named) {
    throw new ToolModuleError(
      `cannot compare its default export's ${key} with the exported ${key}: the export is not a literal`,
    );
  }
  if (canonicalJson(named.value) !== canonicalJson(literal)) {
    throw new ToolModuleError(`its default export's ${key} differs from the exported ${key}`);
  }
}

/**
 * The value of a literal written in the source (strings, numbers, booleans,
 * null, arrays and plain objects of them, or a constant bound to one), or
 * undefined when it is anything else.
 */
function literalValue(
  node: Node | undefined,
  bindings: Map<string, Binding>,
  depth: number,
): { value: unknown } | undefined {
  if (!node || depth > MAX_LITERAL_DEPTH) return undefined;
  const n = withoutTypes(node) as Node & Record<string, unknown>;
  switch (n.type) {
    case "StringLiteral":
    case "NumericLiteral":
    case "BooleanLiteral":
      return { value: n.value };
    case "NullLiteral":
      return { value: null };
    case "TemplateLiteral": {
      const quasis = n.quasis as { value: { cooked: string | null } }[];
      const cooked = quasis[0]?.value.cooked;
      if ((n.expressions as unknown[]).length || typeof cooked !== "string") return undefined;
      return { value: cooked };
    }
    case "UnaryExpression": {
      const argument = n.argument as Node & { value?: unknown };
      if (n.operator !== "-" || argument.type !== "NumericLiteral") return undefined;
      return { value: -(argument.value as number) };
    }
    case "ArrayExpression": {
      const out: unknown[] = [];
      for (const element of n.elements as (Node | null)[]) {
        const item = element && literalValue(element, bindings, depth + 1);
        if (!item) return undefined;
        out.push(item.value);
      }
      return { value: out };
    }
    case "ObjectExpression": {
      const out: Record<string, unknown> = {};
      for (const property of n.properties as (Node & Record<string, unknown>)[]) {
        if (property.type !== "ObjectProperty" || property.computed) return undefined;
        const key = property.key as Node & { value?: unknown };
        const name = key.type === "NumericLiteral" ? String(key.value) : keyName(key);
        if (name === undefined || name === "__proto__" || Object.hasOwn(out, name)) {
          return undefined;
        }
        const item = literalValue(property.value as Node, bindings, depth + 1);
        if (!item) return undefined;
        out[name] = item.value;
      }
      return { value: out };
    }
    case "Identifier": {
      const binding = bindings.get(n.name as string);
      if (binding?.kind !== "const") return undefined;
      return literalValue(binding.node, bindings, depth + 1);
    }
    default:
      return undefined;
  }
}

/** `node` without the type-only wrappers `as`, `satisfies` and `<T>`. */
function withoutTypes(node: Node): Node {
  let n = node as Node & { expression?: Node };
  while (
    (n.type === "TSAsExpression" || n.type === "TSSatisfiesExpression" ||
      n.type === "TSTypeAssertion") && n.expression
  ) {
    n = n.expression as Node & { expression?: Node };
  }
  return n;
}

/** The source with its `export default` turned into a local constant declaration. */
function withDefaultAsLocal(source: string, node: ExportDefault): string {
  const start = node.start ?? 0;
  const keywords = /^export(?:\s|\/\*[\s\S]*?\*\/|\/\/[^\n\r\u2028\u2029]*)*default\b/.exec(
    source.slice(start),
  );
  if (!keywords) throw new ToolModuleError(DEFAULT_SHAPE);
  return `${source.slice(0, start)}const ${DEFAULT_LOCAL} =${
    source.slice(start + keywords[0].length)
  }`;
}
