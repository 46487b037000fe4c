/**
 * Model specs as the CLI and the HTTP API name them: `scripted:FILE` (the
 * deterministic scripted model of SPEC section 11) or `openai:NAME`; and
 * model ids as requests and capabilities name them: `provider/name`.
 *
 * @module
 */

import { resolve } from "node:path";
import { SyscallError } from "../broker/errors.ts";
import { type ModelProvider, ScriptedModel } from "./model.ts";
import { OpenAIModel } from "./openai_model.ts";

/**
 * Normalizes a spec so it means the same thing from any directory: a
 * scripted file path becomes absolute. Throws a one-line error for a spec
 * of an unknown kind.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { normalizeModelSpec } from "./model_spec.ts";
 * assert(normalizeModelSpec("scripted:/tmp/t.json") === "scripted:/tmp/t.json");
 * ```
 */
export function normalizeModelSpec(spec: string, options: { cwd?: string } = {}): string {
  const [kind, ...rest] = spec.split(":");
  const arg = rest.join(":");
  if (!arg) {
    throw new SyscallError(
      "EINVAL",
      `Cannot use model "${spec}": expected scripted:FILE or openai:NAME`,
    );
  }
  if (kind === "scripted") return `scripted:${resolve(options.cwd ?? Deno.cwd(), arg)}`;
  if (kind === "openai") return spec;
  throw new SyscallError("EINVAL", `Cannot use model "${spec}": unknown provider "${kind}"`);
}

/**
 * Builds the provider a normalized spec names: `scripted:FILE` loads the
 * script, `openai:NAME` an {@link OpenAIModel} for model `NAME` configured
 * from `OPENAI_API_KEY` and `OPENAI_BASE_URL` (read at its first call).
 */
export async function resolveModelSpec(spec: string): Promise<ModelProvider> {
  const [kind, ...rest] = spec.split(":");
  const arg = rest.join(":");
  if (kind === "scripted") return await ScriptedModel.fromFile(arg);
  if (kind === "openai") return new OpenAIModel({ model: arg });
  throw new SyscallError(
    "ENOSYS",
    `Cannot use model "${spec}": the ${kind} provider is not available`,
  );
}

/** The model id a request names when neither the operator nor the image named a model. */
export const DEFAULT_MODEL_ID = "scripted/default";

/**
 * The model id (`provider/name`) a normalized spec stands for:
 * `openai:NAME` is `openai/NAME`; a scripted model is `scripted/default`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { modelIdOfSpec } from "./model_spec.ts";
 * assert(modelIdOfSpec("openai:gpt-4o-mini") === "openai/gpt-4o-mini");
 * assert(modelIdOfSpec("scripted:/tmp/t.json") === "scripted/default");
 * ```
 */
export function modelIdOfSpec(spec: string): string {
  const [kind, ...rest] = spec.split(":");
  return kind === "scripted" ? DEFAULT_MODEL_ID : `${kind}/${rest.join(":")}`;
}

/**
 * The spec of the provider that serves a model id an image named: only an
 * `openai/NAME` model has one (`openai:NAME`). Any other provider is refused
 * with one line naming it, so an image never makes the host load a
 * scripted model file or a provider it does not have.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { specOfModelId } from "./model_spec.ts";
 * assert(specOfModelId("openai/gpt-4o-mini") === "openai:gpt-4o-mini");
 * ```
 */
export function specOfModelId(id: string): string {
  const slash = id.indexOf("/");
  const provider = slash < 0 ? id : id.slice(0, slash);
  const name = slash < 0 ? "" : id.slice(slash + 1);
  if (provider === "openai" && name) return `openai:${name}`;
  throw new SyscallError(
    "ENOSYS",
    `Cannot use model ${JSON.stringify(id)}: the provider ${
      JSON.stringify(provider)
    } is not available (an image may name an "openai" model)`,
  );
}
