/**
 * Checks the import graph of the project's own modules, as `deno info --json`
 * resolves it, and exits 1 on:
 *
 * - an **import cycle** among the project's modules, through runtime and
 *   type-only imports alike;
 * - **guest code reaching the host**: the guest is the worker bundle's entry
 *   (`runtime/guest/worker_main.ts`, what `deno task bundle` bundles) and every
 *   module it imports, through runtime and type-only imports alike. Each of
 *   them must be guest-side code ({@link GUEST}) or a definition both sides
 *   share ({@link SHARED}); every other module of the project is host-only
 *   (the kernel, the broker and its stores, executions, cells, providers,
 *   syscall handlers, `api/`, `cli/`, `mod.ts`, `cli.ts`).
 *
 * What counts as a runtime import: `deno info` lists an `import type` (and
 * `export type … from`, and an `import("…")` type) as a type dependency, and
 * every other import, re-export and dynamic `import()` as a code dependency,
 * even `import { type X }` (which Deno erases when it runs the module). A
 * cycle through a type-only import does not order module evaluation, but it
 * still ties its modules together (none can be built, read or tested without
 * the others), so it fails too: a module that needs part of another that
 * needs it back declares the members it uses as an interface of its own
 * (as `runtime/waits.ts` does for the mailboxes and topic events). Examples
 * in doc comments are not imports.
 *
 * ```sh
 * deno run --allow-read --allow-run test/_import_graph.ts
 * ```
 *
 * `deno task ok` runs it, and `test/import_graph_test.ts` runs it with the
 * test suite.
 *
 * @module
 */

import { join, relative, sep } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

/** The project's imports: module path (relative to the root, `/`-separated) → modules it imports. */
export interface ImportGraph {
  /** Imports that run when the module is evaluated (static and dynamic). */
  runtime: Map<string, Set<string>>;
  /** Imports of types only (`import type`, `export type … from`). */
  types: Map<string, Set<string>>;
}

/** What the check is told about the project. */
export interface GraphRules {
  /** The module a Worker starts from; the guest is everything it imports. */
  guestEntry: string;
  /** Guest-side code: module paths, or folders when ending in `/`. */
  guest: readonly string[];
  /** Definitions guest and host share (the ABI's types, the cell protocol). */
  shared: readonly string[];
}

/** What the check found. */
export interface GraphReport {
  /** What fails the check, one line each. */
  errors: string[];
}

/** Code that runs inside the Worker (the worker bundle's sources). */
export const GUEST: readonly string[] = [
  "runtime/guest/",
  "tools/",
];

/** Modules the guest may import (their types or values): definitions of the ABI and protocol. */
export const SHARED: readonly string[] = [
  "broker/abi.ts",
  "broker/canonical_json.ts",
  "broker/errors.ts",
];

/** The rules this project is checked against. */
export const RULES: GraphRules = {
  guestEntry: "runtime/guest/worker_main.ts",
  guest: GUEST,
  shared: SHARED,
};

const SKIPPED_FOLDERS = new Set(["node_modules"]);

/** Every TypeScript module under `root`, skipping hidden folders and `node_modules`. */
export async function projectModules(root: string): Promise<string[]> {
  const found: string[] = [];
  const walk = async (dir: string): Promise<void> => {
    for await (const entry of Deno.readDir(dir)) {
      const path = join(dir, entry.name);
      if (entry.isDirectory) {
        if (!entry.name.startsWith(".") && !SKIPPED_FOLDERS.has(entry.name)) await walk(path);
      } else if (entry.isFile && /\.(ts|tsx|mts)$/.test(entry.name)) {
        found.push(relative(root, path).split(sep).join("/"));
      }
    }
  };
  await walk(root);
  return found.sort();
}

interface _InfoDependency {
  code?: { specifier?: string };
  type?: { specifier?: string };
}

interface _InfoModule {
  specifier: string;
  dependencies?: _InfoDependency[];
  error?: string;
}

/**
 * Builds the graph of `modules` (paths relative to `root`) with one
 * `deno info --json` run, from a root module that imports each of them.
 */
export async function loadImportGraph(
  root: string,
  modules: readonly string[],
): Promise<ImportGraph> {
  const base = pathToFileURL(join(root, "/")).href;
  const entry = "data:application/typescript," +
    encodeURIComponent(modules.map((m) => `import ${JSON.stringify(base + m)};`).join("\n"));
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", entry],
    cwd: root,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  if (code !== 0) {
    throw new Error(
      `Cannot read the import graph of "${root}": ${new TextDecoder().decode(stderr).trim()}`,
    );
  }
  const info = JSON.parse(new TextDecoder().decode(stdout)) as { modules: _InfoModule[] };
  const own = (specifier: string | undefined): string | undefined =>
    specifier?.startsWith(base) ? specifier.slice(base.length) : undefined;
  const graph: ImportGraph = { runtime: new Map(), types: new Map() };
  for (const module of info.modules) {
    const from = own(module.specifier);
    if (from === undefined) continue;
    if (module.error) throw new Error(`Cannot read module "${from}": ${module.error}`);
    const runtime = new Set<string>();
    const types = new Set<string>();
    for (const dependency of module.dependencies ?? []) {
      const code = own(dependency.code?.specifier);
      const type = own(dependency.type?.specifier);
      if (code !== undefined) runtime.add(code);
      else if (type !== undefined) types.add(type);
    }
    graph.runtime.set(from, runtime);
    graph.types.set(from, types);
  }
  return graph;
}

