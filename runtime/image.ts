/**
 * Agent images (SPEC section 4): immutable JSON documents (YAML accepted as
 * input) that name an entry, a model, a tool table, a capability ceiling, a
 * policy, a budget and limits. An image is content-addressed by the SHA-256
 * of its canonical JSON (together with the digest of its entry module's
 * source, when it has one) and tagged `name@version`.
 *
 * KV layout of the {@link ImageRegistry}: `["image", "tag", tag]` holds the
 * digest, `["image", "digest", digest]` the {@link RegisteredImage} without
 * its source, and `["image", "src", entryDigest, i]` chunk `i` of an entry
 * module's source.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ImageRegistry, parseImage } from "./image.ts";
 * const image = parseImage('{ "name": "demo", "version": "1.0.0" }');
 * const kv = await Deno.openKv(":memory:");
 * const registry = new ImageRegistry(kv);
 * const registered = await registry.register(image);
 * assert(registered.tag === "demo@1.0.0");
 * assert((await registry.get(registered.digest))?.tag === "demo@1.0.0");
 * kv.close();
 * ```
 *
 * @module
 */

import { basename, dirname, extname, relative, resolve } from "node:path";
import { parseDocument } from "yaml";
import { z } from "zod";
import { parseCapability } from "../broker/capability.ts";
import { canonicalJson, digestOf, sha256Hex } from "../broker/digest.ts";
import { SyscallError } from "../broker/errors.ts";
import { parsePolicy } from "../broker/policy.ts";
import { describeIssue, issueMessage } from "../broker/schema_errors.ts";

/** An agent image, with defaults applied. */
export interface AgentImage {
  /** Lowercase name: letters, digits, `.`, `_`, `-`; at most 64 characters. */
  name: string;
  /** Version: letters, digits, `.`, `+`, `-`; at most 64 characters. */
  version: string;
  /** What the agent is for. */
  description?: string;
  /** `libos:agent` (the built-in agent loop) or a relative `.ts`/`.js` module path. */
  entry: string;
  /** The model the process may always call. */
  model?: { provider: string; name: string };
  /** System prompt of the built-in agent loop. */
  system?: string;
  /** Names of the tools in the process's tool table. */
  tools: string[];
  /** The capability ceiling, in text form. */
  capabilities: string[];
  /** Policy rules: capability pattern to decision. */
  policy: Record<string, "allow" | "deny" | "ask">;
  /** Budget of a process of this image, charged up the tree. */
  budget?: {
    toolCalls?: number;
    tokens?: number;
    children?: number;
    wallMs?: number;
    /** Most bytes of objects, transcript and checkpoints, charged up the tree (default 64 MiB). */
    storageBytes?: number;
    /** Most bytes of journal and audit records, charged up the tree (default 256 MiB). */
    journalBytes?: number;
  };
  /**
   * `process`: each process of this image runs in a cell of its own rather
   * than sharing one with its process tree (default `shared`).
   */
  isolation?: "shared" | "process";
  /** Limits of a process of this image. */
  limits?: {
    cpuMs?: number;
    memoryMb?: number;
    syscallsPerSecond?: number;
    outputBytes?: number;
    /** Largest message the program may send to the broker, in bytes. */
    maxMessageBytes?: number;
  };
}

/**
 * The model an image names, as `provider/name`; undefined when it names none.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { imageModelId } from "./image.ts";
 * const image = { model: { provider: "openai", name: "gpt-4o-mini" } };
 * assert(imageModelId(image) === "openai/gpt-4o-mini");
 * ```
 */
export function imageModelId(image: Pick<AgentImage, "model">): string | undefined {
  return image.model ? `${image.model.provider}/${image.model.name}` : undefined;
}

/** An image in the registry. */
export interface RegisteredImage {
  /** `name@version`. */
  tag: string;
  /** Hex SHA-256 content address (see {@link ImageRegistry.register}). */
  digest: string;
  /** The image. */
  image: AgentImage;
  /** Source of the entry module, for a module entry. */
  entrySource?: string;
  /** Hex SHA-256 of {@link entrySource}. */
  entryDigest?: string;
  /** Time of registration, in milliseconds since the epoch. */
  registeredAt: number;
}

