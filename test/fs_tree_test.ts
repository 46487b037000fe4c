/**
 * Calls that act on a whole directory tree (rename, recursive remove) and
 * listings: policy on anything inside the tree applies, so data never moves
 * around a read policy. Each attack asserts the secret stays where it was
 * and never reaches the program.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { parsePolicyAssignment } from "../broker/policy.ts";
import { type Attempt, everythingAbout, program, withKernel } from "./_programs.ts";

const CANARY = "TREE-SECRET-" + crypto.randomUUID();

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch {
    return false;
  }
}

function refused(attempt: Attempt, pattern: RegExp): void {
  assert.equal(attempt.ok, false, `expected a refusal, got ${JSON.stringify(attempt)}`);
  if (!attempt.ok) {
    assert.equal(attempt.code, "EPERM", attempt.message);
    assert.match(attempt.message, pattern);
  }
}

const RENAME_AND_READ = program(`
  const moved = await attempt(() => sys.fs.rename(input.from, input.to));
  const read = await attempt(() => sys.fs.read(input.read));
  return { moved, read };
`);

Deno.test("renaming a directory under a read deny never reveals its files at the new path", async () => {
  await withKernel(async (h) => {
    await Deno.mkdir(join(h.workspace, "secrets", "deep"), { recursive: true });
    await Deno.writeTextFile(join(h.workspace, "secrets", "deep", "key.txt"), CANARY);
    const end = await h.run(RENAME_AND_READ, {
      input: { from: "secrets", to: "public", read: "public/deep/key.txt" },
      capabilities: ["fs:read:**", "fs:write:**", "fs:delete:**"],
      image: { capabilities: ["fs:read:**", "fs:write:**", "fs:delete:**"] },
      policy: [parsePolicyAssignment("fs:read:secrets/**=deny", "operator")],
    });
    assert.equal(end.state, "exited", end.error?.message);
    const result = end.result as { moved: Attempt; read: Attempt };
    refused(result.moved, /denied by policy "fs:read:secrets\/\*\*"/);
    assert.equal(result.read.ok, false);
    assert.equal(
      await Deno.readTextFile(join(h.workspace, "secrets", "deep", "key.txt")),
      CANARY,
    );
    assert.equal(await exists(join(h.workspace, "public")), false);
    assert.ok(!(await everythingAbout(h.kernel, end.pid)).includes(CANARY));
  });
});

Deno.test("a deny on one file inside a directory stops moving its parent", async () => {
  await withKernel(async (h) => {
    await Deno.mkdir(join(h.workspace, "data"));
    await Deno.writeTextFile(join(h.workspace, "data", "notes.txt"), "public notes");
    await Deno.writeTextFile(join(h.workspace, "data", "api.key"), CANARY);
    const end = await h.run(RENAME_AND_READ, {
      input: { from: "data", to: "out", read: "out/api.key" },
      image: { capabilities: ["fs:read:**", "fs:write:**", "fs:delete:**"] },
      // Does not match "data" itself: only a check of every entry finds it.
      policy: [parsePolicyAssignment("fs:read:data/*.key=deny", "operator")],
    });
    assert.equal(end.state, "exited", end.error?.message);
    const result = end.result as { moved: Attempt; read: Attempt };
    refused(result.moved, /denied by policy "fs:read:data\/\*\.key"/);
    assert.equal(await Deno.readTextFile(join(h.workspace, "data", "api.key")), CANARY);
    assert.equal(await exists(join(h.workspace, "out")), false);
    assert.ok(!(await everythingAbout(h.kernel, end.pid)).includes(CANARY));
  });
});

Deno.test("renaming a single file needs read on it, and write on the destination", async () => {
  await withKernel(async (h) => {
    await Deno.mkdir(join(h.workspace, "secrets"));
    await Deno.writeTextFile(join(h.workspace, "secrets", "key.txt"), CANARY);
    await Deno.writeTextFile(join(h.workspace, "plain.txt"), "plain");
    const end = await h.run(
      program(`return {
        denied: await attempt(() => sys.fs.rename("secrets/key.txt", "key.txt")),
        noRead: await attempt(() => sys.fs.rename("plain.txt", "out/plain.txt")),
      };`),
      {
        // Delete and write everywhere, read only outside secrets/, and not on plain.txt.
        image: { capabilities: ["fs:read:**", "fs:write:**", "fs:delete:**"] },
        capabilities: ["fs:read:out/**", "fs:read:secrets/**", "fs:write:**", "fs:delete:**"],
        policy: [parsePolicyAssignment("fs:read:secrets/**=deny", "operator")],
      },
    );
    assert.equal(end.state, "exited", end.error?.message);
    const result = end.result as Record<string, Attempt>;
    refused(result.denied, /denied by policy/);
    refused(result.noRead, /no capability grants fs:read on it/);
    assert.equal(await Deno.readTextFile(join(h.workspace, "secrets", "key.txt")), CANARY);
    assert.equal(await exists(join(h.workspace, "key.txt")), false);
    assert.equal(await Deno.readTextFile(join(h.workspace, "plain.txt")), "plain");
  });
});

Deno.test("a directory rename that every entry allows still works", async () => {
  await withKernel(async (h) => {
    await Deno.mkdir(join(h.workspace, "draft", "sub"), { recursive: true });
    await Deno.writeTextFile(join(h.workspace, "draft", "sub", "a.txt"), "a");
    const end = await h.run(RENAME_AND_READ, {
      input: { from: "draft", to: "final", read: "final/sub/a.txt" },
      image: { capabilities: ["fs:read:**", "fs:write:**", "fs:delete:**"] },
      policy: [parsePolicyAssignment("fs:read:secrets/**=deny", "operator")],
    });
    const result = end.result as { moved: Attempt; read: Attempt };
    assert.equal(result.moved.ok, true, JSON.stringify(result.moved));
    assert.deepEqual(result.read, { ok: true, value: "a" });
    assert.equal(await exists(join(h.workspace, "draft")), false);
  });
});

Deno.test("a recursive remove cannot delete what policy forbids deleting inside the tree", async () => {
  await withKernel(async (h) => {
    await Deno.mkdir(join(h.workspace, "build", "keep"), { recursive: true });
    await Deno.writeTextFile(join(h.workspace, "build", "keep", "ledger.txt"), CANARY);
    const end = await h.run(
      program(`return await attempt(() => sys.fs.remove("build", { recursive: true }));`),
      {
        image: { capabilities: ["fs:read:**", "fs:delete:**"] },
        policy: [parsePolicyAssignment("fs:delete:build/keep/**=deny", "operator")],
      },
    );
    assert.equal(end.state, "exited", end.error?.message);
    refused(end.result as Attempt, /denied by policy "fs:delete:build\/keep\/\*\*"/);
    assert.equal(
      await Deno.readTextFile(join(h.workspace, "build", "keep", "ledger.txt")),
      CANARY,
    );
  });
});

Deno.test("a listing leaves out the entries policy denies reading", async () => {
  await withKernel(async (h) => {
    await Deno.mkdir(join(h.workspace, "data"));
    await Deno.writeTextFile(join(h.workspace, "data", "notes.txt"), "notes");
    await Deno.writeTextFile(join(h.workspace, "data", `${CANARY}.key`), "k");
    const end = await h.run(
      program(`return (await sys.fs.list("data")).map((e) => e.name);`),
      {
        image: { capabilities: ["fs:read:**"] },
        policy: [parsePolicyAssignment("fs:read:data/*.key=deny", "operator")],
      },
    );
    assert.equal(end.state, "exited", end.error?.message);
    assert.deepEqual(end.result, ["notes.txt"]);
    assert.ok(!(await everythingAbout(h.kernel, end.pid)).includes(CANARY));
  });
});
