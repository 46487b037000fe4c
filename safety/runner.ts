/**
 * Runs one safety task on the runtime: a fresh in-memory kernel, the task's
 * workspace and images, the main process under the task's capabilities and
 * policy, the operator's steps, and then the oracles over everything the
 * run left behind.
 *
 * @example
 * ```ts ignore
 * import { runTask } from "./runner.ts";
 * await using attacker = startAttacker();
 * const run = await runTask(task, { attacker });
 * console.log(run.verdict.unauthorized.length);
 * ```
 *
 * @module
 */

import { join } from "node:path";
import { formatCapability } from "../broker/capability.ts";
import { parsePolicy } from "../broker/policy.ts";
import { requestLines } from "../cli/human.ts";
import { auditTable } from "../cli/inspect.ts";
import type { HumanAnswer, HumanRequest } from "../runtime/human_queue.ts";
import { ScriptedHuman } from "../runtime/human_queue.ts";
import type { AgentImage } from "../runtime/image.ts";
import { Kernel } from "../runtime/kernel.ts";
import {
  type ModelProvider,
  type ModelReply,
  type ModelRequest,
  ScriptedModel,
} from "../runtime/model.ts";
import { END_STATES, type ProcessRecord } from "../runtime/process_table.ts";
import type { Snapshot } from "../runtime/snapshots.ts";
import type { Attacker } from "./attacker.ts";
import {
  evaluate,
  hostCacheWrites,
  hostEnvironment,
  type Observation,
  type Scanned,
  snapshotFiles,
  taskPath,
  type Verdict,
  watchGrowth,
  watchStalls,
} from "./oracles.ts";
import { substitute, type Task, type TaskImage } from "./task.ts";

/** Where a task runs and what its placeholders stand for. */
export interface Prepared {
  root: string;
  ws: string;
  outside: string;
  canary: string;
  vars: Record<string, string>;
}

/** The outcome of one task in one mode. */
export interface TaskRun {
  id: string;
  class: Task["class"];
  kind: Task["kind"];
  mode: "runtime" | "baseline";
  verdict: Verdict;
  /** How the main process ended. */
  state: string;
  ms: number;
  /** Set when the baseline cannot replay the task. */
  notApplicable?: string;
  /** A runner failure (not a verdict). */
  error?: string;
}

/** What {@link runTask} needs besides the task. */
export interface RunContext {
  attacker: Attacker;
}

/** Creates the task's directories and files and fills its placeholders. */
export async function prepare(task: Task, attacker: Attacker): Promise<Prepared> {
  const root = await Deno.realPath(await Deno.makeTempDir({ prefix: `libos-safety-${task.id}-` }));
  const ws = join(root, "ws");
  const outside = join(root, "outside");
  await Deno.mkdir(ws);
  await Deno.mkdir(outside);
  const canary = `CANARY-${crypto.randomUUID()}`;
  const vars: Record<string, string> = {
    CANARY: canary,
    MARK: `MARK-${crypto.randomUUID()}`,
    WS: ws,
    OUTSIDE: outside,
    SERVER: attacker.base,
    HOST: String(Deno.pid),
  };
  const fixture = substitute(task.workspace, vars);
  const put = async (base: string, files: Record<string, string>) => {
    for (const [path, content] of Object.entries(files)) {
      await Deno.mkdir(join(base, path, ".."), { recursive: true });
      await Deno.writeTextFile(join(base, path), content);
    }
  };
  await put(ws, fixture.files);
  await put(outside, fixture.outside);
  for (const [link, target] of Object.entries(fixture.symlinks)) {
    await Deno.mkdir(join(ws, link, ".."), { recursive: true });
    await Deno.symlink(target, join(ws, link));
  }
  return { root, ws, outside, canary, vars };
}

/** The image document a task image registers as. */
export function imageDoc(image: TaskImage): AgentImage {
  return {
    name: image.name,
    version: image.version,
    entry: image.source === undefined ? "libos:agent" : "./main.ts",
    ...(image.system === undefined ? {} : { system: image.system }),
    tools: image.tools,
    capabilities: image.capabilities,
    policy: image.policy,
    ...(image.limits ? { limits: image.limits } : {}),
    ...(image.budget ? { budget: image.budget } : {}),
  } as AgentImage;
}

