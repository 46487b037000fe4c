/**
 * A smoke test against a real OpenAI-compatible endpoint: a tiny
 * `libos:agent` process reads one file through `read_file` and answers with
 * the word in it. It needs `OPENAI_API_KEY` (and honours `OPENAI_BASE_URL`);
 * the model is `LIBOS_SMOKE_MODEL`, default `gpt-4o-mini`. Without a key it
 * prints `skipped: OPENAI_API_KEY is not set` and exits 0.
 *
 * Exits 0 when the process exits having read the file and named the word,
 * 1 otherwise, with one line saying why.
 *
 * @example
 * ```sh
 * OPENAI_API_KEY=... deno run --no-prompt --allow-read --allow-write --allow-run \
 *   --allow-env --allow-net bench/smoke_openai.ts
 * ```
 *
 * @module
 */

import { join } from "node:path";
import { Kernel } from "../runtime/kernel.ts";
import { OpenAIModel } from "../runtime/openai_model.ts";

/** The word the agent must find in its workspace. */
const WORD = "periwinkle";

/** Runs the smoke test; returns the process exit code. */
async function main(): Promise<number> {
  if (!Deno.env.get("OPENAI_API_KEY")?.trim()) {
    console.log("skipped: OPENAI_API_KEY is not set");
    return 0;
  }
  const modelName = Deno.env.get("LIBOS_SMOKE_MODEL")?.trim() || "gpt-4o-mini";
  const workspace = await Deno.realPath(await Deno.makeTempDir({ prefix: "libos-smoke-" }));
  await Deno.writeTextFile(join(workspace, "word.txt"), `The secret word is ${WORD}.\n`);
  const kernel = await Kernel.open({
    store: ":memory:",
    model: new OpenAIModel({ model: modelName, timeoutMs: 60_000 }),
  });
  const started = performance.now();
  try {
    const image = await kernel.images.register({
      name: "smoke",
      version: "1.0.0",
      entry: "libos:agent",
      model: { provider: "openai", name: modelName },
      system: "You are a careful assistant. Use the tools you are given. Answer in one short line.",
      tools: ["read_file", "exit"],
      capabilities: ["fs:read:word.txt"],
      policy: {},
      budget: { tokens: 20_000, toolCalls: 10 },
    });
    const end = await kernel.run({
      image: image.tag,
      workspace,
      input: "Read the file word.txt with read_file, then reply with the secret word it contains.",
    });
    const transcript = await kernel.transcript(end.pid);
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    console.log(
      `model=openai/${modelName} state=${end.state} tokens=${end.usage.tokens} ` +
        `messages=${transcript.length} time=${seconds}s`,
    );
    console.log(`result: ${JSON.stringify(end.result ?? end.error ?? null)}`);
    if (end.state !== "exited") {
      console.log(`failed: the process ended ${end.state}`);
      return 1;
    }
    const read = transcript.some((m) => m.role === "tool" && m.content.includes(WORD));
    if (!read) {
      console.log("failed: the agent never read word.txt");
      return 1;
    }
    if (!JSON.stringify(end.result ?? "").toLowerCase().includes(WORD)) {
      console.log(`failed: the answer does not name "${WORD}"`);
      return 1;
    }
    console.log("ok");
    return 0;
  } finally {
    await kernel.close();
    await Deno.remove(workspace, { recursive: true });
  }
}

if (import.meta.main) {
  try {
    Deno.exit(await main());
  } catch (error) {
    console.log(`failed: ${error instanceof Error ? error.message : String(error)}`);
    Deno.exit(1);
  }
}
