import assert from "node:assert/strict";
import { join } from "node:path";
import { DEFAULT_MAX_READ_BYTES, LocalFs } from "./fs_provider.ts";

/**
 * A fresh real temp root holding `ws/` (the workspace) and `outside/`
 * (with `outside/secret.txt`), removed afterwards.
 */
async function withRoot(
  fn: (dirs: { root: string; ws: string; outside: string }) => Promise<void>,
): Promise<void> {
  const root = await Deno.realPath(await Deno.makeTempDir({ prefix: "libos_fs_" }));
  try {
    const ws = join(root, "ws");
    const outside = join(root, "outside");
    await Deno.mkdir(ws);
    await Deno.mkdir(outside);
    await Deno.writeTextFile(join(outside, "secret.txt"), "secret");
    await fn({ root, ws, outside });
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

Deno.test("resolve joins relative paths to cwd and keeps absolute ones", async () => {
  await withRoot(async ({ ws }) => {
    const fs = new LocalFs();
    assert.equal(await fs.resolve(ws, "a.txt"), join(ws, "a.txt"));
    assert.equal(await fs.resolve(ws, "sub/./b/"), join(ws, "sub/b"));
    assert.equal(await fs.resolve(ws, "sub/../a.txt"), join(ws, "a.txt"));
    assert.equal(await fs.resolve("/nowhere", join(ws, "a.txt")), join(ws, "a.txt"));
    assert.equal(await fs.resolve(ws, "."), ws);
  });
});

Deno.test("resolve returns the outside path for .. that escapes the workspace", async () => {
  await withRoot(async ({ ws, outside }) => {
    const fs = new LocalFs();
    const escaped = await fs.resolve(ws, "../outside/secret.txt");
    assert.equal(escaped, join(outside, "secret.txt"));
    assert.ok(!escaped.startsWith(`${ws}/`));
    assert.equal(await fs.resolve(ws, "../../../../../../../etc/passwd"), "/etc/passwd");
  });
});

Deno.test("resolve follows a symlink to a directory outside to its real path", async () => {
  await withRoot(async ({ ws, outside }) => {
    await Deno.symlink(outside, join(ws, "link"));
    const fs = new LocalFs();
    assert.equal(await fs.resolve(ws, "link"), outside);
    assert.equal(await fs.resolve(ws, "link/secret.txt"), join(outside, "secret.txt"));
    assert.equal(await fs.resolve(ws, "link/new/deeper.txt"), join(outside, "new/deeper.txt"));
  });
});

Deno.test("resolve applies .. lexically so link/.. cannot walk out through the target", async () => {
  await withRoot(async ({ root, ws, outside }) => {
    await Deno.writeTextFile(join(root, "secret.txt"), "root secret");
    await Deno.symlink(outside, join(ws, "link"));
    const fs = new LocalFs();
    const resolved = await fs.resolve(ws, "link/../secret.txt");
    assert.equal(resolved, join(ws, "secret.txt"));
    assert.notEqual(resolved, join(root, "secret.txt"));
  });
});

Deno.test("resolve takes a dangling symlink to the location of its target", async () => {
  await withRoot(async ({ ws, outside }) => {
    await Deno.symlink(join(outside, "planted.txt"), join(ws, "away"));
    await Deno.symlink("../outside/relative.txt", join(ws, "away_relative"));
    await Deno.symlink("target.txt", join(ws, "near"));
    const fs = new LocalFs();
    assert.equal(await fs.resolve(ws, "away"), join(outside, "planted.txt"));
    assert.equal(await fs.resolve(ws, "away_relative"), join(outside, "relative.txt"));
    const near = await fs.resolve(ws, "near");
    assert.equal(near, join(ws, "target.txt"));
    assert.equal(await fs.write(near, "here"), 4);
    assert.equal(await Deno.readTextFile(join(ws, "target.txt")), "here");
    assert.ok((await Deno.lstat(join(ws, "near"))).isSymlink);
  });
});

Deno.test("resolve fails a symlink loop with EINVAL", async () => {
  await withRoot(async ({ ws }) => {
    await Deno.symlink("b", join(ws, "a"));
    await Deno.symlink("a", join(ws, "b"));
    await assert.rejects(new LocalFs().resolve(ws, "a/x"), {
      name: "SyscallError",
      code: "EINVAL",
    });
  });
});

Deno.test("resolve refuses empty paths, NUL bytes and overlong paths", async () => {
  await withRoot(async ({ ws }) => {
    const fs = new LocalFs();
    await assert.rejects(fs.resolve(ws, ""), { code: "EINVAL" });
    await assert.rejects(fs.resolve(ws, "a.txt\0.png"), {
      code: "EINVAL",
      message: 'Cannot resolve path "a.txt\\u0000.png": contains a NUL byte',
    });
    await assert.rejects(fs.resolve(ws, "\0"), { code: "EINVAL" });
    await assert.rejects(fs.resolve(ws, "x/".repeat(2049)), { code: "EINVAL" });
    await assert.rejects(fs.resolve("relative/cwd", "a.txt"), { code: "EINVAL" });
    assert.equal(await fs.resolve(ws, "a.txt"), join(ws, "a.txt"));
  });
});

Deno.test("resolve refuses /proc, /dev and /sys, directly and through symlinks", async () => {
  await withRoot(async ({ ws }) => {
    const fs = new LocalFs();
    await assert.rejects(fs.resolve(ws, "/proc/self/environ"), {
      code: "EPERM",
      message: 'Cannot access "/proc/self/environ": inside a reserved path',
    });
    await assert.rejects(fs.resolve(ws, "/proc"), { code: "EPERM" });
    await assert.rejects(fs.resolve(ws, "/dev/zero"), { code: "EPERM" });
    await assert.rejects(fs.resolve(ws, "/sys/kernel"), { code: "EPERM" });
    await assert.rejects(fs.resolve(ws, "../../../../../../proc/self/environ"), { code: "EPERM" });
    await Deno.symlink("/proc/self/environ", join(ws, "env"));
    await Deno.symlink("/dev/zero", join(ws, "zero"));
    await Deno.symlink("/proc/self", join(ws, "self"));
    await assert.rejects(fs.resolve(ws, "env"), { code: "EPERM" });
    await assert.rejects(fs.resolve(ws, "zero"), { code: "EPERM" });
    await assert.rejects(fs.resolve(ws, "self/environ"), { code: "EPERM" });
    await assert.rejects(fs.read("/proc/self/environ"), { code: "EPERM" });
    await assert.rejects(fs.read("/dev/zero"), { code: "EPERM" });
  });
});

Deno.test("resolve refuses the reserved KV file and its SQLite side files", async () => {
  await withRoot(async ({ root, ws }) => {
    const state = join(root, "state");
    const kv = join(state, "libos.db");
    await Deno.mkdir(state);
    await Deno.writeTextFile(kv, "kv bytes");
    await Deno.writeTextFile(`${kv}-wal`, "wal bytes");
    await Deno.symlink(state, join(ws, "st"));
    const fs = new LocalFs({ reserved: [kv] });
    await assert.rejects(fs.resolve(ws, kv), {
      code: "EPERM",
      message: `Cannot access "${kv}": inside a reserved path`,
    });
    for (const suffix of ["-wal", "-shm", "-journal"]) {
      await assert.rejects(fs.resolve(ws, `../state/libos.db${suffix}`), { code: "EPERM" });
    }
    await assert.rejects(fs.resolve(ws, "st/libos.db"), { code: "EPERM" });
    await assert.rejects(fs.resolve(ws, "st/libos.db-wal"), { code: "EPERM" });
    await assert.rejects(fs.write(kv, "overwritten"), { code: "EPERM" });
    await assert.rejects(fs.append(`${kv}-wal`, "appended"), { code: "EPERM" });
    assert.equal(await Deno.readTextFile(kv), "kv bytes");
    assert.equal(await Deno.readTextFile(`${kv}-wal`), "wal bytes");
    assert.equal(await fs.resolve(ws, "st/libos.db.txt"), join(state, "libos.db.txt"));
  });
});

Deno.test("reserved paths are compared as real paths", async () => {
  await withRoot(async ({ root, ws }) => {
    const state = join(root, "state");
    await Deno.mkdir(state);
    await Deno.writeTextFile(join(state, "libos.db"), "kv bytes");
    await Deno.symlink(state, join(ws, "st"));
    const fs = new LocalFs({ reserved: [join(ws, "st/libos.db")] });
    await assert.rejects(fs.resolve(ws, join(state, "libos.db")), { code: "EPERM" });
    await assert.rejects(fs.resolve(ws, join(state, "libos.db-shm")), { code: "EPERM" });
    assert.equal(await fs.resolve(ws, join(state, "other.db")), join(state, "other.db"));
  });
});

Deno.test("remove and rename refuse to move or delete a reserved path through an ancestor", async () => {
  await withRoot(async ({ root, ws }) => {
    const kvDir = join(ws, ".libos");
    const kv = join(kvDir, "libos.db");
    await Deno.mkdir(kvDir);
    await Deno.writeTextFile(kv, "kv bytes");
    await Deno.mkdir(join(ws, "scratch/deep"), { recursive: true });
    await Deno.writeTextFile(join(ws, "a.txt"), "a");
    const exportPath = join(root, "exports/audit.jsonl");
    const fs = new LocalFs({ reserved: [kv, exportPath] });

    await assert.rejects(fs.remove(await fs.resolve(ws, ".libos"), { recursive: true }), {
      code: "EPERM",
    });
    await assert.rejects(fs.remove(await fs.resolve(ws, "."), { recursive: true }), {
      code: "EPERM",
    });
    await assert.rejects(
      fs.rename(await fs.resolve(ws, ".libos"), await fs.resolve(ws, "moved")),
      { code: "EPERM" },
    );
    await assert.rejects(fs.resolve(ws, ".libos/libos.db"), { code: "EPERM" });
    await assert.rejects(fs.rename(join(ws, "a.txt"), kv), { code: "EPERM" });
    await assert.rejects(
      fs.rename(await fs.resolve(ws, "scratch"), await fs.resolve(ws, "../exports")),
      { code: "EPERM" },
    );
    assert.equal(await Deno.readTextFile(kv), "kv bytes");
    assert.equal(await Deno.readTextFile(join(ws, "a.txt")), "a");
    assert.equal(await exists(join(root, "exports")), false);
    assert.equal(await exists(join(ws, "moved")), false);

    await fs.remove(await fs.resolve(ws, "scratch"), { recursive: true });
    assert.equal(await exists(join(ws, "scratch")), false);
  });
});

Deno.test("a file replaced by a symlink after resolve is not written through", async () => {
  await withRoot(async ({ ws, outside }) => {
    const fs = new LocalFs();
    const file = join(ws, "file.txt");
    await Deno.writeTextFile(file, "inside");
    const path = await fs.resolve(ws, "file.txt");
    assert.equal(await fs.write(path, "first"), 5);
    assert.equal(await Deno.readTextFile(file), "first");

    await Deno.remove(file);
    await Deno.symlink(join(outside, "secret.txt"), file);
    await assert.rejects(fs.write(path, "pwned"), {
      code: "EPERM",
      message: `Cannot write "${path}": the path changed during the call`,
    });
    await assert.rejects(fs.append(path, "pwned"), { code: "EPERM" });
    await assert.rejects(fs.read(path), { code: "EPERM" });
    await assert.rejects(fs.stat(path), { code: "EPERM" });
    assert.equal(await Deno.readTextFile(join(outside, "secret.txt")), "secret");
  });
});

Deno.test("a directory replaced by a symlink after resolve is not written through", async () => {
  await withRoot(async ({ ws, outside }) => {
    const fs = new LocalFs();
    await Deno.mkdir(join(ws, "dir"));
    await Deno.writeTextFile(join(ws, "dir/secret.txt"), "inside");
    const existing = await fs.resolve(ws, "dir/secret.txt");
    const fresh = await fs.resolve(ws, "dir/new.txt");

    await Deno.rename(join(ws, "dir"), join(ws, "dir.old"));
    await Deno.symlink(outside, join(ws, "dir"));
    await assert.rejects(fs.write(existing, "pwned"), { code: "EPERM" });
    await assert.rejects(fs.write(fresh, "planted"), { code: "EPERM" });
    await assert.rejects(fs.mkdir(join(ws, "dir/sub")), { code: "EPERM" });
    await assert.rejects(fs.list(join(ws, "dir")), { code: "EPERM" });
    assert.equal(await Deno.readTextFile(join(outside, "secret.txt")), "secret");
    assert.equal(await exists(join(outside, "new.txt")), false);
    assert.equal(await exists(join(outside, "sub")), false);
  });
});

Deno.test("operations refuse a path that resolve did not return", async () => {
  await withRoot(async ({ ws, outside }) => {
    const fs = new LocalFs();
    await Deno.symlink(join(outside, "secret.txt"), join(ws, "link.txt"));
    await assert.rejects(fs.write(join(ws, "link.txt"), "pwned"), { code: "EPERM" });
    await assert.rejects(fs.remove(join(ws, "link.txt")), { code: "EPERM" });
    await assert.rejects(fs.write("a.txt", "x"), { code: "EINVAL" });
    await assert.rejects(fs.write(`${ws}/x/../a.txt`, "x"), { code: "EINVAL" });
    await assert.rejects(fs.write(`${ws}/a\0.txt`, "x"), { code: "EINVAL" });
    assert.equal(await Deno.readTextFile(join(outside, "secret.txt")), "secret");
    assert.ok((await Deno.lstat(join(ws, "link.txt"))).isSymlink);
    assert.equal(await exists(join(ws, "a.txt")), false);
  });
});

Deno.test("write, append and read round-trip UTF-8 and count bytes", async () => {
  await withRoot(async ({ ws }) => {
    const fs = new LocalFs();
    const path = await fs.resolve(ws, "notes.txt");
    assert.equal(await fs.write(path, "héllo ✓"), 10);
    assert.equal(await fs.read(path), "héllo ✓");
    assert.equal(await fs.write(path, "ab"), 2);
    assert.equal(await fs.read(path), "ab");
    assert.equal(await fs.append(path, "cd"), 2);
    assert.equal(await fs.read(path), "abcd");
    const log = await fs.resolve(ws, "log.txt");
    assert.equal(await fs.append(log, "one\n"), 4);
    assert.equal(await fs.append(log, "two\n"), 4);
    assert.equal(await Deno.readTextFile(log), "one\ntwo\n");
  });
});

Deno.test("read refuses files over the size cap and bytes that are not UTF-8", async () => {
  await withRoot(async ({ ws }) => {
    const fs = new LocalFs();
    const small = await fs.resolve(ws, "small.txt");
    await Deno.writeTextFile(small, "0123456789");
    await assert.rejects(fs.read(small, { maxBytes: 5 }), {
      code: "EINVAL",
      message: `Cannot read "${small}": 10 bytes is larger than the 5-byte limit`,
    });
    assert.equal(await fs.read(small, { maxBytes: 10 }), "0123456789");
    await assert.rejects(fs.read(small, { maxBytes: -1 }), { code: "EINVAL" });

    const big = await fs.resolve(ws, "big.txt");
    await Deno.writeFile(big, new Uint8Array(DEFAULT_MAX_READ_BYTES + 1).fill(0x61));
    await assert.rejects(fs.read(big), { code: "EINVAL" });
    await Deno.truncate(big, DEFAULT_MAX_READ_BYTES);
    assert.equal((await fs.read(big)).length, DEFAULT_MAX_READ_BYTES);

    const binary = await fs.resolve(ws, "binary.bin");
    await Deno.writeFile(binary, new Uint8Array([0xff, 0xfe, 0x00]));
    await assert.rejects(fs.read(binary), { code: "EINVAL" });
  });
});

Deno.test("list sorts entries by name and reports kinds and file sizes", async () => {
  await withRoot(async ({ ws, outside }) => {
    const fs = new LocalFs();
    await Deno.writeTextFile(join(ws, "b.txt"), "bbb");
    await Deno.writeTextFile(join(ws, "C.md"), "cc");
    await Deno.mkdir(join(ws, "a"));
    await Deno.symlink(outside, join(ws, "link"));
    assert.deepEqual(await fs.list(await fs.resolve(ws, ".")), [
      { name: "C.md", kind: "file", size: 2 },
      { name: "a", kind: "dir", size: 0 },
      { name: "b.txt", kind: "file", size: 3 },
      { name: "link", kind: "symlink", size: 0 },
    ]);
    assert.deepEqual(await fs.list(await fs.resolve(ws, "a")), []);
  });
});

Deno.test("stat describes files and directories", async () => {
  await withRoot(async ({ ws }) => {
    const fs = new LocalFs();
    const file = await fs.resolve(ws, "f.txt");
    await fs.write(file, "12345");
    const info = await fs.stat(file);
    assert.equal(info.path, file);
    assert.equal(info.kind, "file");
    assert.equal(info.size, 5);
    assert.equal(typeof info.mtimeMs, "number");
    const dir = await fs.stat(ws);
    assert.equal(dir.kind, "dir");
    assert.equal(dir.size, 0);
    await assert.rejects(fs.stat(await fs.resolve(ws, "missing")), { code: "ENOENT" });
  });
});

Deno.test("mkdir, remove and rename work inside the workspace", async () => {
  await withRoot(async ({ ws }) => {
    const fs = new LocalFs();
    const deep = await fs.resolve(ws, "x/y/z");
    await fs.mkdir(deep, { recursive: true });
    await fs.mkdir(deep, { recursive: true });
    assert.ok((await Deno.stat(deep)).isDirectory);

    const from = await fs.resolve(ws, "x/y/z/a.txt");
    await fs.write(from, "moved");
    const to = await fs.resolve(ws, "b.txt");
    await fs.rename(from, to);
    assert.equal(await Deno.readTextFile(to), "moved");
    assert.equal(await exists(from), false);

    await fs.remove(to);
    assert.equal(await exists(to), false);
    await fs.remove(await fs.resolve(ws, "x"), { recursive: true });
    assert.equal(await exists(join(ws, "x")), false);
  });
});

Deno.test("host errors map to ABI error codes", async () => {
  await withRoot(async ({ ws }) => {
    const fs = new LocalFs();
    const dir = await fs.resolve(ws, "dir");
    await fs.mkdir(dir);
    await fs.write(await fs.resolve(ws, "dir/file.txt"), "x");
    const missing = await fs.resolve(ws, "missing.txt");

    await assert.rejects(fs.read(missing), {
      code: "ENOENT",
      message: `Cannot read "${missing}": no such file or directory`,
    });
    await assert.rejects(fs.rename(missing, await fs.resolve(ws, "other.txt")), {
      code: "ENOENT",
    });
    await assert.rejects(fs.write(await fs.resolve(ws, "no/such/dir.txt"), "x"), {
      code: "ENOENT",
    });
    await assert.rejects(fs.mkdir(dir), { code: "EEXIST" });
    await assert.rejects(fs.mkdir(await fs.resolve(ws, "p/q")), { code: "ENOENT" });
    await assert.rejects(fs.read(dir), { code: "EINVAL" });
    await assert.rejects(fs.write(dir, "x"), { code: "EINVAL" });
    await assert.rejects(fs.list(await fs.resolve(ws, "dir/file.txt")), { code: "EINVAL" });
    await assert.rejects(fs.read(await fs.resolve(ws, "dir/file.txt/inner")), {
      code: "EINVAL",
    });
    await assert.rejects(fs.remove(dir), {
      code: "EINVAL",
      message: `Cannot remove "${dir}": the directory is not empty`,
    });
    assert.equal(await Deno.readTextFile(join(dir, "file.txt")), "x");
  });
});
