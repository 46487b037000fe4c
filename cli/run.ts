/**
 * `libos run IMAGE` and `libos spawn IMAGE`: register an image (from a file,
 * or an already registered tag), create a process with the granted
 * capabilities and policy, and (for `run`) drive it to an end state.
 *
 * @module
 */

import { resolve } from "node:path";
import { parsePolicyAssignment } from "../broker/policy.ts";
import { loadImageFile, type RegisteredImage } from "../runtime/image.ts";
import type { Kernel, SpawnOptions, TranscriptEntry } from "../runtime/kernel.ts";
import { normalizeModelSpec, resolveModelSpec } from "../runtime/model_spec.ts";
import { list, parse, type Parsed, str, UsageError } from "./args.ts";
import { HOST_OPTIONS, type Io, openKernel, REMOTE_OPTIONS, remoteClient } from "./context.ts";
import { describeRequest, humanFlag } from "./human.ts";
import type { RemoteClient } from "./remote.ts";
import { clip } from "./table.ts";
import { END_STATES, type ProcessRecord } from "../runtime/process_table.ts";

const RUN_OPTIONS = {
  input: { type: "string" },
  workspace: { type: "string" },
  model: { type: "string" },
  human: { type: "string" },
  cap: { type: "string", multiple: true },
  policy: { type: "string", multiple: true },
  ...REMOTE_OPTIONS,
  ...HOST_OPTIONS,
} as const;

/** Exit code of `run` for a process that did not exit normally. */
export const EXIT_PROCESS_FAILED = 2;

/** Registers the image a CLI argument names: a file path, or a registered tag. */
export async function registerImageArg(kernel: Kernel, ref: string): Promise<RegisteredImage> {
  let isFile = false;
  try {
    isFile = (await Deno.stat(ref)).isFile;
  } catch {
    // Not a file: a tag.
  }
  if (!isFile) {
    const known = await kernel.images.get(ref);
    if (!known) throw new UsageError(`Cannot find image "${ref}": no such file or registered tag`);
    return known;
  }
  const { image, entrySource } = await loadImageFile(ref);
  return await kernel.images.register(image, { entrySource });
}

/** Turns `run`/`spawn` flags into spawn options. */
export function spawnOptions(parsed: Parsed, tag: string): SpawnOptions {
  const caps = list(parsed, "cap");
  const model = str(parsed, "model");
  return {
    image: tag,
    workspace: resolve(str(parsed, "workspace") ?? "."),
    input: str(parsed, "input"),
    capabilities: caps.length ? caps : undefined,
    policy: list(parsed, "policy").map((p) => parsePolicyAssignment(p, "operator")),
    model: model ? normalizeModelSpec(model) : undefined,
  };
}

/** `libos run IMAGE …` */
export async function runVerb(args: string[], io: Io): Promise<number> {
  const parsed = parse(args, RUN_OPTIONS, "run");
  const ref = parsed.positionals[0];
  if (!ref) {
    throw new UsageError(
      "Usage: libos run IMAGE [--workspace DIR] [--model scripted:FILE] [--cap CAP]... [--json]",
    );
  }
  const client = remoteClient(parsed);
  if (client) {
    _hostOnly(parsed, "with --server: the server's host decides how commands are confined");
    return await _runRemote(client, parsed, io);
  }
  const human = await humanFlag(str(parsed, "human"), io);
  const kernel = await openKernel(parsed, { human, runs: true });
  try {
    if (!kernel.sandbox) {
      io.err("libos run: --exec-sandbox none: commands run unconfined as the host user");
    }
    const image = await registerImageArg(kernel, ref);
    const options = spawnOptions(parsed, image.tag);
    if (options.model) await resolveModelSpec(options.model);
    const proc = await kernel.spawn(options);
    const unsubscribe = io.interactive && !parsed.values.json
      ? kernel.processes.subscribe((record, event) =>
        io.err(
          `[pid ${record.pid}] ${event.from ?? "new"} → ${event.to}${
            event.reason ? `: ${clip(event.reason, 80)}` : ""
          }`,
        )
      )
      : () => {};
    kernel.start(proc.pid);
    const end = await kernel.waitFor(proc.pid);
    unsubscribe();
    await kernel.journal.flush();
    return _report(end, await kernel.transcript(proc.pid), parsed, io);
  } finally {
    await kernel.close();
  }
}

