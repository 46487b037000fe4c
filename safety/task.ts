/**
 * The declarative task format of the runtime-safety benchmark: a workspace
 * fixture, images with scripted model turns or program entries, the
 * capabilities and policy of the run, scripted human answers and operator
 * steps, and the effects that are allowed or forbidden.
 *
 * Strings may hold placeholders that the runner fills per task:
 * `{{CANARY}}` (a unique secret), `{{MARK}}` (a unique marker an attacker
 * knows), `{{WS}}`, `{{OUTSIDE}}` (a directory outside the workspace),
 * `{{SERVER}}` (the loopback attacker server's base URL) and `{{VICTIM}}`
 * (the pid of a bystander process).
 *
 * @example
 * ```ts ignore
 * import { loadTasks } from "./task.ts";
 * const tasks = await loadTasks("safety/tasks");
 * console.log(tasks.length);
 * ```
 *
 * @module
 */

import { join } from "node:path";
import { z } from "zod";

/** The attack classes of the benchmark (SPEC section 15). */
export const TASK_CLASSES = [
  "secret_read",
  "forbidden_write",
  "shell_bypass",
  "command_escape",
  "net_exfiltration",
  "object_leak",
  "process_authority",
  "self_evolution",
  "approval_misuse",
  "resource_exhaustion",
  "audit_tampering",
] as const;

/** One of {@link TASK_CLASSES}. */
export type TaskClass = typeof TASK_CLASSES[number];

const TurnSchema = z.object({
  content: z.string().optional(),
  tool_calls: z.array(
    z.object({
      id: z.string().optional(),
      name: z.string(),
      arguments: z.record(z.string(), z.unknown()).optional(),
    }).strict(),
  ).optional(),
  exit: z.boolean().optional(),
}).strict();

const ImageSchema = z.object({
  name: z.string(),
  version: z.string().default("1.0.0"),
  /** A program entry module (TypeScript source); without it the image is `libos:agent`. */
  source: z.string().optional(),
  system: z.string().optional(),
  tools: z.array(z.string()).default([]),
  capabilities: z.array(z.string()).default([]),
  policy: z.record(z.string(), z.enum(["allow", "deny", "ask"])).default({}),
  limits: z.record(z.string(), z.number()).optional(),
  budget: z.record(z.string(), z.number()).optional(),
  /** Scripted model turns of an agent image. */
  turns: z.array(TurnSchema).default([]),
  /** False for an image the run itself registers: only its turns are set up. */
  register: z.boolean().default(true),
}).strict();

const EffectSchema = z.discriminatedUnion("effect", [
  z.object({ effect: z.literal("leak") }).strict(),
  z.object({ effect: z.literal("changed"), path: z.string() }).strict(),
  z.object({ effect: z.literal("exists"), path: z.string(), contains: z.string().optional() })
    .strict(),
  z.object({
    effect: z.literal("request"),
    path: z.string().optional(),
    contains: z.string().optional(),
  }).strict(),
  z.object({ effect: z.literal("result"), contains: z.string() }).strict(),
  z.object({ effect: z.literal("tool_result"), tool: z.string(), contains: z.string() }).strict(),
  z.object({ effect: z.literal("processes"), over: z.number().int() }).strict(),
  z.object({ effect: z.literal("calls"), over: z.number().int() }).strict(),
  z.object({ effect: z.literal("object"), namespace: z.string(), name: z.string() }).strict(),
  z.object({ effect: z.literal("image"), tag: z.string() }).strict(),
  z.object({ effect: z.literal("unbounded") }).strict(),
  /** A file in the host's own Deno cache (emits, origin storage) that holds `contains`. */
  z.object({ effect: z.literal("host_cache"), contains: z.string() }).strict(),
  /** A variable of the host's environment, as `NAME=value`, in anything the run left. */
  z.object({ effect: z.literal("host_env") }).strict(),
  /** Tokens the model served during the run, over `over`. */
  z.object({ effect: z.literal("model_tokens"), over: z.number().int() }).strict(),
  /** JIT tool runs (each a tool process of the runtime), over `over`. */
  z.object({ effect: z.literal("tool_runs"), over: z.number().int() }).strict(),
  /** Bytes of object values stored after the run (as JSON), over `over`. */
  z.object({ effect: z.literal("stored"), over: z.number().int() }).strict(),
  /** The file still changes after the main process ended and every process was stopped. */
  z.object({ effect: z.literal("grows"), path: z.string() }).strict(),
  /** A character a terminal acts on, in an audit record as stored or as `libos audit` shows it. */
  z.object({ effect: z.literal("audit_control") }).strict(),
  /** The host's event loop left a timer unanswered for over a second during the run. */
  z.object({ effect: z.literal("host_stall") }).strict(),
  /** A line of the audit trail as `libos audit` shows it that starts with or holds a text. */
  z.object({
    effect: z.literal("audit_line"),
    startsWith: z.string().optional(),
    contains: z.string().optional(),
  }).strict(),
]);

/** An observable effect that a task allows or forbids. */
export type Effect = z.infer<typeof EffectSchema>;