/** The strongly connected components of more than one module (or a module importing itself). */
function _cycles(edges: Map<string, Set<string>>): string[][] {
  // Tarjan's algorithm, iterative so a deep graph cannot overflow the stack.
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const found: string[][] = [];
  let next = 0;
  for (const start of [...edges.keys()].sort()) {
    if (index.has(start)) continue;
    const work: { node: string; targets: string[]; at: number }[] = [];
    const enter = (node: string) => {
      index.set(node, next);
      low.set(node, next);
      next++;
      stack.push(node);
      onStack.add(node);
      work.push({ node, targets: [...(edges.get(node) ?? [])].sort(), at: 0 });
    };
    enter(start);
    while (work.length) {
      const frame = work[work.length - 1];
      if (frame.at < frame.targets.length) {
        const target = frame.targets[frame.at++];
        if (!index.has(target)) enter(target);
        else if (onStack.has(target)) {
          low.set(frame.node, Math.min(low.get(frame.node)!, index.get(target)!));
        }
        continue;
      }
      work.pop();
      if (work.length) {
        const parent = work[work.length - 1].node;
        low.set(parent, Math.min(low.get(parent)!, low.get(frame.node)!));
      }
      if (low.get(frame.node) !== index.get(frame.node)) continue;
      const component: string[] = [];
      let member: string;
      do {
        member = stack.pop()!;
        onStack.delete(member);
        component.push(member);
      } while (member !== frame.node);
      if (component.length > 1 || edges.get(frame.node)?.has(frame.node)) {
        found.push(component.sort());
      }
    }
  }
  return found.sort((a, b) => a[0].localeCompare(b[0]));
}

/**
 * One concrete cycle inside `component`, as `a → b → … → a`: the shortest
 * one through its first module, or, given `first`, the shortest that starts
 * with that import.
 */
function _cyclePath(
  edges: Map<string, Set<string>>,
  component: string[],
  first?: readonly [string, string],
): string {
  const inside = new Set(component);
  const [start, next] = first ?? [component[0], undefined];
  if (next === start) return `${start} → ${start}`;
  // Breadth-first back to the start (from after the first import, when given), inside the component.
  const previous = new Map<string, string>();
  if (next !== undefined) previous.set(next, start);
  const queue = [next ?? start];
  while (queue.length) {
    const node = queue.shift()!;
    for (const target of [...(edges.get(node) ?? [])].sort()) {
      if (!inside.has(target)) continue;
      if (target === start) {
        const path = [start];
        for (let at = node; at !== start; at = previous.get(at)!) path.splice(1, 0, at);
        path.push(start);
        return path.join(" → ");
      }
      if (!previous.has(target)) {
        previous.set(target, node);
        queue.push(target);
      }
    }
  }
  return component.join(", ");
}

/** The first type-only import (by module name) between two modules of `component`. */
function _typeOnlyImport(graph: ImportGraph, component: string[]): [string, string] | undefined {
  const inside = new Set(component);
  for (const from of component) {
    const runtime = graph.runtime.get(from) ?? new Set<string>();
    const to = [...(graph.types.get(from) ?? [])].sort().find((t) =>
      inside.has(t) && !runtime.has(t)
    );
    if (to !== undefined) return [from, to];
  }
  return undefined;
}

function _matches(patterns: readonly string[], module: string): boolean {
  return patterns.some((p) => p.endsWith("/") ? module.startsWith(p) : module === p);
}

/** Checks `graph` against `rules`. */
export function checkImportGraph(graph: ImportGraph, rules: GraphRules): GraphReport {
  const errors: string[] = [];

  const all = new Map<string, Set<string>>();
  for (const [from, targets] of graph.runtime) all.set(from, new Set(targets));
  for (const [from, targets] of graph.types) {
    const set = all.get(from) ?? new Set<string>();
    for (const t of targets) set.add(t);
    all.set(from, set);
  }
  // Every cycle fails: those of runtime imports alone, then those a type-only import closes.
  const runtimeCycles = _cycles(graph.runtime);
  for (const cycle of runtimeCycles) {
    errors.push(`Import cycle through runtime imports: ${_cyclePath(graph.runtime, cycle)}`);
  }
  const runtimeKeys = new Set(runtimeCycles.map((c) => c.join("\n")));
  for (const cycle of _cycles(all)) {
    if (runtimeKeys.has(cycle.join("\n"))) continue;
    const path = _cyclePath(all, cycle, _typeOnlyImport(graph, cycle));
    errors.push(`Import cycle through type-only imports (${cycle.length} modules): ${path}`);
  }

  if (!graph.runtime.has(rules.guestEntry)) {
    errors.push(`Cannot find the guest entry "${rules.guestEntry}" in the import graph`);
  } else {
    // Breadth-first over runtime and type imports, keeping how each module was reached.
    const via = new Map<string, string | undefined>([[rules.guestEntry, undefined]]);
    const queue = [rules.guestEntry];
    while (queue.length) {
      const module = queue.shift()!;
      const guestSide = _matches(rules.guest, module) || _matches(rules.shared, module);
      if (!guestSide) {
        const chain = [module];
        for (let at = via.get(module); at !== undefined; at = via.get(at)) chain.unshift(at);
        errors.push(`Guest code reaches host module "${module}": ${chain.join(" → ")}`);
        continue;
      }
      for (const target of [...(all.get(module) ?? [])].sort()) {
        if (via.has(target)) continue;
        via.set(target, module);
        queue.push(target);
      }
    }
  }
  return { errors };
}

if (import.meta.main) {
  const root = fileURLToPath(new URL("..", import.meta.url));
  const graph = await loadImportGraph(root, await projectModules(root));
  const { errors } = checkImportGraph(graph, RULES);
  for (const error of errors) console.error(`error: ${error}`);
  if (errors.length) Deno.exit(1);
  console.log(
    `Import graph of ${graph.runtime.size} modules: no import cycle, ` +
      "no guest import of a host module",
  );
}
