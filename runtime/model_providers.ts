/**
 * Which model provider each process uses, and which model it may always
 * call. Providers a resolver builds are kept, one per model spec.
 *
 * @module
 */

import { SyscallError } from "../broker/errors.ts";
import { imageModelId, type RegisteredImage } from "./image.ts";
import type { ModelProvider } from "./model.ts";
import { DEFAULT_MODEL_ID, specOfModelId } from "./model_spec.ts";
import type { ProcessRecord } from "./process_table.ts";

/**
 * The model a process calls when it names none and may always call, as
 * `provider/name`: set when it was made (the operator's `--model`, else
 * its image's model, else its parent's), or for a record that predates
 * that, its image's.
 */
export function ownModelOf(proc: Pick<ProcessRecord, "ownModel">, image: RegisteredImage): string {
  return proc.ownModel ?? imageModelId(image.image) ?? DEFAULT_MODEL_ID;
}

/** Where model providers come from. */
export interface ModelProvidersOptions {
  /** The provider for processes whose operator named no model spec. */
  model?: ModelProvider;
  /** Builds the provider a model spec names (`scripted:FILE`, `openai:NAME`). */
  resolve?: (spec: string) => Promise<ModelProvider>;
}

/** The model providers of one kernel. */
export class ModelProviders {
  #model: ModelProvider | undefined;
  #resolve: ((spec: string) => Promise<ModelProvider>) | undefined;
  #bySpec = new Map<string, Promise<ModelProvider>>();

  /** Providers from `options`. */
  constructor(options: ModelProvidersOptions = {}) {
    this.#model = options.model;
    this.#resolve = options.resolve;
  }

  /**
   * The model provider `proc` uses: the one its model spec names (the
   * operator's `--model`, inherited by its descendants); else the default
   * provider; else, with a resolver, the provider of the model it calls
   * (an image's `{ "provider": "openai", "name": N }` is `openai:N`; its
   * image is read only then). `ENOSYS` with one line for a provider that
   * cannot be resolved.
   */
  async forProcess(
    proc: ProcessRecord,
    imageOf: (proc: ProcessRecord) => Promise<RegisteredImage>,
  ): Promise<ModelProvider> {
    if (proc.model) return await this.#provider(proc.model);
    if (this.#model) return this.#model;
    const own = ownModelOf(proc, await imageOf(proc));
    if (!this.#resolve || own === DEFAULT_MODEL_ID) {
      throw new SyscallError(
        "ENOSYS",
        "Cannot complete: no model provider is configured (give --model, or name a model in the image)",
      );
    }
    return await this.#provider(specOfModelId(own));
  }

  #provider(spec: string): Promise<ModelProvider> {
    if (!this.#resolve) {
      return Promise.reject(
        new SyscallError("ENOSYS", `Cannot use model "${spec}": no model resolver is configured`),
      );
    }
    let provider = this.#bySpec.get(spec);
    if (!provider) {
      provider = this.#resolve(spec);
      this.#bySpec.set(spec, provider);
    }
    return provider;
  }
}
