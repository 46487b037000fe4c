/**
 * Runs the whole test suite with the permissions the host needs and ends
 * with the line `N passed, N failed` (what `.ci/run` reports). The exit code
 * is `deno test`'s, and a run that executed no test fails.
 *
 * With `--doc`, every code block in a JSDoc comment of the folders' modules
 * is type-checked and run as a test too (`@example` blocks marked `ignore`
 * are only shown, never run).
 *
 * @module
 */

const args = [
  "test",
  "--no-prompt",
  "--allow-read",
  "--allow-write",
  "--allow-run",
  "--allow-env",
  "--allow-ffi",
  "--allow-net=127.0.0.1",
  "--parallel",
  "--doc",
  ...(Deno.args.length ? Deno.args : ["test/", "broker/", "runtime/", "tools/", "cli/", "api/"]),
];
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
const passed = summary ? Number(summary[1]) : 0;
const failed = summary ? Number(summary[3]) : 0;
console.log(`${passed} passed, ${failed} failed`);
Deno.exit(status.code !== 0 ? status.code : passed === 0 ? 1 : 0);