function _report(
  end: ProcessRecord,
  transcript: TranscriptEntry[] | undefined,
  parsed: Parsed,
  io: Io,
): number {
  if (parsed.values.json) {
    io.out(JSON.stringify({
      pid: end.pid,
      image: end.image,
      state: end.state,
      result: end.result ?? null,
      error: end.error,
      usage: end.usage,
      transcript,
    }));
  } else {
    io.out(`pid ${end.pid} (${end.image}) ${end.state}`);
    if (end.error) io.out(`error: ${end.error.message}`);
    io.out(`result: ${JSON.stringify(end.result ?? null)}`);
  }
  return end.state === "exited" ? 0 : EXIT_PROCESS_FAILED;
}

/** Registers the image (a file; a tag is used as it is) and spawns over the API; the pid. */
async function _spawnRemote(client: RemoteClient, parsed: Parsed): Promise<number> {
  const ref = parsed.positionals[0];
  if (str(parsed, "human") !== undefined) {
    throw new UsageError(
      `Cannot use --human with --server: the server's host answers requests; use "libos approve"`,
    );
  }
  let tag = ref;
  let isFile = false;
  try {
    isFile = (await Deno.stat(ref)).isFile;
  } catch {
    // Not a file: a tag registered on the server.
  }
  if (isFile) {
    const { image, entrySource } = await loadImageFile(ref);
    tag = (await client.registerImage(image, { entrySource })).tag;
  }
  const options = spawnOptions(parsed, tag);
  const policy: Record<string, string> = {};
  for (const rule of options.policy ?? []) policy[rule.pattern] = rule.decision;
  const caps = list(parsed, "cap");
  return await client.spawn({
    image: tag,
    workspace: options.workspace,
    input: options.input,
    capabilities: caps.length ? caps : undefined,
    policy: Object.keys(policy).length ? policy : undefined,
    model: options.model,
  });
}

async function _runRemote(client: RemoteClient, parsed: Parsed, io: Io): Promise<number> {
  const pid = await _spawnRemote(client, parsed);
  const progress = io.interactive && !parsed.values.json;
  for await (const event of client.stream({ pid, kinds: ["transition", "human"] })) {
    if (event.kind === "human") {
      if (progress) {
        io.err(
          `[pid ${pid}] waiting for a human: ${
            clip(describeRequest(event.data), 100)
          } (libos approve ${event.data.id})`,
        );
      }
      continue;
    }
    if (event.kind !== "transition") continue;
    const e = event.data;
    if (progress) {
      io.err(
        `[pid ${e.pid}] ${e.from ?? "new"} → ${e.to}${e.reason ? `: ${clip(e.reason, 80)}` : ""}`,
      );
    }
    if (END_STATES.has(e.to)) break;
  }
  const end = await client.process(pid);
  return _report(end, await client.transcript(pid), parsed, io);
}

/** Refuses the host's flags (`--exec-sandbox`, the cell flags) where this invocation does not host the process. */
function _hostOnly(parsed: Parsed, why: string): void {
  for (const flag of Object.keys(HOST_OPTIONS)) {
    if (parsed.values[flag] !== undefined) throw new UsageError(`Cannot use --${flag} ${why}`);
  }
}

/** `libos spawn IMAGE …`: create the process and print its pid. */
export async function spawnVerb(args: string[], io: Io): Promise<number> {
  const parsed = parse(args, RUN_OPTIONS, "spawn");
  const ref = parsed.positionals[0];
  if (!ref) throw new UsageError("Usage: libos spawn IMAGE [--workspace DIR] [--cap CAP]...");
  _hostOnly(parsed, "with spawn: the host that runs the process decides; pass it to libos serve");
  const client = remoteClient(parsed);
  if (client) {
    const pid = await _spawnRemote(client, parsed);
    io.out(parsed.values.json ? JSON.stringify({ pid }) : String(pid));
    return 0;
  }
  const kernel = await openKernel(parsed);
  try {
    const image = await registerImageArg(kernel, ref);
    const options = spawnOptions(parsed, image.tag);
    if (options.model) await resolveModelSpec(options.model);
    const proc = await kernel.spawn(options);
    io.out(parsed.values.json ? JSON.stringify({ pid: proc.pid }) : String(proc.pid));
    return 0;
  } finally {
    await kernel.close();
  }
}
