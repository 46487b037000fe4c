/**
 * What a human approves is what runs, and no more (SPEC section 5): an
 * `allow_always` answer grants the literal target asked about, even when its
 * name is full of glob characters, and a permission request keeps the call's
 * arguments in full, with their digest, for the human to see.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { callDigest } from "../broker/broker.ts";
import { escapeGlob } from "../broker/glob.ts";
import { ScriptedHuman } from "../runtime/human_queue.ts";
import { requestLines } from "../cli/human.ts";
import { type Attempt, auditOf, program, runRecorded, whenState, withKernel } from "./_programs.ts";

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

/**
 * Targets whose names a glob reader would take as patterns, each with a
 * sibling that such a pattern would match.
 */
const GLOB_NAMED = [
  { literal: "out/**", sibling: "out/other.txt" },
  { literal: "out/*", sibling: "out/a" },
  { literal: "a*", sibling: "abc" },
  { literal: "[x]", sibling: "x" },
  { literal: "q?", sibling: "qz" },
] as const;

Deno.test("allow always on a target named with glob characters grants that target alone", async () => {
  await withKernel(
    async (h) => {
      await Deno.mkdir(join(h.workspace, "out"));
      const end = await runRecorded(
        h,
        program(`
          const out = [];
          for (const { literal, sibling } of input) {
            out.push({
              literal: await attempt(() => sys.fs.write(literal, "approved")),
              sibling: await attempt(() => sys.fs.write(sibling, "never approved")),
            });
          }
          const caps = (await sys.cap.list()).filter((c) => c.grantedBy.startsWith("human:"));
          return { out, scopes: caps.map((c) => c.scope) };
        `),
        {
          input: GLOB_NAMED,
          image: { capabilities: ["fs:write:**"], policy: { "fs:write:**": "ask" } },
        },
      );
      assert.equal(end.state, "exited", end.error?.message);
      const result = end.result as {
        out: { literal: Attempt; sibling: Attempt }[];
        scopes: string[];
      };
      for (const [i, { literal, sibling }] of GLOB_NAMED.entries()) {
        assert.equal(result.out[i].literal.ok, true, JSON.stringify(result.out[i].literal));
        assert.equal(result.out[i].sibling.ok, false, `${sibling} was written unasked`);
        assert.equal(await exists(join(h.workspace, literal)), true, literal);
        assert.equal(await exists(join(h.workspace, sibling)), false, sibling);
      }
      assert.deepEqual(
        result.scopes.sort(),
        GLOB_NAMED.map(({ literal }) => escapeGlob(join(h.workspace, literal))).sort(),
      );
    },
    {
      // Each literal is approved for always; each sibling, asked about anew, is denied.
      human: new ScriptedHuman({
        answers: GLOB_NAMED.flatMap(() => [
          { decision: "allow_always" as const },
          { decision: "deny_once" as const },
        ]),
      }),
    },
  );
});

Deno.test("a permission request keeps the whole command and its digest for the human", async () => {
  await withKernel(async (h) => {
    const marker = `TAIL-${crypto.randomUUID()}`;
    const argv = ["echo", "harmless ".repeat(60), "--", marker];
    const tag = await h.program(
      "long-command",
      program(`return await attempt(() => sys.exec.run(input));`),
      { capabilities: ["fs:read:**", "exec:run:echo"], policy: { "exec:run:*": "ask" } },
    );
    const proc = await h.kernel.spawn({ image: tag, workspace: h.workspace, input: argv });
    h.kernel.start(proc.pid);
    assert.equal((await whenState(h.kernel, proc.pid, "blocked")).waitingOn, "human");
    const [request] = await h.kernel.humans.pending();
    const operation = request.operation!;
    const args = JSON.parse(operation.args);
    assert.deepEqual(args, { argv });
    assert.equal(operation.argsDigest, await callDigest("exec.run", args));
    assert.equal(operation.capability, "exec:run:echo");
    // What the human reads: the full arguments, wrapped and not cut, and the digest.
    const lines = requestLines(request);
    const start = lines.findIndex((l) => l.startsWith("  args    "));
    let end = start + 1;
    while (lines[end]?.startsWith(" ".repeat(10))) end++;
    const shownArgs = lines.slice(start, end).map((l) => l.slice(10)).join("");
    assert.ok(end - start > 1, "a long command takes several lines");
    assert.ok(lines.every((l) => l.length <= 100), "lines are wrapped");
    assert.equal(shownArgs, operation.args);
    assert.ok(shownArgs.includes(marker));
    assert.equal(lines[end], `  digest  sha256 ${operation.argsDigest}`);
  });
});

Deno.test("a command too long to show a human is refused, not asked about", async () => {
  await withKernel(async (h) => {
    const end = await runRecorded(
      h,
      program(`
        const argv = ["echo", ...Array.from({ length: 5 }, () => "y".repeat(8000))];
        return await attempt(() => sys.exec.run(argv));
      `),
      {
        image: { capabilities: ["fs:read:**", "exec:run:echo"], policy: { "exec:run:*": "ask" } },
      },
    );
    assert.equal(end.state, "exited", end.error?.message);
    const result = end.result as Attempt;
    assert.equal(result.ok, false);
    assert.match((result as { message: string }).message, /Cannot ask a human about exec\.run/);
    assert.deepEqual(await h.kernel.humans.pending(), []);
    const runs = (await auditOf(h.kernel, end.pid)).filter((r) => r.syscall === "exec.run");
    assert.deepEqual(runs.map((r) => [r.decision, r.code]), [["deny", "EPERM"]]);
  });
});