/** A one-line error about an image that cannot be loaded or parsed. */
export class ImageError extends Error {
  /** Creates the error with its one-line message. */
  constructor(message: string) {
    super(message);
    this.name = "ImageError";
  }
}

/** The entry of the built-in tool-calling agent loop. */
export const BUILTIN_ENTRY = "libos:agent";

/** The largest image file or entry module read, in bytes. */
export const MAX_SOURCE_BYTES = 1024 * 1024;

/**
 * The largest image, in characters of canonical JSON, so that a registered
 * image always fits one KV value.
 */
export const MAX_IMAGE_CHARS = 30_000;

/** Characters per stored chunk of an entry source (at most 40 KB in KV). */
const SOURCE_CHUNK_CHARS = 20_000;
/** Chunks written per transaction (a transaction holds at most 800 KiB). */
const CHUNKS_PER_COMMIT = 10;

const POSITIVE_INT = "expected a positive integer";

function _positiveInt() {
  return z.int({ error: POSITIVE_INT }).positive({ error: POSITIVE_INT })
    .optional();
}

function _text(max: number) {
  return z.string().min(1, { error: "must not be empty" }).max(max, {
    error: `must be at most ${max} characters`,
  });
}

function _isModulePath(entry: string): boolean {
  if (entry.length > 256 || !/\.(ts|js)$/.test(entry)) return false;
  if (/[\\\0]/.test(entry) || entry.startsWith("/")) return false;
  if (/^[A-Za-z][A-Za-z0-9+.-]*:/.test(entry)) return false;
  const segments = entry.split("/");
  return segments.every((s, i) => s !== ".." && s !== "" && (s !== "." || i === 0));
}

const entrySchema = z.string().refine(
  (entry) => entry === BUILTIN_ENTRY || _isModulePath(entry),
  {
    error:
      `expected "${BUILTIN_ENTRY}" or a relative module path ending .ts or .js inside the image's directory`,
  },
);

const imageObject = z.strictObject({
  name: z.string().regex(/^[a-z0-9][a-z0-9._-]{0,63}$/, {
    error: 'expected a lowercase name of letters, digits, ".", "_" or "-" (at most 64 characters)',
  }),
  version: z.string().regex(/^[0-9A-Za-z][0-9A-Za-z.+-]{0,63}$/, {
    error: 'expected a version of letters, digits, ".", "+" or "-" (at most 64 characters)',
  }),
  description: z.string().max(4000).optional(),
  entry: entrySchema.default(BUILTIN_ENTRY),
  model: z.strictObject({ provider: _text(200), name: _text(200) })
    .optional(),
  system: z.string().optional(),
  tools: z.array(_text(64)).max(200).default([]),
  capabilities: z.array(_text(1000)).max(200).default([]),
  policy: z.record(_text(1000), z.enum(["allow", "deny", "ask"])).default({}),
  budget: z.strictObject({
    toolCalls: _positiveInt(),
    tokens: _positiveInt(),
    children: _positiveInt(),
    wallMs: _positiveInt(),
    storageBytes: _positiveInt(),
    journalBytes: _positiveInt(),
  }).optional(),
  isolation: z.enum(["shared", "process"]).optional(),
  limits: z.strictObject({
    cpuMs: _positiveInt(),
    memoryMb: _positiveInt(),
    syscallsPerSecond: _positiveInt(),
    outputBytes: _positiveInt(),
    maxMessageBytes: _positiveInt(),
  }).optional(),
});

/**
 * The zod schema of an image: strict objects (unknown fields are refused),
 * defaults for `entry`, `tools`, `capabilities` and `policy`, every
 * capability checked with `parseCapability`, the policy with `parsePolicy`,
 * duplicate tools refused, and the whole image at most
 * {@link MAX_IMAGE_CHARS} characters of canonical JSON.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { AgentImageSchema } from "./image.ts";
 * const image = AgentImageSchema.parse({ name: "demo", version: "1.0.0" });
 * assert(image.entry === "libos:agent" && image.tools.length === 0);
 * ```
 */
