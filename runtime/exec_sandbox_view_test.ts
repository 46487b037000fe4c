import assert from "node:assert/strict";
import { join } from "node:path";
import type { Capability } from "../broker/capability.ts";
import { parsePolicy, type PolicyRule } from "../broker/policy.ts";
import { type SandboxMount, sandboxView } from "./exec_sandbox_view.ts";
import { LocalFs } from "./fs_provider.ts";

let next = 0;

function cap(text: string, extra: Partial<Capability> = {}): Capability {
  const [resource, rights, ...scope] = text.split(":");
  return {
    id: `c${++next}`,
    holder: 1,
    resource: resource as Capability["resource"],
    rights: rights.split(","),
    scope: scope.join(":"),
    delegable: false,
    grantedBy: "operator",
    createdAt: 0,
    ...extra,
  };
}

interface Tree {
  ws: string;
  root: string;
}

/** A workspace with src/, docs/, secrets/ and a file outside it. */
async function withTree(body: (t: Tree) => Promise<void>): Promise<void> {
  const root = await Deno.realPath(await Deno.makeTempDir({ prefix: "libos_view_" }));
  const ws = join(root, "ws");
  try {
    for (const dir of ["src/lib", "docs", "secrets", "out"]) {
      await Deno.mkdir(join(ws, dir), { recursive: true });
    }
    const files: Record<string, string> = {
      "src/a.ts": "a",
      "src/b.js": "b",
      "src/lib/c.ts": "c",
      "docs/readme.md": "docs",
      "secrets/token.txt": "secret",
      "secrets/key.pem": "pem",
      "out/keep.txt": "keep",
    };
    for (const [name, text] of Object.entries(files)) {
      await Deno.writeTextFile(join(ws, name), text);
    }
    await Deno.writeTextFile(join(root, "outside.txt"), "outside");
    await Deno.symlink(join(root, "outside.txt"), join(ws, "src", "link.ts"));
    await body({ ws, root });
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

async function view(
  t: Tree,
  caps: Capability[],
  options: { policy?: PolicyRule[]; reserved?: string[]; own?: string[] } = {},
): Promise<SandboxMount[]> {
  const fs = new LocalFs({ reserved: options.reserved ?? [] });
  const result = await sandboxView({
    capabilities: caps,
    policy: options.policy ?? [],
    workspace: t.ws,
    fs,
    now: 1000,
    own: options.own ?? [],
  });
  return result.mounts;
}

async function viewWithIds(t: Tree, caps: Capability[], policy: PolicyRule[] = []) {
  return await sandboxView({
    capabilities: caps,
    policy,
    workspace: t.ws,
    fs: new LocalFs(),
    now: 1000,
    own: [],
  });
}

function rel(t: Tree, mounts: readonly SandboxMount[]): string[] {
  return mounts.map((m) => {
    const path = m.path.startsWith(t.ws) ? `.${m.path.slice(t.ws.length)}` : m.path;
    if (m.kind === "bind") return `${m.writable ? "rw" : "ro"} ${path}`;
    if (m.kind === "hide") return `hide${m.dir ? "-dir" : ""} ${path}`;
    if (m.kind === "symlink") return `symlink ${path} -> ${m.target}`;
    return `shell ${path}`;
  });
}

Deno.test("a whole-tree read capability binds its directory read-only, and nothing else", async () => {
  await withTree(async (t) => {
    assert.deepEqual(rel(t, await view(t, [cap(`fs:read:${t.ws}/src/**`)])), ["ro ./src"]);
  });
});

Deno.test("read and write together bind read-write, each alone never wider", async () => {
  await withTree(async (t) => {
    const both = await view(t, [cap(`fs:read:${t.ws}/**`), cap(`fs:write:${t.ws}/out/**`)]);
    assert.deepEqual(rel(t, both), ["ro .", "rw ./out"]);
    // The OS cannot give write without read, nor delete without write: nothing is bound.
    assert.deepEqual(await view(t, [cap(`fs:write:${t.ws}/**`)]), []);
    assert.deepEqual(await view(t, [cap(`fs:delete:${t.ws}/**`)]), []);
    assert.deepEqual(rel(t, await view(t, [cap(`fs:*:${t.ws}/out/**`)])), ["rw ./out"]);
  });
});

Deno.test("a glob that is not a whole tree binds the matching regular files one by one", async () => {
  await withTree(async (t) => {
    const mounts = await view(t, [cap(`fs:read:${t.ws}/src/**/*.ts`)]);
    // Not src/b.js, and not the symlink src/link.ts whose target lies outside.
    assert.deepEqual(rel(t, mounts).sort(), ["ro ./src/a.ts", "ro ./src/lib/c.ts"]);
  });
});

Deno.test("a literal file is bound; a literal directory grants itself, not its content", async () => {
  await withTree(async (t) => {
    assert.deepEqual(rel(t, await view(t, [cap(`fs:read:${t.ws}/docs/readme.md`)])), [
      "ro ./docs/readme.md",
    ]);
    assert.deepEqual(await view(t, [cap(`fs:read:${t.ws}/docs`)]), []);
  });
});

Deno.test("one-shot, call-bound and expired capabilities never make a view", async () => {
  await withTree(async (t) => {
    const caps = [
      cap(`fs:read:${t.ws}/src/**`, { uses: 1 }),
      cap(`fs:read:${t.ws}/docs/**`, { boundTo: "0".repeat(64) }),
      cap(`fs:read:${t.ws}/out/**`, { expiresAt: 999 }),
    ];
    assert.deepEqual(await view(t, caps), []);
  });
});

Deno.test("a scope through a symlink, or into /proc, binds nothing", async () => {
  await withTree(async (t) => {
    await Deno.symlink(join(t.ws, "secrets"), join(t.ws, "alias"));
    assert.deepEqual(await view(t, [cap(`fs:read:${t.ws}/alias/**`)]), []);
    assert.deepEqual(await view(t, [cap("fs:read:/proc/**"), cap("fs:read:/proc/1/environ")]), []);
  });
});

Deno.test("the store's directory inside a bound tree is hidden", async () => {
  await withTree(async (t) => {
    await Deno.mkdir(join(t.ws, ".libos"));
    const store = join(t.ws, ".libos", "libos.db");
    await Deno.writeTextFile(store, "STORE");
    const read = await view(t, [cap(`fs:read:${t.ws}/**`)], { reserved: [store] });
    assert.deepEqual(rel(t, read), ["ro .", "hide-dir ./.libos"]);
    // Right below a read-write root, the hidden directory is a mount point: it cannot move.
    const write = await view(t, [cap(`fs:read,write:${t.ws}/**`)], { reserved: [store] });
    assert.deepEqual(rel(t, write), ["rw .", "hide-dir ./.libos"]);
  });
});

Deno.test("a tree that holds the store directly is bound entry by entry without it", async () => {
  await withTree(async (t) => {
    const store = join(t.ws, "libos.db");
    await Deno.writeTextFile(store, "STORE");
    await Deno.writeTextFile(`${store}-wal`, "WAL");
    const mounts = rel(t, await view(t, [cap(`fs:read:${t.ws}/**`)], { reserved: [store] }));
    assert.equal(mounts[0], "shell .");
    assert.ok(mounts.includes("ro ./src") && mounts.includes("ro ./docs"), mounts.join());
    assert.ok(!mounts.some((m) => m.includes("libos.db")), mounts.join());
  });
});

Deno.test("policy: denied paths inside a bound tree are hidden, write-denied ones read-only", async () => {
  await withTree(async (t) => {
    const policy = parsePolicy({
      "fs:read:secrets/**": "deny",
      "fs:read:**/*.pem": "ask",
      "fs:write:docs/**": "deny",
    }, "operator");
    const mounts = await view(t, [cap(`fs:read,write:${t.ws}/**`)], { policy });
    assert.deepEqual(rel(t, mounts), ["rw .", "ro ./docs", "hide-dir ./secrets"]);
    const pem = await view(t, [cap(`fs:read:${t.ws}/**`)], {
      policy: parsePolicy({ "fs:read:**/*.pem": "deny" }, "operator"),
    });
    assert.deepEqual(rel(t, pem), ["ro .", "hide ./secrets/key.pem"]);
  });
});

Deno.test("policy: a tree is bound only when an allow over all of it decides its root", async () => {
  await withTree(async (t) => {
    const caps = [cap(`fs:read:${t.ws}/**`), cap(`fs:read:${t.ws}/docs/**`)];
    const denyAll = parsePolicy({ "fs:read:**": "deny", "fs:read:docs/**": "allow" }, "operator");
    assert.deepEqual(rel(t, await view(t, caps, { policy: denyAll })), ["ro ./docs"]);
    // An allow of the root alone does not decide what lies below it.
    const rootOnly = parsePolicy({ "fs:read:**": "deny", "fs:read:docs": "allow" }, "operator");
    assert.deepEqual(await view(t, caps, { policy: rootOnly }), []);
  });
});

Deno.test("a tree that holds one of the sandbox's own paths is bound around it", async () => {
  await withTree(async (t) => {
    const own = join(t.ws, "out");
    const mounts = rel(t, await view(t, [cap(`fs:read:${t.ws}/**`)], { own: [own] }));
    assert.equal(mounts[0], "shell .");
    assert.ok(mounts.includes("ro ./src"), mounts.join());
    assert.ok(!mounts.some((m) => m.endsWith("./out")), mounts.join());
    // Symlinks among the entries are recreated, never followed on the host.
    assert.ok(!mounts.some((m) => m.includes("outside.txt") && m.startsWith("ro")), mounts.join());
  });
});

Deno.test("a rename inside a read-write tree cannot reach a protected path: the way is read-only", async () => {
  await withTree(async (t) => {
    await Deno.mkdir(join(t.ws, "src", "lib", "keys"));
    const policy = parsePolicy({ "fs:read:src/lib/keys/**": "deny" }, "operator");
    const mounts = rel(t, await view(t, [cap(`fs:read,write:${t.ws}/**`)], { policy }));
    assert.deepEqual(mounts, [
      "shell .",
      "rw ./docs",
      "rw ./out",
      "rw ./secrets",
      "shell ./src",
      "rw ./src/a.ts",
      "rw ./src/b.js",
      "shell ./src/lib",
      "rw ./src/lib/c.ts",
      "symlink ./src/link.ts -> " + join(t.root, "outside.txt"),
      "hide-dir ./src/lib/keys",
    ]);
  });
});

Deno.test("every visible bind carries the identity its source had", async () => {
  await withTree(async (t) => {
    const policy = parsePolicy({ "fs:read:secrets/**": "deny" }, "operator");
    const result = await viewWithIds(
      t,
      [cap(`fs:read:${t.ws}/**`), cap(`fs:read:${t.ws}/src/**`)],
      policy,
    );
    const info = Deno.lstatSync(t.ws);
    assert.deepEqual(result.identities, [{ path: t.ws, id: `${info.dev}:${info.ino}` }]);
    // A bind covered by a later mount is not checked: it is not there to check.
    const covered = await viewWithIds(t, [
      cap(`fs:read:${t.ws}/secrets/token.txt`),
      cap(`fs:read:${t.ws}/**`),
    ], policy);
    assert.ok(!covered.identities.some((x) => x.path.startsWith(join(t.ws, "secrets"))));
  });
});
