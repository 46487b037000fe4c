import assert from "node:assert/strict";
import { escapeGlob, globCovers, globSpecificity, matchGlob } from "./glob.ts";

function assertMatches(pattern: string, yes: string[], no: string[]): void {
  for (const value of yes) assert.ok(matchGlob(pattern, value), `${pattern} should match ${value}`);
  for (const value of no) {
    assert.ok(!matchGlob(pattern, value), `${pattern} should not match ${value}`);
  }
}

Deno.test("matchGlob: '*' stays within one segment", () => {
  assertMatches("src/*.ts", ["src/a.ts", "src/.ts", "src/main.test.ts"], [
    "src/lib/a.ts",
    "src/a.tsx",
    "src/a.ts/x",
    "lib/a.ts",
  ]);
  assertMatches("/ws/*", ["/ws/a", "/ws/"], ["/ws", "/ws/a/b"]);
  assertMatches("git*", ["git", "git-upload-pack"], ["/usr/bin/git", "xgit"]);
});

Deno.test("matchGlob: 'x/**' matches x itself and everything below it, nothing beside it", () => {
  assertMatches("/ws/out/**", ["/ws/out", "/ws/out/", "/ws/out/a", "/ws/out/a/b/c.txt"], [
    "/ws/outside",
    "/ws/ou",
    "/ws/other/out/a",
    "/ws",
  ]);
});

Deno.test("matchGlob: '**' alone matches everything", () => {
  assertMatches("**", ["", "/", "a", "/etc/passwd", "a/b/c", "https://x.test:1/"], []);
});

Deno.test("matchGlob: '**' in the middle spans zero or more segments", () => {
  assertMatches("a/**/b", ["a/b", "a/x/b", "a/x/y/b", "a//b"], ["ab", "a/xb", "a/b/c", "xa/b"]);
  assertMatches("/ws/**/*.ts", ["/ws/a.ts", "/ws/src/a.ts", "/ws/src/lib/a.ts"], [
    "/ws/a.tsx",
    "/wsa.ts",
  ]);
});

Deno.test("matchGlob: a leading '**/' matches in every directory, the root included", () => {
  assertMatches("**/.env", [".env", "/ws/.env", "a/b/.env"], ["a/x.env", ".envrc", "/ws/.env/x"]);
});

Deno.test("matchGlob: '**' inside a segment crosses '/' but needs its neighbours", () => {
  assertMatches("a**b", ["ab", "axb", "a/x/b"], ["a", "b", "a/x/bc"]);
});

Deno.test("matchGlob: regular expression characters are literal", () => {
  assertMatches("a.b", ["a.b"], ["axb", "a/b"]);
  assertMatches("(x)+[y]?{1}^$|\\", ["(x)+[y]?{1}^$|\\"], ["xx[y]{1}^$|\\", "(x)+y"]);
  assertMatches("obj:read", ["obj:read"], ["objxread"]);
});

Deno.test("matchGlob: URL scopes keep ports and hosts exact", () => {
  assertMatches("https://api.example.com:8443/**", [
    "https://api.example.com:8443",
    "https://api.example.com:8443/v1/items?id=1",
  ], [
    "https://api.example.com:8444/v1",
    "https://api.example.com/v1",
    "https://api.example.com:8443.evil.test/",
    "https://api.example.com:84430/",
  ]);
  assertMatches("https://*.github.com/**", ["https://api.github.com/repos/x"], [
    "https://evil.test/.github.com/",
    "https://api.github.com.evil.test/",
    "https://api.github.com@evil.test/",
  ]);
});

Deno.test("matchGlob: hostile patterns and values finish without backtracking", () => {
  const pattern = "*a".repeat(40) + "b";
  const value = "a".repeat(20_000);
  assert.equal(matchGlob(pattern, value), false);
  assert.equal(matchGlob(pattern, value + "b"), true);
  const deep = "**/a".repeat(40) + "/b";
  assert.equal(matchGlob(deep, "a/".repeat(5_000) + "c"), false);
  assert.equal(matchGlob(deep, "a/".repeat(5_000) + "b"), true);
});

Deno.test("matchGlob: stays correct when more patterns are used than the cache holds", () => {
  for (let i = 0; i < 3_000; i++) {
    assert.ok(matchGlob(`/p${i}/*`, `/p${i}/x`));
    assert.ok(!matchGlob(`/p${i}/*`, `/p${i + 1}/x`));
  }
  assert.ok(matchGlob("/p0/*", "/p0/x"));
});

Deno.test("globSpecificity: counts literal characters", () => {
  assert.equal(globSpecificity("**"), 0);
  assert.equal(globSpecificity("*"), 0);
  assert.equal(globSpecificity("out/**"), 4);
  assert.equal(globSpecificity("/ws/src/*.ts"), 11);
  assert.equal(globSpecificity("git"), 3);
});

