import assert from "node:assert/strict";
import type { AgentImage, RegisteredImage } from "./image.ts";
import { type ModelProvider, ScriptedModel } from "./model.ts";
import { ModelProviders, ownModelOf } from "./model_providers.ts";
import type { ProcessRecord } from "./process_table.ts";

const named: RegisteredImage = {
  tag: "demo@1.0.0",
  digest: "d",
  image: { model: { provider: "openai", name: "gpt-4o" } } as AgentImage,
  registeredAt: 0,
};
const unnamed: RegisteredImage = {
  tag: "plain@1.0.0",
  digest: "e",
  image: {} as AgentImage,
  registeredAt: 0,
};

function proc(extra: Partial<ProcessRecord> = {}): ProcessRecord {
  return { pid: 1, ...extra } as ProcessRecord;
}

function model(): ModelProvider {
  return new ScriptedModel(
    { turns: [] } as unknown as ConstructorParameters<typeof ScriptedModel>[0],
  );
}

/** A resolver that builds one provider per call and records the specs it was asked for. */
function resolver() {
  const asked: string[] = [];
  return {
    asked,
    resolve: (spec: string) => {
      asked.push(spec);
      return Promise.resolve(model());
    },
  };
}

Deno.test("a process's own model is its record's, else its image's, else the default", () => {
  assert.equal(ownModelOf(proc({ ownModel: "openai/gpt-4o-mini" }), named), "openai/gpt-4o-mini");
  assert.equal(ownModelOf(proc(), named), "openai/gpt-4o");
  assert.equal(ownModelOf(proc(), unnamed), "scripted/default");
});

Deno.test("the operator's model spec wins, then the default provider, then the image's model", async () => {
  const fallback = model();
  const { asked, resolve } = resolver();
  const providers = new ModelProviders({ model: fallback, resolve });
  const imageOf = () => Promise.reject(new Error("the image is not read"));
  const first = await providers.forProcess(proc({ model: "scripted:/t.json" }), imageOf);
  // One provider per spec, built once.
  assert.equal(await providers.forProcess(proc({ model: "scripted:/t.json" }), imageOf), first);
  assert.equal(await providers.forProcess(proc(), imageOf), fallback);
  const resolving = new ModelProviders({ resolve });
  await resolving.forProcess(proc(), () => Promise.resolve(named));
  assert.deepEqual(asked, ["scripted:/t.json", "openai:gpt-4o"]);
});

Deno.test("a process with no model to resolve is refused with ENOSYS", async () => {
  await assert.rejects(new ModelProviders().forProcess(proc(), () => Promise.resolve(named)), {
    code: "ENOSYS",
    message:
      "Cannot complete: no model provider is configured (give --model, or name a model in the image)",
  });
  await assert.rejects(
    new ModelProviders(resolver()).forProcess(proc(), () => Promise.resolve(unnamed)),
    { code: "ENOSYS" },
  );
  await assert.rejects(
    new ModelProviders({ model: model() }).forProcess(
      proc({ model: "openai:x" }),
      () => Promise.resolve(named),
    ),
    { code: "ENOSYS", message: 'Cannot use model "openai:x": no model resolver is configured' },
  );
});
