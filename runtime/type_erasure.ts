/**
 * Type erasure of a module whose TypeScript is only types: annotations,
 * type parameters and arguments, `as`/`satisfies`/`!`/`<T>x`, interfaces,
 * type aliases and `declare`d statements. They are blanked out (replaced by
 * spaces, a removed statement by `;`), so the JavaScript left has the
 * module's meaning and the Worker that runs it transpiles nothing.
 *
 * The result is checked, not trusted: the JavaScript is parsed again as
 * JavaScript and its syntax tree must be the module's own once its types
 * are taken out (positions, comments and parentheses aside). A module with
 * TypeScript that has a meaning of its own (an `enum`, a `namespace`, a
 * parameter property, a decorator, an access modifier), an import or
 * export that names bindings (TypeScript drops those that are only types,
 * which takes a type checker to know), or any difference between the two
 * trees gets no JavaScript: it runs as TypeScript, as before.
 *
 * @module
 */

import type { parse as parseModule } from "@babel/parser";

type AstNode =
  & { type: string; start?: number | null; end?: number | null }
  & Record<
    string,
    unknown
  >;

/** Fields that hold only types: what they span is blanked whole. */
const TYPE_FIELDS = new Set([
  "typeAnnotation",
  "returnType",
  "typeParameters",
  "typeArguments",
  "superTypeArguments",
  "superTypeParameters",
]);

/** Expressions that wrap their `expression` in a type: only the type is blanked. */
const TYPE_WRAPPERS = new Set([
  "TSAsExpression",
  "TSSatisfiesExpression",
  "TSNonNullExpression",
  "TSInstantiationExpression",
  "TSTypeAssertion",
]);

/** Statements and class members that are only types. */
const TYPE_ONLY = new Set([
  "TSInterfaceDeclaration",
  "TSTypeAliasDeclaration",
  "TSDeclareFunction",
  "TSDeclareMethod",
  "TSIndexSignature",
]);

/** Fields that are not part of a tree's meaning. */
const IGNORED_FIELDS = new Set([
  "start",
  "end",
  "loc",
  "range",
  "extra",
  "comments",
  "leadingComments",
  "trailingComments",
  "innerComments",
  "errors",
  "definite",
  "exportKind",
  "importKind",
  ...TYPE_FIELDS,
]);

/** TypeScript flags that mean nothing when unset, and something when set. */
const TS_FLAGS = new Set(["declare", "abstract", "override", "readonly", "accessibility"]);

/** Bindings whose `optional` (`x?`) is a type only. */
const BINDINGS = new Set([
  "Identifier",
  "ObjectPattern",
  "ArrayPattern",
  "AssignmentPattern",
  "RestElement",
]);

/** Marks a node taken out of a tree. */
const DROPPED = Symbol("dropped");

let parser: Promise<typeof parseModule> | undefined;

/**
 * The JavaScript of TypeScript module `source` when its TypeScript is only
 * types (checked: see the module docs); undefined otherwise, or when it
 * does not parse.
 *
 * @example
 * ```ts
 * import { eraseTypes } from "./type_erasure.ts";
 * const js = await eraseTypes("export const n = (1 as number);");
 * console.assert(js === "export const n = (1          );");
 * ```
 */
export async function eraseTypes(source: string): Promise<string | undefined> {
  try {
    parser ??= import("@babel/parser").then((m) => m.parse);
    const parse = await parser;
    const typed = parse(source, { sourceType: "module", plugins: ["typescript"] });
    // TypeScript drops an import or export whose names are only types (or
    // unused); which ones those are takes a type checker: such modules stay
    // TypeScript.
    if ((typed.program.body as unknown as AstNode[]).some(namesOtherBindings)) return undefined;
    const text = source.split("");
    blank(typed.program as unknown as AstNode, text);
    const javascript = text.join("");
    const plain = parse(javascript, { sourceType: "module" });
    return JSON.stringify(shape(typed.program)) === JSON.stringify(shape(plain.program))
      ? javascript
      : undefined;
  } catch {
    return undefined;
  }
}

function isNode(value: unknown): value is AstNode {
  return typeof value === "object" && value !== null && typeof (value as AstNode).type === "string";
}

/** Replaces `text[from, to)` with spaces, keeping line breaks (and so line numbers). */
function spaces(text: string[], from: number, to: number): void {
  for (let i = from; i < to; i++) if (text[i] !== "\n" && text[i] !== "\r") text[i] = " ";
}

/** Blanks the types within `node` in `text`. */
function blank(node: AstNode, text: string[]): void {
  const { start, end } = node;
  if (typeof start !== "number" || typeof end !== "number") return;
  if (TYPE_ONLY.has(node.type) || node.declare === true || isTypeExport(node)) {
    spaces(text, start, end);
    text[start] = ";";
    return;
  }
  if (TYPE_WRAPPERS.has(node.type) && isNode(node.expression)) {
    const inner = node.expression;
    if (node.type === "TSTypeAssertion") spaces(text, start, inner.start ?? start);
    else spaces(text, inner.end ?? end, end);
    blank(inner, text);
    return;
  }
  if (
    node.type === "Identifier" && typeof node.name === "string" &&
    (node.optional === true || node.typeAnnotation)
  ) {
    // `x?: T` and `x!: T`: everything after the name.
    spaces(text, start + node.name.length, end);
    return;
  }
  for (const [key, value] of Object.entries(node)) {
    if (TYPE_FIELDS.has(key) && isNode(value)) {
      spaces(text, value.start ?? 0, value.end ?? 0);
    } else if (Array.isArray(value)) {
      for (const item of value) if (isNode(item)) blank(item, text);
    } else if (isNode(value)) blank(value, text);
  }
}

/** An import or export that names bindings (`import { X } from`, `export { X }`, `export *`). */
function namesOtherBindings(node: AstNode): boolean {
  if (node.type === "ExportAllDeclaration") return true;
  if (node.type !== "ImportDeclaration" && node.type !== "ExportNamedDeclaration") return false;
  return Array.isArray(node.specifiers) && node.specifiers.length > 0;
}

/** `export type …`, `export interface …`, and the like. */
function isTypeExport(node: AstNode): boolean {
  if (node.type !== "ExportNamedDeclaration") return false;
  if (node.exportKind === "type") return true;
  const declaration = node.declaration;
  return isNode(declaration) && (TYPE_ONLY.has(declaration.type) || declaration.declare === true);
}

/** What a syntax tree means, its types taken out: comparable as JSON. */
function shape(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(shape).filter((item) => item !== DROPPED);
  if (!isNode(value)) return value;
  if (TYPE_WRAPPERS.has(value.type)) return shape(value.expression);
  if (
    TYPE_ONLY.has(value.type) || value.type === "EmptyStatement" || value.declare === true ||
    isTypeExport(value)
  ) return DROPPED;
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(value).sort()) {
    if (IGNORED_FIELDS.has(key)) continue;
    if (key === "optional" && BINDINGS.has(value.type)) continue;
    const field = value[key];
    if (TS_FLAGS.has(key) && !field) continue;
    if (field === undefined) continue;
    out[key] = shape(field);
  }
  return out;
}
