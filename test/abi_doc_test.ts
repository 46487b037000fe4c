import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { SYSCALL_ARGS, SYSCALL_NAMES } from "../broker/abi.ts";
import { ERROR_CODES } from "../broker/errors.ts";
import { sampleArgs, SYSCALL_DOCS } from "../docs/_gen_abi.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const GENERATOR = fileURLToPath(new URL("../docs/_gen_abi.ts", import.meta.url));
const DOC = fileURLToPath(new URL("../docs/abi.md", import.meta.url));

Deno.test("docs/abi.md is what docs/_gen_abi.ts generates from the code", async () => {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--no-prompt", "--allow-read", "--allow-run", GENERATOR, "--check"],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const message = new TextDecoder().decode(stderr).trim();
  assert.equal(code, 0, message);
  assert.equal(new TextDecoder().decode(stdout).trim(), "docs/abi.md is up to date");
});

Deno.test("docs/abi.md documents every syscall and every error code", async () => {
  const text = await Deno.readTextFile(DOC);
  for (const name of SYSCALL_NAMES) {
    assert.ok(text.includes(`\n### ${name}\n`), `a section for ${name}`);
  }
  for (const code of ERROR_CODES) assert.ok(text.includes(`| \`${code}\``), code);
});

Deno.test("the generator's hand-written table covers exactly the ABI's syscalls", () => {
  assert.deepEqual(Object.keys(SYSCALL_DOCS).sort(), [...SYSCALL_NAMES].sort());
});

Deno.test("the generator's sample arguments pass every syscall's schema", () => {
  for (const name of SYSCALL_NAMES) {
    const parsed = SYSCALL_ARGS[name].safeParse(sampleArgs(name));
    assert.ok(parsed.success, `${name}: ${parsed.error?.issues[0]?.message}`);
  }
});