export const AgentImageSchema: z.ZodType<AgentImage> = imageObject
  .superRefine((image, ctx) => {
    const seen = new Set<string>();
    image.tools.forEach((tool, i) => {
      if (seen.has(tool)) {
        ctx.addIssue({
          code: "custom",
          path: ["tools", i],
          message: `duplicate tool "${tool}"`,
        });
      }
      seen.add(tool);
    });
    image.capabilities.forEach((text, i) => {
      try {
        parseCapability(text);
      } catch (error) {
        const message = _firstLine(error);
        ctx.addIssue({
          code: "custom",
          path: ["capabilities", i],
          message: message.includes(text)
            ? _lowerFirst(message)
            : `capability "${text}": ${_lowerFirst(message)}`,
        });
      }
    });
    try {
      parsePolicy(image.policy, "image");
    } catch (error) {
      ctx.addIssue({
        code: "custom",
        path: ["policy"],
        message: _lowerFirst(_firstLine(error)),
      });
    }
    const size = canonicalJson(image).length;
    if (size > MAX_IMAGE_CHARS) {
      ctx.addIssue({
        code: "custom",
        path: [],
        message: `the image is ${size} characters of JSON, over the limit of ${MAX_IMAGE_CHARS}`,
      });
    }
  });

/** Options for {@link parseImage}. */
export interface ParseImageOptions {
  /** The input's format; by default from `source`'s extension, else guessed. */
  format?: "json" | "yaml";
  /** Where the text came from, for error messages (a file path). */
  source?: string;
}

/**
 * Parses and validates an image from JSON or YAML text and applies its
 * defaults. Throws an {@link ImageError} with one line naming the source
 * and the first problem with its path, e.g.
 * `Cannot load image "x.json": budget.tokens: expected a positive integer`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseImage } from "./image.ts";
 * const image = parseImage("name: demo\nversion: 1.0.0\ntools: [read_file]\n", {
 *   format: "yaml",
 * });
 * assert(image.tools[0] === "read_file" && image.entry === "libos:agent");
 * ```
 */
export function parseImage(
  text: string,
  options: ParseImageOptions = {},
): AgentImage {
  const fail = (reason: string): ImageError =>
    new ImageError(
      options.source === undefined
        ? `Cannot load image: ${reason}`
        : `Cannot load image "${options.source}": ${reason}`,
    );
  if (text.length > MAX_SOURCE_BYTES) throw fail("the text is over 1 MiB");
  const body = text.replace(/^\uFEFF/, "");
  const format = options.format ?? _formatOf(options.source, body);
  let data: unknown;
  if (format === "json") {
    try {
      data = JSON.parse(body);
    } catch (error) {
      throw fail(`invalid JSON: ${_firstLine(error)}`);
    }
  } else {
    const doc = parseDocument(body, { prettyErrors: false });
    if (doc.errors.length) {
      throw fail(`invalid YAML: ${_firstLine(doc.errors[0].message)}`);
    }
    try {
      data = doc.toJS({ maxAliasCount: 100 });
    } catch (error) {
      throw fail(`invalid YAML: ${_firstLine(error)}`);
    }
  }
  const result = AgentImageSchema.safeParse(data, { error: issueMessage });
  if (!result.success) throw fail(describeIssue(result.error.issues[0]));
  return result.data;
}

function _formatOf(source: string | undefined, text: string): "json" | "yaml" {
  const ext = source === undefined ? "" : extname(source).toLowerCase();
  if (ext === ".json") return "json";
  if (ext === ".yaml" || ext === ".yml") return "yaml";
  return text.trimStart().startsWith("{") ? "json" : "yaml";
}

function _firstLine(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  return message.split("\n", 1)[0].trim();
}

function _lowerFirst(text: string): string {
  return text.charAt(0).toLowerCase() + text.slice(1);
}

/**
 * The tag `name@version` of an image.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { imageTag, parseImage } from "./image.ts";
 * assert(imageTag(parseImage('{"name":"a","version":"2.0"}')) === "a@2.0");
 * ```
 */
export function imageTag(image: AgentImage): string {
  return `${image.name}@${image.version}`;
}

