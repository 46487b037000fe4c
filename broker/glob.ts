/**
 * The one globbing used by every capability and policy scope: paths,
 * commands, image tags, namespaces and URLs.
 *
 * - `*` matches any run of characters within one segment (never `/`).
 * - `**` matches any run of characters, `/` included.
 * - A `**` that fills a whole segment may also stand for no segment at all:
 *   `x/**` matches `x` itself and everything below it; `a/**` followed by
 *   `/b` matches `a/b` as well as `a/x/y/b`; a pattern that starts with `**`
 *   followed by `/b` matches `b` too.
 * - A backslash makes the character after it literal when that character is
 *   `*` or `\`: `\*` is a star, `\\` a backslash. {@link escapeGlob} writes
 *   any text as a pattern that matches exactly that text.
 * - Every other character is literal (a backslash before any other
 *   character too).
 *
 * Matching runs a small state machine over the compiled pattern in
 * `O(pattern × value)` steps, so no pattern and no value can make it
 * backtrack for long; compiled patterns are kept in a bounded cache.
 *
 * @module
 */

/** One unit of a parsed pattern. */
type Token =
  | { readonly kind: "lit"; readonly ch: string }
  /** `*`: any run of characters other than `/`. */
  | { readonly kind: "star" }
  /** `**` inside a segment or alone: any run of characters. */
  | { readonly kind: "any" }
  /** A trailing `/**`: nothing, or `/` followed by anything. */
  | { readonly kind: "tail" }
  /** A `**` + `/` at the start of a segment: nothing, or anything ending in `/`. */
  | { readonly kind: "dirs" };

const STAR: Token = { kind: "star" };
const ANY: Token = { kind: "any" };
const TAIL: Token = { kind: "tail" };
const DIRS: Token = { kind: "dirs" };

/**
 * One instruction of the matching machine. `loop` consumes characters and
 * stays (with a free move to the next instruction); `skip` offers a free
 * move to the next instruction and to the one `by` ahead.
 */
type Instruction =
  | { readonly op: "lit"; readonly ch: string }
  | { readonly op: "loop"; readonly slash: boolean }
  | { readonly op: "skip"; readonly by: number };

interface Compiled {
  /** Set when the pattern has no wildcard: plain equality. */
  readonly literal?: string;
  /** Set when the pattern is a literal followed by `/**`: the literal. */
  readonly tree?: string;
  readonly code: readonly Instruction[];
}

const CACHE_LIMIT = 1024;
const cache = new Map<string, Compiled>();

function tokenize(pattern: string): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  while (i < pattern.length) {
    const ch = pattern[i];
    if (ch === "\\" && (pattern[i + 1] === "*" || pattern[i + 1] === "\\")) {
      tokens.push({ kind: "lit", ch: pattern[i + 1] });
      i += 2;
      continue;
    }
    if (ch !== "*") {
      tokens.push({ kind: "lit", ch });
      i++;
      continue;
    }
    let end = i;
    while (pattern[end] === "*") end++;
    const run = end - i;
    const startsSegment = i === 0 || pattern[i - 1] === "/";
    const endsSegment = end === pattern.length || pattern[end] === "/";
    i = end;
    if (run === 1) {
      tokens.push(STAR);
    } else if (startsSegment && endsSegment && end < pattern.length) {
      tokens.push(DIRS);
      i = end + 1; // the "/" after "**" belongs to DIRS
    } else if (startsSegment && endsSegment && isLit(tokens.at(-1), "/")) {
      tokens.pop(); // the "/" before a trailing "**" belongs to TAIL
      tokens.push(TAIL);
    } else {
      tokens.push(ANY);
    }
  }
  return tokens;
}

function isLit(token: Token | undefined, ch: string): boolean {
  return token?.kind === "lit" && token.ch === ch;
}

