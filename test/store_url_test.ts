/**
 * `--kv` with a URL the runtime cannot open: one line on stderr, exit 1,
 * and no folder named after the scheme in the working directory.
 */

import assert from "node:assert/strict";

const CLI = new URL("../cli.ts", import.meta.url).pathname;

Deno.test("libos refuses an unknown store scheme and creates nothing in the working directory", async () => {
  const dir = await Deno.makeTempDir({ prefix: "libos-store-url-" });
  try {
    for (
      const args of [
        ["ps", "--kv", "postgres://user@127.0.0.1:5432/db"],
        ["serve", "--until-idle", "--kv", "redis://127.0.0.1:6379/0"],
      ]
    ) {
      const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
        args: ["run", "--no-prompt", "-A", CLI, ...args],
        cwd: dir,
        stdin: "null",
        env: { LIBOS_KV: "", LIBOS_SERVER: "" },
      }).output();
      const err = new TextDecoder().decode(stderr).trimEnd().split("\n");
      assert.equal(code, 1, err.join("\n"));
      assert.equal(new TextDecoder().decode(stdout), "");
      assert.equal(err.length, 1, err.join("\n"));
      assert.match(err[0], /^libos (ps|serve): Cannot open store ".+": unsupported scheme/);
      assert.match(err[0], /http:\/\/ or https:\/\/ KV Connect URL$/);
    }
    assert.deepEqual(await Array.fromAsync(Deno.readDir(dir)), [], "no folder was created");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