Deno.test("globCovers: accepts narrower scopes", () => {
  const pairs: [string, string][] = [
    ["**", "/anything/**"],
    ["**", "*"],
    ["/ws/**", "/ws/out/**"],
    ["/ws/**", "/ws"],
    ["/ws/**", "/ws/**/x"],
    ["/ws/**", "/ws/*/x/**"],
    ["/ws/*", "/ws/a*b"],
    ["/ws/*", "/ws/*"],
    ["**/x", "a/**/x"],
    ["a/**/b", "a/b"],
    ["a/**/b", "a/c/**/b"],
    ["a/**", "a/**"],
    ["*", "git"],
    ["https://*.github.com/**", "https://api.github.com/repos/**"],
    ["https://api.example.com:8443/**", "https://api.example.com:8443/v1/*"],
  ];
  for (const [outer, inner] of pairs) {
    assert.ok(globCovers(outer, inner), `${outer} should cover ${inner}`);
  }
});

Deno.test("globCovers: refuses wider or overlapping scopes", () => {
  const pairs: [string, string][] = [
    ["/ws/*", "/ws/**"],
    ["/ws/out/**", "/ws/**"],
    ["/a/b/**", "/a/**"],
    ["*", "**"],
    ["/ws/*", "/ws/a/b"],
    ["a/**", "a**"],
    ["/ws/**", "/wsx"],
    ["/ws/**", "/ws*"],
    ["a/**/b", "a/**"],
    ["a/*/b", "a/**/b"],
    ["git", "git*"],
    ["https://api.example.com:8443/**", "https://api.example.com:*/**"],
    ["https://*.github.com/**", "https://*/**"],
  ];
  for (const [outer, inner] of pairs) {
    assert.ok(!globCovers(outer, inner), `${outer} should not cover ${inner}`);
  }
});

// ---------------------------------------------------------------------------
// Cross-checks over small alphabets.

/** `*` within a segment, a run of two or more stars across segments; no collapsing. */
function plainMatch(pattern: string, value: string): boolean {
  const at = (i: number, j: number): boolean => {
    if (i === pattern.length) return j === value.length;
    if (pattern[i] !== "*") return j < value.length && pattern[i] === value[j] && at(i + 1, j + 1);
    let end = i;
    while (pattern[end] === "*") end++;
    for (let k = j; k <= value.length; k++) {
      if (at(end, k)) return true;
      if (end - i === 1 && value[k] === "/") return false;
    }
    return false;
  };
  return at(0, 0);
}

/**
 * The documented semantics, written independently of the implementation:
 * each whole-segment `**` may also be dropped together with one of its
 * neighbouring slashes; the value matches if any such variant matches plainly.
 */
function referenceMatch(pattern: string, value: string): boolean {
  const drops: [number, number][] = [];
  for (let i = 0; i < pattern.length;) {
    if (pattern[i] !== "*") {
      i++;
      continue;
    }
    let end = i;
    while (pattern[end] === "*") end++;
    const bounded = (i === 0 || pattern[i - 1] === "/") &&
      (end === pattern.length || pattern[end] === "/");
    if (end - i > 1 && bounded) {
      if (end < pattern.length) drops.push([i, end + 1]);
      else if (i > 0) drops.push([i - 1, end]);
    }
    i = end;
  }
  for (let mask = 0; mask < 1 << drops.length; mask++) {
    const gone = new Set<number>();
    drops.forEach(([from, to], n) => {
      if (mask & (1 << n)) { for (let k = from; k < to; k++) gone.add(k); }
    });
    const variant = [...pattern].filter((_, k) => !gone.has(k)).join("");
    if (plainMatch(variant, value)) return true;
  }
  return false;
}

function allStrings(alphabet: string, maxLength: number): string[] {
  const out = [""];
  for (let start = 0; out[out.length - 1].length < maxLength;) {
    const end = out.length;
    for (let i = start; i < end; i++) for (const ch of alphabet) out.push(out[i] + ch);
    start = end;
  }
  return out;
}