const HostStepSchema = z.discriminatedUnion("do", [
  z.object({ do: z.literal("await_request") }).strict(),
  z.object({
    do: z.literal("answer"),
    /** `current`: the pending request; `answered`: the last one answered; `forged`: a made-up id. */
    target: z.enum(["current", "answered", "forged"]),
    decision: z.enum(["allow_once", "allow_always", "deny_once", "deny_always"]),
    /** `other`: a digest of a different operation. */
    argsDigest: z.enum(["match", "other"]).optional(),
  }).strict(),
  z.object({ do: z.literal("await_blocked") }).strict(),
  z.object({ do: z.literal("snapshot") }).strict(),
  z.object({ do: z.literal("revoke"), prefix: z.string() }).strict(),
  z.object({ do: z.literal("restore") }).strict(),
  z.object({ do: z.literal("post"), topic: z.string() }).strict(),
  /** Waits until a file (under the workspace unless absolute) exists. */
  z.object({ do: z.literal("await_file"), path: z.string() }).strict(),
  /** Kills the main process, as `libos kill` does. */
  z.object({ do: z.literal("kill") }).strict(),
  /**
   * Answers the current request as a careful operator would: reads it as
   * the approval prompt shows it, and denies it once when what is shown
   * holds `denyIfShown` (whitespace and line breaks aside), else answers
   * `decision`.
   */
  z.object({
    do: z.literal("review"),
    decision: z.enum(["allow_once", "allow_always"]),
    denyIfShown: z.string(),
  }).strict(),
]);

/** An operator step the runner performs while the main process runs. */
export type HostStep = z.infer<typeof HostStepSchema>;

/** The zod schema of a task file. */
export const TaskSchema = z.object({
  id: z.string().regex(/^[a-z0-9_-]+$/),
  class: z.enum(TASK_CLASSES),
  kind: z.enum(["attack", "benign"]),
  description: z.string(),
  workspace: z.object({
    files: z.record(z.string(), z.string()).default({}),
    outside: z.record(z.string(), z.string()).default({}),
    symlinks: z.record(z.string(), z.string()).default({}),
  }).strict().default({ files: {}, outside: {}, symlinks: {} }),
  /** Start a bystander process first; its pid fills `{{VICTIM}}`. */
  victim: z.boolean().default(false),
  /**
   * The bystander's program (its image allows nothing); by default it ends
   * at once. The run waits for it to end after the main process.
   */
  victimSource: z.string().optional(),
  /** Objects the operator stores before the run. */
  objects: z.array(z.object({ namespace: z.string(), name: z.string(), value: z.unknown() }))
    .default([]),
  images: z.array(ImageSchema).min(1),
  run: z.object({
    image: z.string(),
    capabilities: z.array(z.string()).optional(),
    policy: z.record(z.string(), z.enum(["allow", "deny", "ask"])).optional(),
    input: z.unknown().optional(),
  }).strict(),
  human: z.object({ answers: z.array(z.record(z.string(), z.unknown())) }).optional(),
  host: z.array(HostStepSchema).default([]),
  allowed: z.array(EffectSchema).default([]),
  forbidden: z.array(EffectSchema).default([]),
  expect: z.object({
    state: z.enum(["exited", "failed", "killed"]),
    /** At least this many denied or failed audit records (and refused operator steps). */
    denials: z.number().int().default(0),
  }).strict(),
  baseline: z.object({
    /** Why the attack cannot be replayed without the runtime (keep rare). */
    notApplicable: z.string().optional(),
    /** Effects the baseline takes as happening without executing them (e.g. a spin). */
    simulate: z.array(z.string()).default([]),
  }).strict().default({ simulate: [] }),
  timeoutMs: z.number().int().default(60_000),
}).strict();

/** A parsed task. */
export type Task = z.infer<typeof TaskSchema>;

/** An image of a task, with defaults filled. */
export type TaskImage = Task["images"][number];

/**
 * Parses one task document.
 *
 * @throws {Error} naming the task file and the first schema problem.
 */
export function parseTask(doc: unknown, origin: string): Task {
  const parsed = TaskSchema.safeParse(doc);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new Error(`Cannot load task "${origin}": ${issue.path.join(".")}: ${issue.message}`);
  }
  return parsed.data;
}

/** Loads every `*.json` task in `dir`, sorted by id; ids must be unique. */
export async function loadTasks(dir: string): Promise<Task[]> {
  const tasks: Task[] = [];
  for await (const entry of Deno.readDir(dir)) {
    if (!entry.isFile || !entry.name.endsWith(".json")) continue;
    const path = join(dir, entry.name);
    tasks.push(parseTask(JSON.parse(await Deno.readTextFile(path)), path));
  }
  tasks.sort((a, b) => a.id.localeCompare(b.id));
  const seen = new Set<string>();
  for (const task of tasks) {
    if (seen.has(task.id)) throw new Error(`Cannot load tasks: id "${task.id}" is used twice`);
    seen.add(task.id);
  }
  return tasks;
}

/** Fills `{{NAME}}` placeholders in every string of `value`. */
export function substitute<T>(value: T, vars: Readonly<Record<string, string>>): T {
  const fill = (text: string) =>
    text.replace(/\{\{([A-Z]+)\}\}/g, (all, name: string) => vars[name] ?? all);
  const walk = (v: unknown): unknown => {
    if (typeof v === "string") return fill(v);
    if (Array.isArray(v)) return v.map(walk);
    if (v && typeof v === "object") {
      const out: Record<string, unknown> = {};
      for (const [k, inner] of Object.entries(v)) out[fill(k)] = walk(inner);
      return out;
    }
    return v;
  };
  return walk(value) as T;
}
