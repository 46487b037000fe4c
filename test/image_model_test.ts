/**
 * The model an image names is the model its process uses when the operator
 * gives none (SPEC section 4): `run`, `spawn` + `serve`, and the HTTP spawn
 * route all reach the OpenAI-protocol server on loopback that
 * `OPENAI_BASE_URL` names, `ps` and the process status say which model a
 * process uses, and an image naming a provider the host does not have fails
 * with one line. The CLI runs as the operator runs it: a subprocess with
 * that environment.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { chatCompletion, type OpenAIServer, startOpenAIServer } from "./_openai_server.ts";
import { cli } from "./_cli.ts";
import { HOST_PERMISSIONS } from "./_host_permissions.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const CLI = join(ROOT, "cli.ts");
const TOKEN = "o".repeat(32);

/** An agent image that names an OpenAI model and no other. */
function imageNaming(provider: string, name: string) {
  return {
    name: "asker",
    version: "1.0.0",
    entry: "libos:agent",
    model: { provider, name },
    system: "Answer in one line.",
    tools: ["exit"],
    capabilities: [],
    policy: {},
  };
}

interface Fixture {
  dir: string;
  kv: string;
  workspace: string;
  image: string;
  server: OpenAIServer;
  /** The environment that points the host at the loopback server. */
  env: Record<string, string>;
}

/** A store, a workspace, an image file, and a server answering every request with one line. */
async function withFixture(
  image: Record<string, unknown>,
  body: (f: Fixture) => Promise<void>,
): Promise<void> {
  const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "libos-image-model-" }));
  const workspace = join(dir, "ws");
  await Deno.mkdir(workspace);
  const imageFile = join(dir, "asker.json");
  await Deno.writeTextFile(imageFile, JSON.stringify(image));
  await using server = await startOpenAIServer(
    Array.from({ length: 8 }, () => (request) => ({
      body: chatCompletion({ content: `answered by ${request.body?.model}` }),
    })),
  );
  try {
    await body({
      dir,
      kv: join(dir, "libos.db"),
      workspace,
      image: imageFile,
      server,
      env: { OPENAI_API_KEY: "sk-loopback-test", OPENAI_BASE_URL: server.baseURL },
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** `libos ARGS` as a subprocess with `env` added to the environment. */
function libos(args: string[], env: Record<string, string>): Deno.Command {
  return new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      ...HOST_PERMISSIONS,
      "--allow-net=127.0.0.1",
      CLI,
      ...args,
    ],
    cwd: ROOT,
    env,
    stdout: "piped",
    stderr: "piped",
  });
}

async function output(command: Deno.Command): Promise<{ code: number; out: string; err: string }> {
  const { code, stdout, stderr } = await command.output();
  const decoder = new TextDecoder();
  return { code, out: decoder.decode(stdout), err: decoder.decode(stderr) };
}

Deno.test("run without --model completes on the OpenAI model its image names", async () => {
  await withFixture(imageNaming("openai", "gpt-4o-mini"), async (f) => {
    const run = await output(
      libos(["run", f.image, "--workspace", f.workspace, "--kv", f.kv, "--json"], f.env),
    );
    assert.equal(run.code, 0, run.err);
    const end = JSON.parse(run.out);
    assert.equal(end.state, "exited");
    assert.equal(end.result, "answered by gpt-4o-mini");
    assert.equal(f.server.requests.length, 1);
    assert.equal(f.server.requests[0].body?.model, "gpt-4o-mini");
    // ps names the model the process used.
    const ps = await cli(["ps", "--kv", f.kv]);
    assert.match(ps.out[0], /^PID\s+PPID\s+IMAGE\s+MODEL\s+STATE\s+RESULT$/);
    assert.match(ps.out[1], /^1\s+-\s+asker@1\.0\.0\s+openai\/gpt-4o-mini\s+exited\s/);
  });
});