/**
 * Hex SHA-256 of the canonical JSON of an image: its content address when
 * it has no entry module.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { imageDigest, parseImage } from "./image.ts";
 * const a = await imageDigest(parseImage('{"name":"a","version":"1","tools":[]}'));
 * const b = await imageDigest(parseImage('{"version":"1","name":"a"}'));
 * assert(a === b && a.length === 64);
 * ```
 */
export function imageDigest(image: AgentImage): Promise<string> {
  return digestOf(image);
}

/**
 * Reads an image file (`.json`, `.yaml` or `.yml`, at most 1 MiB) and, for
 * a module entry, the module's source, resolved against the image file's
 * directory. The entry must stay inside that directory, also through
 * symlinks. Throws an {@link ImageError} with one clear line.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { loadImageFile } from "./image.ts";
 * const dir = await Deno.makeTempDir();
 * await Deno.writeTextFile(`${dir}/img.json`, '{"name":"m","version":"1","entry":"main.ts"}');
 * await Deno.writeTextFile(`${dir}/main.ts`, "export default async () => 1;");
 * const { image, entrySource } = await loadImageFile(`${dir}/img.json`);
 * assert(image.entry === "main.ts" && entrySource?.includes("export"));
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function loadImageFile(
  path: string,
): Promise<{ image: AgentImage; entrySource?: string }> {
  const fail = (reason: string): ImageError =>
    new ImageError(`Cannot load image "${path}": ${reason}`);
  const ext = extname(path).toLowerCase();
  if (![".json", ".yaml", ".yml"].includes(ext)) {
    throw fail("expected a .json, .yaml or .yml file");
  }
  let text: string;
  try {
    text = await _readLimited(path);
  } catch (error) {
    throw fail(_describeReadError(error));
  }
  const image = parseImage(text, {
    format: ext === ".json" ? "json" : "yaml",
    source: path,
  });
  if (image.entry === BUILTIN_ENTRY) return { image };

  const entryPath = resolve(dirname(path), image.entry);
  let inside: boolean;
  try {
    const root = await Deno.realPath(dirname(resolve(path)));
    const target = await Deno.realPath(entryPath);
    const rel = relative(root, target);
    inside = rel !== "" && !rel.startsWith("..") && !rel.startsWith("/");
  } catch (error) {
    throw fail(
      `cannot read entry "${image.entry}": ${_describeReadError(error)}`,
    );
  }
  if (!inside) {
    throw fail(
      `entry "${image.entry}" resolves outside the directory of ${basename(path)}`,
    );
  }
  try {
    return { image, entrySource: await _readLimited(entryPath) };
  } catch (error) {
    throw fail(
      `cannot read entry "${image.entry}": ${_describeReadError(error)}`,
    );
  }
}

/** Reads a regular file of at most {@link MAX_SOURCE_BYTES} as UTF-8 text. */
async function _readLimited(path: string): Promise<string> {
  const info = await Deno.stat(path);
  if (!info.isFile) throw new TypeError("not a regular file");
  using file = await Deno.open(path, { read: true });
  const buffer = new Uint8Array(MAX_SOURCE_BYTES + 1);
  let filled = 0;
  while (filled < buffer.length) {
    const n = await file.read(buffer.subarray(filled));
    if (n === null) break;
    filled += n;
  }
  if (filled > MAX_SOURCE_BYTES) throw new RangeError("the file is over 1 MiB");
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(
      buffer.subarray(0, filled),
    );
  } catch {
    throw new TypeError("the file is not valid UTF-8 text");
  }
}

function _describeReadError(error: unknown): string {
  if (error instanceof Deno.errors.NotFound) return "no such file";
  if (
    error instanceof Deno.errors.PermissionDenied ||
    error instanceof Deno.errors.NotCapable
  ) return "permission denied";
  if (error instanceof Deno.errors.IsADirectory) return "not a regular file";
  return _firstLine(error);
}

// ---------------------------------------------------------------------------
// The registry

/** Most images (and tags) a registry keeps in memory. */
const REMEMBERED_IMAGES = 128;

/** Adds `key` to a bounded cache, forgetting the oldest entry past {@link REMEMBERED_IMAGES}. */
function _remember<T>(cache: Map<string, T>, key: string, value: T): void {
  cache.set(key, value);
  if (cache.size > REMEMBERED_IMAGES) cache.delete(cache.keys().next().value!);
}