function assemble(tokens: readonly Token[]): Instruction[] {
  const code: Instruction[] = [];
  for (const token of tokens) {
    switch (token.kind) {
      case "lit":
        code.push({ op: "lit", ch: token.ch });
        break;
      case "star":
        code.push({ op: "loop", slash: false });
        break;
      case "any":
        code.push({ op: "loop", slash: true });
        break;
      case "tail":
        code.push({ op: "skip", by: 3 }, { op: "lit", ch: "/" }, { op: "loop", slash: true });
        break;
      case "dirs":
        code.push({ op: "skip", by: 3 }, { op: "loop", slash: true }, { op: "lit", ch: "/" });
        break;
    }
  }
  return code;
}

function prepare(pattern: string): Compiled {
  if (!pattern.includes("*") && !pattern.includes("\\")) return { literal: pattern, code: [] };
  const tokens = tokenize(pattern);
  if (tokens.every((t) => t.kind === "lit")) {
    return { literal: tokens.map((t) => t.ch).join(""), code: [] };
  }
  const last = tokens.length - 1;
  const head = tokens.slice(0, last);
  if (tokens[last].kind === "tail" && head.every((t) => t.kind === "lit")) {
    return { tree: head.map((t) => t.ch).join(""), code: [] };
  }
  return { code: assemble(tokens) };
}

function compile(pattern: string): Compiled {
  const hit = cache.get(pattern);
  if (hit) {
    // Refresh its place so the cache evicts the least recently used entry.
    cache.delete(pattern);
    cache.set(pattern, hit);
    return hit;
  }
  const compiled = prepare(pattern);
  if (cache.size >= CACHE_LIMIT) cache.delete(cache.keys().next().value!);
  cache.set(pattern, compiled);
  return compiled;
}

/** Adds every state reachable by free moves. Free moves only go forward. */
function close(code: readonly Instruction[], states: Uint8Array): void {
  for (let i = 0; i < code.length; i++) {
    if (!states[i]) continue;
    const ins = code[i];
    if (ins.op === "loop") states[i + 1] = 1;
    else if (ins.op === "skip") states[i + 1] = states[i + ins.by] = 1;
  }
}

function run(code: readonly Instruction[], value: string): boolean {
  let current = new Uint8Array(code.length + 1);
  let next = new Uint8Array(code.length + 1);
  current[0] = 1;
  close(code, current);
  for (let v = 0; v < value.length; v++) {
    const ch = value[v];
    next.fill(0);
    let alive = false;
    for (let i = 0; i < code.length; i++) {
      if (!current[i]) continue;
      const ins = code[i];
      if (ins.op === "lit" && ins.ch === ch) next[i + 1] = 1;
      else if (ins.op === "loop" && (ins.slash || ch !== "/")) next[i] = 1;
      else continue;
      alive = true;
    }
    if (!alive) return false;
    close(code, next);
    [current, next] = [next, current];
  }
  return current[code.length] === 1;
}

/**
 * True when `value` is matched by the glob `pattern`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { matchGlob } from "./glob.ts";
 * assert(matchGlob("/ws/out/**", "/ws/out/a/b.txt"));
 * assert(matchGlob("/ws/out/**", "/ws/out"));
 * assert(matchGlob("src/*.ts", "src/main.ts"));
 * assert(!matchGlob("src/*.ts", "src/lib/main.ts"));
 * assert(matchGlob("https://api.github.com/**", "https://api.github.com/repos/x"));
 * ```
 */
export function matchGlob(pattern: string, value: string): boolean {
  const compiled = compile(pattern);
  if (compiled.literal !== undefined) return compiled.literal === value;
  if (compiled.tree !== undefined) {
    return value === compiled.tree ||
      (value.startsWith(compiled.tree) && value[compiled.tree.length] === "/");
  }
  return run(compiled.code, value);
}

/**
 * How specific a glob is: the number of its literal (non-wildcard)
 * characters. Policy uses it to pick the most specific matching rule.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { globSpecificity } from "./glob.ts";
 * assert(globSpecificity("out/**") === 4);
 * assert(globSpecificity("**") === 0);
 * ```
 */