Deno.test("a process spawned without --model runs on its image's model under serve", async () => {
  await withFixture(imageNaming("openai", "gpt-4o-mini"), async (f) => {
    const spawn = await cli(["spawn", f.image, "--workspace", f.workspace, "--kv", f.kv]);
    assert.equal(spawn.code, 0, spawn.err.join("\n"));
    assert.deepEqual(spawn.out, ["1"]);
    assert.equal(f.server.requests.length, 0, "spawning calls no model");
    const serve = await output(libos(["serve", "--until-idle", "--kv", f.kv], f.env));
    assert.equal(serve.code, 0, serve.err);
    const ps = await cli(["ps", "--json", "--kv", f.kv]);
    const [record] = ps.out.map((line) => JSON.parse(line));
    assert.equal(record.state, "exited", JSON.stringify(record.error));
    assert.equal(record.result, "answered by gpt-4o-mini");
    assert.equal(record.ownModel, "openai/gpt-4o-mini");
    assert.equal(f.server.requests[0].body?.model, "gpt-4o-mini");
  });
});

Deno.test("the HTTP spawn route uses the image's model, and the status names it", async () => {
  await withFixture(imageNaming("openai", "gpt-4o-mini"), async (f) => {
    const tokens = join(f.dir, "tokens.json");
    await Deno.writeTextFile(
      tokens,
      JSON.stringify({ tokens: [{ name: "op", token: TOKEN, role: "operator" }] }),
    );
    const serve = libos(
      ["serve", "--kv", f.kv, "--port", "0", "--tokens", tokens],
      f.env,
    ).spawn();
    const stderr = serve.stderr.pipeThrough(new TextDecoderStream()).getReader();
    try {
      let seen = "";
      let url = "";
      while (!url) {
        const { value, done } = await stderr.read();
        if (done) throw new Error(`serve ended early: ${seen}`);
        seen += value;
        url = seen.match(/http:\/\/127\.0\.0\.1:\d+\/v1/)?.[0] ?? "";
      }
      const server = url.replace(/\/v1$/, "");
      const remote = ["--server", server, "--token", TOKEN];
      const run = await cli(["run", f.image, "--workspace", f.workspace, "--json", ...remote]);
      assert.equal(run.code, 0, run.err.join("\n"));
      const end = JSON.parse(run.out[0]);
      assert.equal(end.state, "exited");
      assert.equal(end.result, "answered by gpt-4o-mini");
      const status = await fetch(`${url}/processes/${end.pid}`, {
        headers: { authorization: `Bearer ${TOKEN}` },
      });
      assert.equal(status.status, 200);
      assert.equal((await status.json()).ownModel, "openai/gpt-4o-mini");
      const ps = await cli(["ps", ...remote]);
      assert.match(ps.out[1], /^1\s+-\s+asker@1\.0\.0\s+openai\/gpt-4o-mini\s+exited\s/);
    } finally {
      serve.kill("SIGTERM");
      await serve.status;
      stderr.releaseLock();
      await serve.stdout.cancel();
      await serve.stderr.cancel().catch(() => {});
    }
    assert.equal(f.server.requests.length, 1);
    assert.equal(f.server.requests[0].body?.model, "gpt-4o-mini");
  });
});

Deno.test("an image naming a provider the host lacks fails at its first model call, in one line", async () => {
  await withFixture(imageNaming("anthropic", "claude-x"), async (f) => {
    const run = await output(
      libos(["run", f.image, "--workspace", f.workspace, "--kv", f.kv], f.env),
    );
    assert.equal(run.code, 2, run.err);
    const lines = run.out.trim().split("\n");
    assert.equal(lines[0], "pid 1 (asker@1.0.0) failed");
    assert.equal(
      lines[1],
      'error: Cannot use model "anthropic/claude-x": the provider "anthropic" is not available (an image may name an "openai" model)',
    );
    assert.equal(f.server.requests.length, 0);
    const ps = await cli(["ps", "--kv", f.kv]);
    assert.match(ps.out[1], /^1\s+-\s+asker@1\.0\.0\s+anthropic\/claude-x\s+failed\s/);
  });
});