/** Freezes `value` and everything it holds: a remembered image is shared by every reader. */
function _deepFreeze<T>(value: T): T {
  if (typeof value === "object" && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const inner of Object.values(value)) _deepFreeze(inner);
  }
  return value;
}

/** Options for {@link ImageRegistry.register}. */
export interface RegisterImageOptions {
  /** Source of the entry module; required for a module entry. */
  entrySource?: string;
}

const tagKey = (tag: string): Deno.KvKey => ["image", "tag", tag];
const digestKey = (digest: string): Deno.KvKey => ["image", "digest", digest];
const sourcePrefix = (entryDigest: string): Deno.KvKey => [
  "image",
  "src",
  entryDigest,
];

/**
 * Registered images in KV, by tag and by digest. A tag, once taken, always
 * names the same content.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ImageRegistry, parseImage } from "./image.ts";
 * const kv = await Deno.openKv(":memory:");
 * const registry = new ImageRegistry(kv);
 * await registry.register(parseImage('{"name":"b","version":"1"}'));
 * await registry.register(parseImage('{"name":"a","version":"1"}'));
 * assert((await registry.list()).map((i) => i.tag).join() === "a@1,b@1");
 * kv.close();
 * ```
 */
export class ImageRegistry {
  #kv: Deno.Kv;
  /**
   * Images read lately, by digest, and the digests of tags: what a digest
   * or a taken tag names never changes, so a spawn reads its image once.
   */
  #byDigest = new Map<string, RegisteredImage>();
  #byTag = new Map<string, string>();

  /** Opens the registry stored in `kv`. */
  constructor(kv: Deno.Kv) {
    this.#kv = kv;
  }

  /**
   * Validates and registers an image. Its digest is the SHA-256 of its
   * canonical JSON, or, with an entry module, of the canonical JSON of
   * `{ entryDigest, image }`, so it covers the module source too.
   * Registering the same content again returns the existing record; a tag
   * already taken by other content fails with `EEXIST`, also when two
   * registrations race. An invalid image fails with `EINVAL`.
   */
  async register(
    image: AgentImage,
    options: RegisterImageOptions = {},
  ): Promise<RegisteredImage> {
    const valid = this.#validate(image);
    const tag = imageTag(valid);
    const source = options.entrySource;
    const refuse = (reason: string): SyscallError =>
      new SyscallError("EINVAL", `Cannot register image "${tag}": ${reason}`);
    if (valid.entry === BUILTIN_ENTRY && source !== undefined) {
      throw refuse(`entry "${BUILTIN_ENTRY}" takes no module source`);
    }
    if (valid.entry !== BUILTIN_ENTRY && source === undefined) {
      throw refuse(`entry "${valid.entry}" needs its module source`);
    }
    if (
      source !== undefined &&
      new TextEncoder().encode(source).length > MAX_SOURCE_BYTES
    ) throw refuse("the entry source is over 1 MiB");

    const entryDigest = source === undefined ? undefined : await sha256Hex(source);
    const digest = entryDigest === undefined
      ? await imageDigest(valid)
      : await digestOf({ entryDigest, image: valid });

    const taken = await this.#kv.get<string>(tagKey(tag));
    if (taken.value !== null) return await this.#existing(tag, digest, taken.value);

    if (source !== undefined && entryDigest !== undefined) {
      await this.#storeSource(entryDigest, source);
    }
    const record: RegisteredImage = {
      tag,
      digest,
      image: valid,
      ...(entryDigest === undefined ? {} : { entryDigest }),
      registeredAt: Date.now(),
    };
    let committed: Deno.KvCommitResult | Deno.KvCommitError;
    try {
      committed = await this.#kv.atomic()
        .check({ key: tagKey(tag), versionstamp: null })
        .set(tagKey(tag), digest)
        .set(digestKey(digest), record)
        .commit();
    } catch (error) {
      if (error instanceof TypeError && /too large/i.test(error.message)) {
        throw refuse("the image is too large to store");
      }
      throw error;
    }
    if (committed.ok) {
      return source === undefined ? record : { ...record, entrySource: source };
    }
    const winner = await this.#kv.get<string>(tagKey(tag));
    if (winner.value === null) {
      throw new Error(`Cannot register image "${tag}": the store refused it`);
    }
    return await this.#existing(tag, digest, winner.value);
  }

