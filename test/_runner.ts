/**
 * Runs the whole test suite with the permissions the host needs and ends
 * with the line `N passed, N failed` (what `.ci/run` reports). The exit code
 * is `deno test`'s, and a run that executed no test fails.
 *
 * With `--doc`, every code block in a JSDoc comment of the folders' modules
 * is type-checked and run as a test too (`@example` blocks marked `ignore`
 * are only shown, never run).
 *
 * Files that change what every thread of the process sees (its environment)
 * run after the parallel run, on their own, and the line sums both runs.
 *
 * @module
 */

/** Test files that change what every thread of the process sees (its environment): run alone, last. */
const ALONE = ["test/host_cache_test.ts"];

const permissions = [
  "--no-prompt",
  "--allow-read",
  "--allow-write",
  "--allow-run",
  "--allow-env",
  "--allow-ffi",
  "--allow-net=127.0.0.1",
];
const targets = Deno.args.length
  ? Deno.args
  : ["test/", "broker/", "runtime/", "tools/", "cli/", "api/"];
const runs = [
  ["test", ...permissions, "--parallel", "--doc", ...ALONE.map((f) => `--ignore=${f}`), ...targets],
  ...(Deno.args.length ? [] : [["test", ...permissions, ...ALONE]]),
];

let passed = 0;
let failed = 0;
let code = 0;
for (const args of runs) {
  const run = await runTests(args);
  passed += run.passed;
  failed += run.failed;
  if (run.code !== 0 && code === 0) code = run.code;
}
console.log(`${passed} passed, ${failed} failed`);
Deno.exit(code !== 0 ? code : passed === 0 ? 1 : 0);

/** Runs one `deno test`, echoing its output; its counts and exit code. */
async function runTests(args: string[]): Promise<{ passed: number; failed: number; code: number }> {
  const child = new Deno.Command(Deno.execPath(), {
    args,
    stdout: "piped",
    stderr: "inherit",
    env: { NO_COLOR: "1" },
  }).spawn();
  let tail = "";
  const decoder = new TextDecoder();
  for await (const chunk of child.stdout) {
    await Deno.stdout.write(chunk);
    tail = (tail + decoder.decode(chunk, { stream: true })).slice(-4000);
  }
  const status = await child.status;
  const summary = tail.match(/(?:ok|FAILED) \| (\d+) passed(?: \((\d+) steps?\))? \| (\d+) failed/);
  return {
    passed: summary ? Number(summary[1]) : 0,
    failed: summary ? Number(summary[3]) : 0,
    code: status.code,
  };
}