/**
 * The scripted model of a task: the turns of each image that has some
 * (agent images, and programs that call `model.complete`), counting the
 * tokens it serves.
 */
export class TaskModel implements ModelProvider {
  readonly name = "scripted";
  /** Tokens served so far (input and output). */
  tokens = 0;
  #inner: ScriptedModel;

  constructor(images: readonly TaskImage[]) {
    this.#inner = new ScriptedModel({
      turns: [],
      images: Object.fromEntries(
        images.filter((i) => i.source === undefined || i.turns.length > 0).map((i) => [
          `${i.name}@${i.version}`,
          { turns: i.turns },
        ]),
      ),
    });
  }

  /** Answers from the script and counts the reply's tokens. */
  async complete(request: ModelRequest): Promise<ModelReply> {
    const reply = await this.#inner.complete(request);
    this.tokens += reply.usage.inputTokens + reply.usage.outputTokens;
    return reply;
  }
}

/**
 * Sets a secret variable in the host's environment for a task that looks
 * for the host's environment (`host_env`); returns how to remove it.
 */
export function exposeHostSecret(task: Task, canary: string): () => void {
  const wanted = [...task.forbidden, ...task.allowed].some((e) => e.effect === "host_env");
  if (!wanted) return () => {};
  const name = `LIBOS_SAFETY_SECRET_${task.id.replace(/[^a-z0-9]/gi, "_").toUpperCase()}`;
  Deno.env.set(name, canary);
  return () => Deno.env.delete(name);
}

/** The paths a task watches for growth after its run (`grows`), absolute. */
export function growthPaths(task: Task, ws: string): string[] {
  return task.forbidden.flatMap((e) => e.effect === "grows" ? [taskPath(ws, e.path)] : []);
}

/**
 * Whether an operator reading `request` as the approval prompt shows it
 * (`--human interactive`) sees `text`, whitespace and line breaks aside
 * (long arguments wrap).
 */
export function shows(request: HumanRequest, text: string): boolean {
  const squeeze = (t: string) => t.replace(/\s+/g, "");
  return squeeze(requestLines(request).join("")).includes(squeeze(text));
}

/** Text of a stored value, with bytes decoded as UTF-8. */
export function textOf(value: unknown): string {
  if (value instanceof Uint8Array) return new TextDecoder().decode(value);
  return JSON.stringify(value, (_key, v) => {
    if (v instanceof Uint8Array) return new TextDecoder().decode(v);
    if (typeof v === "bigint") return v.toString();
    return v;
  }) ?? "";
}

/** Every string inside `value`. */
function stringsOf(value: unknown): string[] {
  if (typeof value === "string") return [value];
  if (Array.isArray(value)) return value.flatMap(stringsOf);
  if (value && typeof value === "object") return Object.values(value).flatMap(stringsOf);
  return [];
}

async function dumpStore(kv: Deno.Kv): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for await (const entry of kv.list({ prefix: [] })) {
    out.set(JSON.stringify(entry.key), textOf(entry.value));
  }
  return out;
}

async function until(check: () => Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    if (await check()) return true;
    await new Promise((r) => setTimeout(r, 10));
  }
  return false;
}

async function ended(kernel: Kernel, pid: number): Promise<boolean> {
  const record = await kernel.processes.get(pid);
  return !record || END_STATES.has(record.state);
}

/** The program of a bystander process unless a task gives its own. */
export const VICTIM_DONE = `export default async () => "victim done";`;

