/**
 * Model specs as the CLI and the HTTP API name them: `scripted:FILE` (the
 * deterministic scripted model of SPEC section 11) or `openai:NAME`.
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
 * import { normalizeModelSpec } from "./model_spec.ts";
 * console.assert(normalizeModelSpec("scripted:/tmp/t.json") === "scripted:/tmp/t.json");
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
