/**
 * Property-based fuzzing of path containment in `LocalFs.resolve`: random
 * paths built from `..`, `.`, symlinks (into and out of the workspace,
 * chained, dangling), Unicode and NUL bytes. Whenever resolve returns a
 * path inside the workspace, the real file there is inside the workspace;
 * it never returns a reserved path or one under /proc, /dev or /sys.
 *
 * Fixed seed in CI; `LIBOS_FUZZ_RUNS=N` (and `LIBOS_FUZZ_SEED=S`) for a
 * larger or different run.
 */

import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import fc from "fast-check";
import { LocalFs } from "./fs_provider.ts";

const RUNS = Number(Deno.env.get("LIBOS_FUZZ_RUNS") ?? 400);
const SEED = Number(Deno.env.get("LIBOS_FUZZ_SEED") ?? 20240601);

const inside = (root: string, p: string) => p === root || p.startsWith(root + "/");

/** The real path of the deepest existing ancestor of `p` (or `p`). */
async function realAncestor(p: string): Promise<string> {
  for (let at = p;; at = dirname(at)) {
    try {
      return await Deno.realPath(at);
    } catch {
      if (at === "/") return "/";
    }
  }
}

Deno.test("fuzz: resolve never lets a path inside the workspace reach a real file outside it", async () => {
  const root = await Deno.realPath(await Deno.makeTempDir({ prefix: "libos-fs-fuzz-" }));
  const ws = join(root, "ws");
  const outside = join(root, "outside");
  const reserved = join(ws, "state", "libos.db");
  try {
    await Deno.mkdir(join(ws, "a", "b"), { recursive: true });
    await Deno.mkdir(join(ws, "state"), { recursive: true });
    await Deno.mkdir(outside);
    await Deno.writeTextFile(join(ws, "a", "file.txt"), "in");
    await Deno.writeTextFile(join(outside, "secret.txt"), "out");
    await Deno.writeTextFile(reserved, "kv");
    await Deno.writeTextFile(join(ws, "ünï€ode.txt"), "u");
    await Deno.symlink(outside, join(ws, "out_dir"));
    await Deno.symlink(join(outside, "secret.txt"), join(ws, "a", "out_file"));
    await Deno.symlink(join(ws, "a", "b"), join(ws, "in_dir"));
    await Deno.symlink("../out_dir", join(ws, "a", "b", "rel_out"));
    await Deno.symlink(join(ws, "in_dir", "rel_out"), join(ws, "chain"));
    await Deno.symlink(join(outside, "missing"), join(ws, "dangling_out"));
    await Deno.symlink(reserved, join(ws, "to_reserved"));
    await Deno.symlink("/proc/self", join(ws, "to_proc"));
    const fs = new LocalFs({ reserved: [reserved] });
    const part = fc.oneof(
      fc.constantFrom(
        "..",
        ".",
        "",
        "a",
        "b",
        "file.txt",
        "out_dir",
        "out_file",
        "in_dir",
        "rel_out",
        "chain",
        "dangling_out",
        "to_reserved",
        "to_proc",
        "state",
        "libos.db",
        "libos.db-wal",
        "secret.txt",
        "ünï€ode.txt",
        "new",
        "a\u0000b",
        "\u202e",
        "%2e%2e",
      ),
      fc.string({ maxLength: 6 }),
    );
    const path = fc.tuple(
      fc.constantFrom("", "", "", "/", ws + "/", outside + "/", "/proc/", "/dev/", "/sys/"),
      fc.array(part, { minLength: 1, maxLength: 7 }),
    ).map(([head, parts]) => head + parts.join("/"));
    let resolvedInside = 0;
    await fc.assert(
      fc.asyncProperty(
        path,
        fc.constantFrom(ws, join(ws, "a"), join(ws, "a", "b")),
        async (p, cwd) => {
          let resolved: string;
          try {
            resolved = await fs.resolve(cwd, p);
          } catch (error) {
            assert.ok(
              ["EINVAL", "EPERM", "ENOENT", "ELOOP", "ENOTDIR"].includes(
                (error as { code: string }).code,
              ),
              `unexpected error for ${JSON.stringify(p)}: ${error}`,
            );
            return;
          }
          assert.ok(!resolved.includes("\0"));
          assert.ok(!inside(reserved, resolved), `${JSON.stringify(p)} resolved to the KV file`);
          for (const sys of ["/proc", "/dev", "/sys"]) {
            assert.ok(!inside(sys, resolved), `${JSON.stringify(p)} resolved into ${sys}`);
          }
          if (inside(ws, resolved)) {
            resolvedInside++;
            const real = await realAncestor(resolved);
            assert.ok(
              inside(ws, real),
              `${JSON.stringify(p)} resolved to ${resolved}, really ${real}`,
            );
          }
        },
      ),
      { numRuns: RUNS, seed: SEED },
    );
    assert.ok(resolvedInside > RUNS / 10, `only ${resolvedInside} paths resolved inside`);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