/** Runs one task on the runtime and judges it with the oracles. */
export async function runTask(task: Task, context: RunContext): Promise<TaskRun> {
  const started = performance.now();
  const env = await prepare(task, context.attacker);
  context.attacker.take();
  const images = substitute(task.images, env.vars);
  const model = new TaskModel(images);
  const since = Date.now();
  const kernel = await Kernel.open({
    store: ":memory:",
    model,
    human: task.human
      ? new ScriptedHuman({ answers: task.human.answers as HumanAnswer[] })
      : undefined,
  });
  let state = "unknown";
  let refused = 0;
  const hideHostSecret = exposeHostSecret(task, env.canary);
  const stalls = watchStalls();
  try {
    for (const image of images.filter((i) => i.register)) {
      await kernel.images.register(
        imageDoc(image),
        image.source === undefined ? undefined : { entrySource: image.source },
      );
    }
    let victim: number | undefined;
    if (task.victim) {
      await kernel.images.register(
        imageDoc({
          name: "victim",
          version: "1.0.0",
          source: "",
          tools: [],
          capabilities: [],
          policy: {},
          turns: [],
          register: true,
        }),
        { entrySource: substitute(task.victimSource, env.vars) ?? VICTIM_DONE },
      );
      const bystander = { image: "victim@1.0.0", workspace: env.ws };
      if (task.victimSource === undefined) victim = (await kernel.run(bystander)).pid;
      else {
        victim = (await kernel.spawn(bystander)).pid;
        kernel.start(victim);
      }
      env.vars.VICTIM = String(victim);
    }
    for (const object of substitute(task.objects, env.vars)) {
      await kernel.objects.put(object.namespace, object.name, object.value, { writer: 0 });
    }
    await kernel.journal.flush();
    const before = await dumpStore(kernel.store.kv);
    const filesBefore = await snapshotFiles([env.ws, env.outside]);
    const run = substitute(task.run, env.vars);
    let main: ProcessRecord | undefined;
    try {
      main = await kernel.spawn({
        image: run.image,
        workspace: env.ws,
        input: run.input,
        capabilities: run.capabilities,
        policy: run.policy ? parsePolicy(run.policy, "operator") : undefined,
      });
    } catch {
      refused++;
      state = "refused";
    }
    if (main) {
      const pid = main.pid;
      kernel.start(pid);
      let current: HumanRequest | undefined;
      let answered: string | undefined;
      let snapshot: Snapshot | undefined;
      const pendingOf = async () =>
        (await kernel.humans.pending()).find((r) => r.pid === pid && r.id !== answered);
      for (const step of substitute(task.host, env.vars)) {
        if (step.do === "await_request") {
          await until(
            async () => !!(current = await pendingOf()) || await ended(kernel, pid),
            30_000,
          );
        } else if (step.do === "await_blocked") {
          await until(async () => {
            const record = await kernel.processes.get(pid);
            return !record || record.state === "blocked" || END_STATES.has(record.state);
          }, 30_000);
        } else if (step.do === "answer") {
          const id = step.target === "current"
            ? current?.id
            : step.target === "answered"
            ? answered
            : crypto.randomUUID();
          const argsDigest = step.argsDigest === "other"
            ? "0".repeat(64)
            : step.argsDigest === "match"
            ? current?.operation?.argsDigest
            : undefined;
          try {
            if (id === undefined) throw new Error("no request to answer");
            await kernel.humans.answer(id, {
              decision: step.decision,
              ...(argsDigest === undefined ? {} : { argsDigest }),
            }, { by: "safety-operator" });
            answered = id;
          } catch {
            refused++;
          }
        } else if (step.do === "snapshot") {
          snapshot = await kernel.snapshots.save(pid);
        } else if (step.do === "revoke") {
          for (const cap of await kernel.caps.list(pid)) {
            if (formatCapability(cap).startsWith(step.prefix)) await kernel.caps.revoke(cap.id);
          }
        } else if (step.do === "restore") {
          if (snapshot) await kernel.snapshots.restore(snapshot.id);
        } else if (step.do === "post") {
          await kernel.postEvent(step.topic);
        } else if (step.do === "await_file") {
          const path = taskPath(env.ws, step.path);
          await until(
            async () => await Deno.lstat(path).then(() => true, () => false) || ended(kernel, pid),
            30_000,
          );
        } else if (step.do === "kill") {
          // It may have ended meanwhile.
          await kernel.signal(pid, "kill", { by: "safety-operator" }).catch(() => {});
        } else if (step.do === "review") {
          const decision = current && shows(current, step.denyIfShown)
            ? "deny_once"
            : step.decision;
          try {
            if (!current) throw new Error("no request to review");
            await kernel.humans.answer(current.id, { decision }, { by: "safety-operator" });
            answered = current.id;
          } catch {
            refused++;
          }
        }
      }
      let end: ProcessRecord;
      try {
        end = await kernel.waitFor(pid, { timeoutMs: task.timeoutMs });
      } catch {
        await kernel.signal(pid, "kill").catch(() => {}); // it may have ended meanwhile
        end = await kernel.waitFor(pid);
      }
      state = end.state;
      if (victim !== undefined) await until(() => ended(kernel, victim), 30_000);
      const longestStallMs = stalls.stop();
      for (const record of await kernel.processes.list()) {
        // A leftover may be ended meanwhile by its parent's end: that is fine.
        if (!END_STATES.has(record.state)) await kernel.signal(record.pid, "kill").catch(() => {});
      }
      const grew = await watchGrowth(growthPaths(task, env.ws));
      await kernel.journal.flush();
      const after = await dumpStore(kernel.store.kv);
      const texts: Scanned[] = [];
      for (const [key, text] of after) {
        if (before.get(key) !== text) texts.push({ where: `store ${key.slice(0, 80)}`, text });
      }
      const toolResults: Observation["toolResults"] = [];
      const records = await kernel.processes.list();
      for (const record of records) {
        for (const message of await kernel.transcript(record.pid)) {
          texts.push({ where: `transcript of pid ${record.pid}`, text: JSON.stringify(message) });
          if (message.role === "tool") {
            toolResults.push({ tool: message.name, content: message.content });
          }
        }
        texts.push({ where: `record of pid ${record.pid}`, text: textOf(record) });
      }
      let denials = refused;
      let calls = 0;
      const audit = await Array.fromAsync(kernel.audit.list());
      for (const record of audit) {
        texts.push({ where: `audit ${record.seq}`, text: JSON.stringify(record) });
        if (record.decision === "deny" || record.outcome === "error") denials++;
        if (record.pid === pid) calls++;
      }
      // A human's deny reaches the process through its wait, not the audit: count it from the queue.
      for await (const entry of kernel.store.kv.list<HumanRequest>({ prefix: ["human"] })) {
        if (entry.value.answer?.decision?.startsWith("deny")) denials++;
      }
      const objects = new Set<string>();
      let storedBytes = 0;
      for await (const entry of kernel.store.kv.list({ prefix: ["obj"] })) {
        const [namespace, name] = [entry.key[1] as string, entry.key[2] as string];
        objects.add(`${namespace}/${name}`);
        const object = await kernel.objects.get(namespace, name).catch(() => undefined);
        storedBytes += JSON.stringify(object?.value ?? null).length;
      }
      const fileTexts = new Map<string, string>();
      const observation: Observation = {
        filesBefore,
        filesAfter: await snapshotFiles([env.ws, env.outside], fileTexts),
        fileTexts,
        texts,
        toolResults,
        requests: context.attacker.take(),
        state,
        result: end.result,
        processes: records.length - (victim === undefined ? 0 : 1),
        calls,
        denials,
        objects,
        images: new Set((await kernel.images.list()).map((i) => i.tag)),
        simulated: new Set(),
        hostCache: await hostCacheWrites(since),
        hostEnv: hostEnvironment(),
        modelTokens: model.tokens,
        toolRuns: records.filter((r) => r.tool).length,
        storedBytes,
        grew,
        audit: { fields: audit.flatMap(stringsOf), display: auditTable(audit) },
        longestStallMs,
      };
      return {
        id: task.id,
        class: task.class,
        kind: task.kind,
        mode: "runtime",
        verdict: evaluate(substitute(task, env.vars), observation, {
          canary: env.canary,
          ws: env.ws,
        }),
        state,
        ms: performance.now() - started,
      };
    }
    const fileTexts = new Map<string, string>();
    const observation: Observation = {
      filesBefore,
      filesAfter: await snapshotFiles([env.ws, env.outside], fileTexts),
      fileTexts,
      texts: [],
      toolResults: [],
      requests: context.attacker.take(),
      state,
      result: undefined,
      processes: 0,
      calls: 0,
      denials: refused,
      objects: new Set(),
      images: new Set(),
      simulated: new Set(),
      hostCache: await hostCacheWrites(since),
      hostEnv: hostEnvironment(),
      modelTokens: model.tokens,
      toolRuns: 0,
      storedBytes: 0,
      grew: new Set(),
      audit: { fields: [], display: "" },
      longestStallMs: stalls.stop(),
    };
    return {
      id: task.id,
      class: task.class,
      kind: task.kind,
      mode: "runtime",
      verdict: evaluate(substitute(task, env.vars), observation, {
        canary: env.canary,
        ws: env.ws,
      }),
      state,
      ms: performance.now() - started,
    };
  } finally {
    stalls.stop();
    hideHostSecret();
    await kernel.close();
    await Deno.remove(env.root, { recursive: true });
  }
}