function seeded(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const PATTERNS = allStrings("a/*", 5);
const VALUES = allStrings("a/", 8);

Deno.test("matchGlob: agrees with a reference matcher on every short pattern and value", () => {
  for (const pattern of allStrings("a/*", 6)) {
    for (const value of VALUES) {
      assert.equal(
        matchGlob(pattern, value),
        referenceMatch(pattern, value),
        `pattern ${pattern} value ${value}`,
      );
    }
  }
});

Deno.test("globCovers: is exact when the inner glob is a plain string", () => {
  for (const outer of PATTERNS) {
    for (const value of VALUES) {
      assert.equal(globCovers(outer, value), matchGlob(outer, value), `${outer} / ${value}`);
    }
  }
});

Deno.test("globCovers: is sound on every pair of short patterns (brute force)", () => {
  const matched = new Map(PATTERNS.map((p) => [p, VALUES.filter((v) => matchGlob(p, v))]));
  let covered = 0;
  for (const outer of PATTERNS) {
    for (const inner of PATTERNS) {
      if (!globCovers(outer, inner)) continue;
      covered++;
      for (const value of matched.get(inner)!) {
        assert.ok(matchGlob(outer, value), `${outer} covers ${inner} but misses ${value}`);
      }
    }
  }
  // Every pattern covers itself, and many more pairs are recognised.
  for (const pattern of PATTERNS) assert.ok(globCovers(pattern, pattern), pattern);
  assert.ok(covered > PATTERNS.length * 4, `only ${covered} covered pairs`);
});

Deno.test("globCovers: is sound on random longer patterns and values", () => {
  const random = seeded(7);
  const pick = (alphabet: string, length: number): string =>
    Array.from({ length }, () => alphabet[Math.floor(random() * alphabet.length)]).join("");
  for (let round = 0; round < 3_000; round++) {
    const outer = pick("ab/*", 3 + Math.floor(random() * 6));
    const inner = pick("ab/*", 3 + Math.floor(random() * 6));
    if (!globCovers(outer, inner)) continue;
    for (let n = 0; n < 40; n++) {
      // A value of the inner glob: each star run replaced by a random filling.
      const value = inner.replace(
        /\*+/g,
        (run) => pick(run.length === 1 ? "ab" : "ab/", Math.floor(random() * 4)),
      );
      assert.ok(matchGlob(inner, value), `${inner} should match its own filling ${value}`);
      assert.ok(matchGlob(outer, value), `${outer} covers ${inner} but misses ${value}`);
    }
  }
});

// ---------------------------------------------------------------------------
// Escapes: a literal target as a pattern.

/** Names a process can give a file or a command, each with glob characters in it. */
const GLOBBY_NAMES = [
  "/ws/out/**",
  "/ws/out/*",
  "/ws/a*",
  "/ws/**/x",
  "/ws/[x]",
  "/ws/?",
  "/ws/a\\*",
  "/ws/a\\",
  "/ws/\\\\**\\",
  "*",
  "**",
];

Deno.test("escapeGlob: the escaped form matches its own text and nothing else", () => {
  const others = [
    ...GLOBBY_NAMES,
    "/ws/out/a.txt",
    "/ws/out",
    "/ws/out/**/deeper",
    "/ws/ab",
    "/ws/a",
    "/ws/x",
    "/ws/y/x",
    "/ws/a\\b",
    "/ws/",
    "",
    "a",
  ];
  for (const name of GLOBBY_NAMES) {
    const pattern = escapeGlob(name);
    assert.ok(matchGlob(pattern, name), `${pattern} should match ${name}`);
    for (const other of others) {
      if (other === name) continue;
      assert.ok(!matchGlob(pattern, other), `${pattern} should not match ${other}`);
    }
  }
});

Deno.test("escapeGlob: an escaped name covers only itself; a wildcard scope still covers it", () => {
  for (const name of GLOBBY_NAMES) {
    const pattern = escapeGlob(name);
    assert.ok(globCovers(pattern, pattern), pattern);
    assert.ok(globCovers("**", pattern), `** covers ${pattern}`);
    for (const other of GLOBBY_NAMES) {
      if (other === name) continue;
      assert.ok(!globCovers(pattern, escapeGlob(other)), `${pattern} / ${other}`);
    }
  }
  assert.ok(globCovers("/ws/**", escapeGlob("/ws/out/**")));
  assert.ok(globCovers("/ws/out/*", escapeGlob("/ws/out/**")));
  assert.ok(!globCovers("/ws/src/**", escapeGlob("/ws/out/**")));
  // The literal "**" file is not the whole tree: a scope for the file does not cover the tree.
  assert.ok(!globCovers(escapeGlob("/ws/out/**"), "/ws/out/**"));
  assert.ok(!globCovers(escapeGlob("/ws/out/**"), "/ws/out/a.txt"));
});

Deno.test("matchGlob: a backslash escapes only '*' and itself", () => {
  assertMatches("/ws/a\\*", ["/ws/a*"], ["/ws/a", "/ws/ab", "/ws/a\\", "/ws/a\\b"]);
  assertMatches("/ws/a\\\\*", ["/ws/a\\", "/ws/a\\b", "/ws/a\\\\"], ["/ws/a*", "/ws/a"]);
  assertMatches("/ws/a\\b", ["/ws/a\\b"], ["/ws/ab"]);
  assertMatches("/ws/a\\", ["/ws/a\\"], ["/ws/a"]);
  assertMatches("/ws/\\*\\*/**", ["/ws/**", "/ws/**/x"], ["/ws/a/x", "/ws/x"]);
});

Deno.test("globSpecificity: an escaped star is one literal character", () => {
  assert.equal(globSpecificity(escapeGlob("/ws/out/**")), "/ws/out/**".length);
  assert.ok(globSpecificity(escapeGlob("/ws/out/**")) > globSpecificity("/ws/out/**"));
});

Deno.test("globCovers: is sound on every pair of short patterns with escapes (brute force)", () => {
  const patterns = allStrings("a/*\\", 4);
  const values = allStrings("a/*\\", 5);
  const matched = new Map(patterns.map((p) => [p, values.filter((v) => matchGlob(p, v))]));
  for (const outer of patterns) {
    for (const inner of patterns) {
      if (!globCovers(outer, inner)) continue;
      for (const value of matched.get(inner)!) {
        assert.ok(matchGlob(outer, value), `${outer} covers ${inner} but misses ${value}`);
      }
    }
  }
  for (const value of values) assert.ok(matchGlob(escapeGlob(value), value), value);
});