  /**
   * A registered image by tag (`name@version`) or by digest (with or
   * without a `sha256:` prefix), with its entry source; undefined when
   * unknown. Throws an {@link ImageError} when the stored source is damaged.
   */
  async get(ref: string): Promise<RegisteredImage | undefined> {
    const bare = ref.startsWith("sha256:") ? ref.slice("sha256:".length) : ref;
    let digest: string;
    if (/^[0-9a-fA-F]{64}$/.test(bare)) digest = bare.toLowerCase();
    else {
      const known = this.#byTag.get(ref);
      if (known !== undefined) digest = known;
      else {
        const tag = await this.#kv.get<string>(tagKey(ref));
        if (tag.value === null) return undefined;
        digest = tag.value;
        _remember(this.#byTag, ref, digest);
      }
    }
    const cached = this.#byDigest.get(digest);
    if (cached) return cached;
    const entry = await this.#kv.get<RegisteredImage>(digestKey(digest));
    if (entry.value === null) return undefined;
    const record = entry.value;
    let image = record;
    if (record.entryDigest !== undefined) {
      const entrySource = await this.#readSource(record.entryDigest);
      if (entrySource === undefined) {
        throw new ImageError(
          `Cannot load image "${record.tag}": its entry source is missing or damaged`,
        );
      }
      image = { ...record, entrySource };
    }
    _remember(this.#byDigest, digest, _deepFreeze(image));
    return image;
  }

  /** All registered images, without entry sources, sorted by tag. */
  async list(): Promise<RegisteredImage[]> {
    const out: RegisteredImage[] = [];
    for await (
      const entry of this.#kv.list<RegisteredImage>({
        prefix: ["image", "digest"],
      })
    ) out.push(entry.value);
    return out.sort((a, b) => a.tag < b.tag ? -1 : a.tag > b.tag ? 1 : 0);
  }

  #validate(image: AgentImage): AgentImage {
    const result = AgentImageSchema.safeParse(image, { error: issueMessage });
    if (result.success) return result.data;
    const name = typeof image?.name === "string" &&
        typeof image?.version === "string"
      ? ` "${image.name}@${image.version}"`
      : "";
    throw new SyscallError(
      "EINVAL",
      `Cannot register image${name}: ${describeIssue(result.error.issues[0])}`,
    );
  }

  async #existing(
    tag: string,
    digest: string,
    stored: string,
  ): Promise<RegisteredImage> {
    if (stored !== digest) {
      throw new SyscallError(
        "EEXIST",
        `Cannot register image "${tag}": the tag is already taken by other content`,
      );
    }
    const existing = await this.get(digest);
    if (!existing) {
      throw new Error(`Cannot register image "${tag}": its record is missing`);
    }
    return existing;
  }

  /**
   * Writes a source's chunks under its digest, a few per transaction. The
   * chunks are content-addressed, so a write cut short is harmless: a read
   * checks the digest.
   */
  async #storeSource(entryDigest: string, source: string): Promise<void> {
    const count = Math.max(1, Math.ceil(source.length / SOURCE_CHUNK_CHARS));
    for (let first = 0; first < count; first += CHUNKS_PER_COMMIT) {
      const op = this.#kv.atomic();
      for (let i = first; i < Math.min(count, first + CHUNKS_PER_COMMIT); i++) {
        op.set(
          [...sourcePrefix(entryDigest), i],
          source.slice(i * SOURCE_CHUNK_CHARS, (i + 1) * SOURCE_CHUNK_CHARS),
        );
      }
      await op.commit();
    }
  }

  async #readSource(entryDigest: string): Promise<string | undefined> {
    const parts: string[] = [];
    for await (
      const entry of this.#kv.list<string>({
        prefix: sourcePrefix(entryDigest),
      })
    ) {
      if (entry.key.at(-1) !== parts.length) return undefined;
      parts.push(entry.value);
    }
    const source = parts.join("");
    return await sha256Hex(source) === entryDigest ? source : undefined;
  }
}