export function globSpecificity(pattern: string): number {
  let count = 0;
  for (let i = 0; i < pattern.length; i++) {
    if (pattern[i] === "*") continue;
    if (pattern[i] === "\\" && (pattern[i + 1] === "*" || pattern[i + 1] === "\\")) i++;
    count++;
  }
  return count;
}

/**
 * The pattern that matches exactly `text` and nothing else: every `*` and
 * `\` in it is escaped with a backslash. A grant for one literal target (a
 * file named `**`, a command named `a*`) uses it.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { escapeGlob, matchGlob } from "./glob.ts";
 * const scope = escapeGlob("/ws/out/**");
 * assert(scope === "/ws/out/\\*\\*");
 * assert(matchGlob(scope, "/ws/out/**"));
 * assert(!matchGlob(scope, "/ws/out/a.txt"));
 * ```
 */
export function escapeGlob(text: string): string {
  return text.replace(/[*\\]/g, "\\$&");
}

/** Inner tokens that the outer `*` covers: they never produce a `/`. */
function withinSegment(token: Token): boolean {
  return token.kind === "star" || (token.kind === "lit" && token.ch !== "/");
}

/**
 * True only if every string matched by the glob `inner` is also matched by
 * the glob `outer`. The check is sound but not complete: when it cannot
 * show containment it answers false. Attenuation uses it: a derived scope
 * must be covered by the scope it is derived from.
 *
 * It aligns the two token sequences: each outer token covers a run of inner
 * tokens (a literal covers the same literal; `*` covers literals other than
 * `/` and `*`; `**` covers anything; a trailing `/**` covers nothing or a run
 * that starts with `/`; a whole-segment `**` + `/` covers nothing or a run
 * that ends with `/`). A table over (outer position, inner position) keeps
 * it polynomial.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { globCovers } from "./glob.ts";
 * assert(globCovers("/ws/**", "/ws/out/*.txt"));
 * assert(!globCovers("/ws/*", "/ws/**"));
 * assert(!globCovers("/ws/out/**", "/ws/**"));
 * ```
 */
export function globCovers(outer: string, inner: string): boolean {
  const parts = tokenize(inner);
  const size = parts.length;
  // reach[k]: the outer tokens seen so far cover exactly the first k inner tokens.
  let reach = new Uint8Array(size + 1);
  reach[0] = 1;
  for (const token of tokenize(outer)) {
    const next = new Uint8Array(size + 1);
    switch (token.kind) {
      case "lit":
        for (let k = 0; k < size; k++) {
          if (reach[k] && isLit(parts[k], token.ch)) next[k + 1] = 1;
        }
        break;
      case "star":
      case "any":
        for (let k = 0; k <= size; k++) {
          const extend = k > 0 && next[k - 1] === 1 &&
            (token.kind === "any" || withinSegment(parts[k - 1]));
          if (reach[k] || extend) next[k] = 1;
        }
        break;
      case "tail": {
        // Covered runs: TAIL* (nothing | "/" anything).
        let leading = false; // inside the run of inner TAILs
        let free = false; // after the "/", anything goes
        for (let k = 0; k <= size; k++) {
          const prev = parts[k - 1];
          const wasLeading: boolean = leading;
          leading = reach[k] === 1 || (k > 0 && wasLeading && prev.kind === "tail");
          free = k > 0 && (free || (wasLeading && isLit(prev, "/")));
          if (leading || free) next[k] = 1;
        }
        break;
      }
      case "dirs": {
        // Covered runs: DIRS* | anything "/" DIRS*.
        let started = false; // some run began at or before k
        let slashed = false; // the run so far ends in "/" DIRS*
        let only = false; // the run so far is DIRS*
        for (let k = 0; k <= size; k++) {
          const prev = parts[k - 1];
          slashed = k > 0 &&
            ((started && isLit(prev, "/")) || (slashed && prev.kind === "dirs"));
          only = reach[k] === 1 || (k > 0 && only && prev.kind === "dirs");
          started = started || reach[k] === 1;
          if (slashed || only) next[k] = 1;
        }
        break;
      }
    }
    reach = next;
  }
  return reach[size] === 1;
}
