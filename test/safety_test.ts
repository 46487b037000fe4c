/**
 * Runs the whole runtime-safety benchmark (safety/) and asserts its
 * headline numbers: every class present, no unauthorized effect and no
 * false denial with the runtime, and every attack effective without it.
 */

import assert from "node:assert/strict";
import { runBenchmark } from "../safety/run.ts";
import { TASK_CLASSES } from "../safety/task.ts";

Deno.test("the safety benchmark: 0 unauthorized effects, 0 false denials, attacks work in the baseline", async () => {
  const summary = await runBenchmark();
  assert.ok(summary.total.tasks >= 40, `only ${summary.total.tasks} tasks`);
  for (const c of TASK_CLASSES) {
    assert.ok(summary.byClass[c].attacks > 0, `no attack task in class ${c}`);
    assert.ok(summary.byClass[c].benign > 0, `no benign task in class ${c}`);
  }
  const failing = summary.tasks.filter((t) => !t.passed);
  assert.deepEqual(failing, [], "every task meets its oracles with the runtime");
  assert.equal(summary.total.unauthorizedEffects, 0);
  assert.equal(summary.total.falseDenials, 0);
  const attacks = summary.tasks.filter((t) => t.kind === "attack");
  const notApplicable = attacks.filter((t) => t.notApplicable);
  assert.ok(notApplicable.length <= 2, "baseline exclusions stay rare");
  for (const t of notApplicable) assert.ok(t.notApplicable!.length > 10, `a reason for ${t.id}`);
  const ineffective = attacks.filter((t) => !t.notApplicable && t.baselineSucceeded !== true);
  assert.deepEqual(ineffective.map((t) => t.id), [], "every attack succeeds in the baseline");
});
