/**
 * Generates `docs/abi.md` from the syscall ABI in `broker/abi.ts`: the
 * argument tables come from the zod schemas (through `z.toJSONSchema`), the
 * error codes from `broker/errors.ts`, the result of every syscall from its
 * schema in `SYSCALL_RESULTS`, and which syscalls have a handler from
 * a probe of the kernel's broker. What authority each syscall needs and
 * whether it has an external effect is written by hand in
 * {@link SYSCALL_DOCS}, read off `runtime/syscalls/*.ts`.
 *
 * ```sh
 * deno run --allow-read --allow-write --allow-run docs/_gen_abi.ts          # rewrite docs/abi.md
 * deno run --allow-read --allow-run docs/_gen_abi.ts --check                # exit 1 when stale
 * ```
 *
 * @module
 */

import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { z } from "zod";
import { SYSCALL_ARGS, SYSCALL_NAMES, SYSCALL_RESULTS, type SyscallName } from "../broker/abi.ts";
import { ERROR_CODES, type ErrorCode } from "../broker/errors.ts";
import type { Effect } from "../broker/journal.ts";
import { Kernel } from "../runtime/kernel.ts";

/** What the hand-written part of the document says about one syscall. */
export interface SyscallDoc {
  /** What the call does, in one sentence. */
  summary: string;
  /**
   * The authority the call needs, in a few words (for a syscall without a
   * handler: what it is meant to need).
   */
  needs: string;
  /** More about its authority. */
  notes?: string;
  /** How the call touches the world, as its handler declares it; unset while unknown. */
  effect?: Effect;
}

const OWN = "none (the caller's own state)";

/** The hand-written part, keyed by syscall name; read off `runtime/syscalls/*.ts`. */
export const SYSCALL_DOCS: Readonly<Record<SyscallName, SyscallDoc>> = {
  "proc.self": {
    summary: "The caller's `pid`, `ppid`, `image`, `cwd` and `state`.",
    needs: OWN,
    effect: "none",
  },
  "proc.spawn": {
    summary: "Creates a child process of a registered image, starts it and returns `{ pid }`.",
    needs: "`proc:spawn:<image tag>`",
    notes: "Every capability asked for the child must be covered by one the caller holds and " +
      "lie within the child image's ceiling; without `capabilities` the child gets each " +
      "ceiling capability the caller covers. `policy` may only add `deny` or `ask` rules. " +
      "The child keeps every policy rule the caller runs under; its image's rules and " +
      "`policy` only tighten them. Its image may name only a model the caller may call (else " +
      "`EPERM`); its limits are at most the caller's and its budgets at most what the caller " +
      "has left. Charged to the `children` budget up the tree.",
    effect: "effect",
  },
  "proc.fork": {
    summary: "Creates a copy of the caller (same image, copy of its private object namespace); " +
      "returns `{ pid }`.",
    needs: "`proc:fork:self`",
    notes: "The copy gets a subset of the caller's capabilities (without `capabilities`, a copy " +
      "of each uncounted one with its expiry and `delegable` as they are), its policy, model and " +
      "limits, and at most the budgets the caller has left.",
    effect: "effect",
  },
  "proc.exec": {
    summary: "Replaces the caller's image, keeping its pid.",
    needs: "`proc:exec:<image tag>`",
    notes: "Capabilities beyond the new image's ceiling are revoked. The process keeps its " +
      "policy rules (the new image's only tighten them), limits and budgets (the new image's " +
      "only lower them); the new image may name only a model the caller may call (else `EPERM`).",
    effect: "effect",
  },
  "proc.wait": {
    summary: "Waits until a child ends (the caller is parked meanwhile) and returns its end " +
      "state and result.",
    needs: "none; the target must be a child of the caller (else `EPERM`)",
    effect: "none",
  },
  "proc.signal": {
    summary: "Sends a signal to a descendant: `pause` and `resume` stop and restart it, " +
      "`interrupt` fails the syscall it is blocked in with `EINTR`, and `terminate` and `kill` " +
      "end it as `killed`.",
    needs: "`proc:signal:children`; the target must be a descendant of the caller (else " +
      "`EPERM`)",
    effect: "effect",
  },
  "proc.exit": {
    summary: "Ends the caller as `exited` with `result`; its children are ended as their " +
      "`onParentExit` says. A result over 16 KiB of JSON is `EINVAL` (store it with " +
      "`obj.put` and return its name).",
    needs: OWN,
    effect: "idempotent",
  },
  "proc.children": {
    summary: "The caller's children: `[{ pid, image, state }]`.",
    needs: OWN,
    effect: "none",
  },
  "proc.chdir": {
    summary: "Changes the caller's working directory and returns the new real path (`EINVAL` " +
      "when it is not a directory).",
    needs: "`fs:read:<directory>`",
    effect: "none",
  },
  "proc.cwd": {
    summary: "The caller's working directory.",
    needs: OWN,
    effect: "none",
  },
  "fs.read": {
    summary: "Reads a file as text, at most `maxBytes` when given.",
    needs: "`fs:read:<path>`",
    effect: "none",
  },
  "fs.write": {
    summary: "Creates or replaces a file; returns `{ bytes }`.",
    needs: "`fs:write:<path>`",
    effect: "idempotent",
  },
  "fs.append": {
    summary: "Appends to a file; returns `{ bytes }`.",
    needs: "`fs:write:<path>`",
    effect: "effect",
  },
  "fs.list": {
    summary: "Lists a directory's entries, leaving out those policy denies reading.",
    needs: "`fs:read:<path>`",
    effect: "none",
  },
  "fs.stat": {
    summary: "Describes a file or directory.",
    needs: "`fs:read:<path>`",
    effect: "none",
  },
  "fs.mkdir": {
    summary: "Creates a directory (and its parents with `recursive`).",
    needs: "`fs:write:<path>`",
    effect: "idempotent",
  },
  "fs.remove": {
    summary: "Removes a file or (with `recursive`) a directory tree.",
    needs: "`fs:delete:<path>`; with `recursive`, on each entry below it too",
    effect: "idempotent",
  },
  "fs.rename": {
    summary: "Moves a file or directory.",
    needs:
      "`fs:read:<from>`, `fs:delete:<from>`, `fs:write:<to>`; for a directory, on each entry too",
    effect: "effect",
  },
  "obj.put": {
    summary: "Writes an object (checked against its type, if any) and returns `{ version }`; " +
      "with `expectedVersion` it fails unless the stored version matches.",
    needs: "`obj:write:<namespace>`",
    effect: "effect",
    notes: "The object's bytes are charged to the caller's `storageBytes` quota and its " +
      "ancestors' in the same commit (`EBUDGET`, and nothing stored, over one); replacing or " +
      "deleting it gives them back to whoever was charged.",
  },
  "obj.get": {
    summary: "Reads an object with its version and writer.",
    needs: "`obj:read:<namespace>`",
    effect: "none",
  },
  "obj.list": {
    summary: "Lists the objects of a namespace, optionally under a name prefix.",
    needs: "`obj:read:<namespace>`",
    effect: "none",
  },
  "obj.delete": {
    summary: "Deletes an object.",
    needs: "`obj:delete:<namespace>`",
    effect: "idempotent",
  },
  "obj.define_type": {
    summary: "Registers a JSON Schema type in a namespace, enforced on every later write.",
    needs: "`obj:write:<namespace>`",
    effect: "idempotent",
    notes: "The schema is held to the subset of JSON Schema 2020-12 that `broker/json_schema.ts` " +
      "checks, at most 16 KiB and 32 levels deep. `pattern`, `patternProperties` and " +
      '`format: "regex"` are refused with `EINVAL` (no regular expression from a process runs ' +
      "on the host), as is any keyword the checker does not know. Checking a write is bounded " +
      "by the value's size; a value that would take longer is refused with `EINVAL`.",
  },
  "obj.share": {
    summary: "Shares a namespace with another process.",
    needs: "the rights shared, held by the caller on the namespace (`self` allowed)",
    notes: "The caller's own namespace (`self`) it may share with any process. Any other " +
      "namespace it was given is delegated: its capability there must be delegable, and the " +
      "receiver a descendant whose image ceiling covers the share. The shared capability is a " +
      "subset of the caller's in every attribute (it expires with it).",
    effect: "effect",
  },
  "time.now": {
    summary: "The host clock, in milliseconds since the epoch.",
    needs: OWN,
    effect: "none",
  },
  "time.sleep": {
    summary: "Waits `ms` milliseconds; the caller is parked meanwhile (`0` answers at once).",
    needs: "`time:sleep:*`",
    effect: "none",
  },
  "event.emit": {
    summary: "Publishes an event on a topic. Events are kept: its bytes are charged to the " +
      "caller's `storageBytes` quota (`EBUDGET` over it).",
    needs: "`event:emit:<topic>`",
    effect: "effect",
  },
  "event.wait": {
    summary: "Waits for the next event on a topic; the caller is parked meanwhile.",
    needs: "`event:wait:<topic>`",
    effect: "none",
  },
  "msg.send": {
    summary: "Puts a message in a process's mailbox. Its bytes are charged to the caller's " +
      "`storageBytes` quota (`EBUDGET` over it) until the receiver takes it.",
    needs: "`proc:send:<pid>`",
    effect: "effect",
  },
  "msg.recv": {
    summary: "Takes the caller's next message; the caller is parked until one arrives.",
    needs: OWN,
    effect: "none",
  },
  "human.ask": {
    summary: "Files a typed question in the human queue, parks the caller until someone " +
      "answers, and returns the answer.",
    needs: "`human:ask:*`",
    effect: "none",
  },
  "human.request_permission": {
    summary: "Files a permission request in the human queue and parks the caller until " +
      "someone decides.",
    needs: "none to ask; only the human's answer grants the capability",
    notes: "The capability asked for must lie within the caller's image ceiling.",
    effect: "none",
  },
  "human.notify": {
    summary: "Tells a human something without waiting for an answer.",
    needs: "`human:notify:*`",
    effect: "effect",
  },
  "model.complete": {
    summary: "Completes a conversation with a model and returns the assistant message and " +
      "usage.",
    needs: "none for the process's own model or its image's, else " +
      "`model:complete:<provider/name>`",
    notes: "The process's own model (`ownModel`, `provider/name`) is the operator's `--model`, " +
      "else its image's `model`, else its spawner's (`scripted/default` when none names one). " +
      "Under a `tokens` budget (the process's or an ancestor's) the call first " +
      "reserves, in one atomic commit up the tree, an upper bound of its input tokens plus " +
      "`maxTokens` (default 4096, less when less is left) and the model is held to that many " +
      "reply tokens; `EBUDGET` when not even one reply token is left. What the model reports " +
      "then replaces the reservation. The tool calls of the reply are charged to `toolCalls` " +
      "the same way (`EBUDGET` when they do not fit). Every exchange is appended to the " +
      "process's transcript, and when the transcript then holds exactly the conversation " +
      "through the reply, the result names it: `transcript: { length, digest }`. A later " +
      "call may send that reference with only the messages after it in place of the whole " +
      "conversation, so a step costs its new messages, not the history; the host checks the " +
      "reference against the stored transcript (`EINVAL`, nothing sent to the model, when " +
      "the transcript does not start with that conversation) and expands it for the model. " +
      "When the transcript already goes on past the reference with the very messages sent " +
      "and a reply (a call whose journal record the host lost when it stopped), the call " +
      "answers with that reply and asks the model nothing; with other messages there it is " +
      "refused with `EINVAL`: send the whole conversation instead.",
    effect: "none",
  },
  "exec.run": {
    summary: "Runs a command from an argv array (never a shell string) with a timeout and an " +
      "output cap.",
    needs: "`exec:run:<command>` for every command the argv would run",
    notes: "`broker/command_analysis.ts` finds the commands: `env` and `bash`/`sh`/`dash -c` " +
      "are unwrapped, and known programs are checked option by option. What it cannot prove " +
      "runs nothing else (an unknown program, an interpreter, a script outside its strict " +
      "grammar, an option it does not know or that runs a program, a control character) " +
      "needs `exec:run:*`, the command standing for any program. The command runs in an OS " +
      "sandbox that sees the system's read-only runtime and only the paths of the caller's " +
      "`fs` capabilities, with network only through a proxy that enforces its `net:fetch` " +
      "capabilities; `ENOSYS` when the sandbox cannot start on the host.",
    effect: "effect",
  },
  "net.fetch": {
    summary: "Makes an HTTP request.",
    needs: "`net:fetch:<URL>`, checked again for every redirect",
    effect: "idempotent",
    notes:
      "`GET`, `HEAD` and `OPTIONS` are idempotent (redone after a crash); other methods are effects (`EUNCERTAIN` after a crash).",
  },
  "tool.register": {
    summary: "Registers a JIT tool from TypeScript source.",
    needs: "`tool:register:<name>`; refused inside a JIT tool",
    effect: "idempotent",
    notes:
      "Checks size, imports and escape hatches, the module's shape (a function exported as `run`, or a default export written in place as an object literal `{ name, description, input, manifest, run }` with literal values, or both when they agree), and type-checks the source; a name may not shadow a built-in tool. Registering the same tool again answers as the first time (so a redo after a crash succeeds); another tool under a taken name is `EEXIST`. Registering a tool grants it nothing. " +
      "Its `input` schema is held to the same subset as `obj.define_type` (no `pattern`, " +
      '`patternProperties` or `format: "regex"`), and every call\'s arguments are checked ' +
      "against it within a bound set by their size.",
  },
  "tool.call": {
    summary: "Calls a tool by name.",
    needs:
      "none to call; the tool runs as a child with its manifest intersected with the caller's capabilities",
    effect: "effect",
    notes: "Parks the caller until the tool's cell ends; the result is the tool's return value. " +
      "Each call is a child: it is reserved from the `children` budget up the tree first " +
      "(`EBUDGET` when none is left).",
  },
  "tool.list": {
    summary: "The caller's tool table.",
    needs: OWN,
    effect: "none",
  },
  "image.register": {
    summary: "Registers an image.",
    needs:
      "`image:register:<tag>`; the image's ceiling must be covered by the caller's capabilities",
    effect: "idempotent",
  },
  "image.list": {
    summary: "The registered images: `[{ tag, digest }]`.",
    needs: "none",
    effect: "none",
  },
  "cap.list": {
    summary: "The caller's capabilities, each as its record fields (SPEC section 5) beside its " +
      "text form.",
    needs: OWN,
    effect: "none",
  },
  "cap.request": {
    summary: "Asks a human for a capability, as `human.request_permission` does, and parks the " +
      "caller until someone decides.",
    needs: "none to ask; only the human's answer grants the capability",
    notes: "The capability asked for must lie within the caller's image ceiling.",
    effect: "none",
  },
  "cap.delegate": {
    summary: "Gives another process a subset of one of the caller's capabilities.",
    needs:
      "a delegable, uncounted capability of the caller that covers it; the receiver a descendant",
    notes: "The delegated capability is a subset of its source in every attribute (rights, " +
      "scope, uses, expiry, and `delegable` only from a delegable source); without a `ttl` it " +
      "expires with its source. It must also lie within the receiver's image ceiling, " +
      "`delegable` included, or the call fails with `EPERM` and the receiver gets nothing.",
    effect: "effect",
  },
  "cap.drop": {
    summary: "Revokes one of the caller's capabilities and everything derived from it; " +
      "returns `{ dropped }`.",
    needs: OWN,
    effect: "effect",
  },
  "ckpt.save": {
    summary: "Saves a program state that replay starts from; returns `{ seq }`.",
    needs: OWN,
    effect: "idempotent",
    notes: "Checkpoints are kept; each is charged to the `storageBytes` quota up the tree.",
  },
  "ckpt.list": {
    summary: "The caller's checkpoints.",
    needs: OWN,
    effect: "none",
  },
};

/** What each ABI error code means. */
export const ERROR_DOCS: Readonly<Record<ErrorCode, string>> = {
  EPERM: "Denied: no capability covers the operation, a policy rule or a human denied it, or " +
    "the target is not the caller's to act on.",
  EINVAL: "The arguments fail the schema, or a value is unusable (e.g. `chdir` to a file).",
  ENOENT: "The file, object, process or image does not exist.",
  EEXIST: "The target already exists.",
  ETIMEDOUT: "A wait or a provider call timed out.",
  EBUDGET:
    "The caller or an ancestor has spent a budget (tool calls, tokens, children) or storage quota.",
  EINTR: "Interrupted by a signal.",
  EUNCERTAIN: "A side effect whose outcome a crash left unknown; flagged in the audit.",
  ENOSYS: "The syscall (or this use of it) is not implemented, or no provider is configured.",
};

const EFFECT_DOCS: Readonly<Record<Effect, string>> = {
  none: "no external effect. Its journal record is buffered and committed with the next " +
    "effect's intent (or after a short interval); replay recomputes what a crash lost",
  idempotent: "an external effect that is safe to redo. The broker commits its intent to the " +
    "journal (durably, consuming any one-shot grant in the same commit) before it runs",
  effect: "an external effect that is not safe to redo. Its intent is committed to the journal " +
    "before it runs, as for `idempotent`; SPEC section 7 says a crash between intent and " +
    "completion makes it `EUNCERTAIN`",
};

type Schema = Record<string, unknown>;

const DOCS_DIR = dirname(fileURLToPath(import.meta.url));
const ROOT = join(DOCS_DIR, "..");
/** A pid no process has: probing with it runs no program's authority. */
const PROBE_PID = 2 ** 31 - 1;
const PROBE_TIMEOUT_MS = 2000;

/** The JSON Schema of a syscall's arguments, as the program sends them. */
export function argsJsonSchema(name: SyscallName): Schema {
  return z.toJSONSchema(SYSCALL_ARGS[name], { io: "input" }) as Schema;
}

/**
 * A small argument object that passes the syscall's schema, built from its
 * JSON Schema (URLs point at 127.0.0.1 so nothing leaves the host).
 */
export function sampleArgs(name: SyscallName): unknown {
  const schema = argsJsonSchema(name);
  return _sample(schema, _defsOf(schema));
}

/** What probing the kernel found about one syscall. */
export interface ProbeResult {
  /** The kernel has a handler for it. */
  implemented: boolean;
  /** The effect its handler declared, when the probe got that far and it is not `none`. */
  effect?: Effect;
}

/**
 * Asks the kernel which syscalls it has a handler for. Each is dispatched
 * once, with arguments that pass its schema, as a process that does not
 * exist (so it holds no capability): the broker answers a syscall without
 * a handler with `ENOSYS Syscall "<name>" is not implemented` right after
 * validation; any other answer (or none within two seconds) means a
 * handler ran. The journal record of each call tells the effect its
 * handler declared, when planning succeeded.
 */
export async function probeSyscalls(): Promise<Map<SyscallName, ProbeResult>> {
  const kernel = await Kernel.open({ store: ":memory:" });
  const found = new Map<SyscallName, ProbeResult>();
  try {
    const seqs = new Map<SyscallName, number>();
    for (const [i, name] of SYSCALL_NAMES.entries()) {
      const seq = i + 1;
      seqs.set(name, seq);
      const ctx = { pid: PROBE_PID, image: "abi-probe@0.0.0", workspace: ROOT, policy: [], seq };
      const reply: unknown = await _withTimeout(
        kernel.broker.dispatch(ctx, { id: seq, name, args: sampleArgs(name) }),
        PROBE_TIMEOUT_MS,
      );
      found.set(name, { implemented: _answeredByHandler(name, reply) });
    }
    await kernel.journal.flush();
    for (const [name, seq] of seqs) {
      const record = await kernel.store.kv.get<{ effect?: Effect }>(["journal", PROBE_PID, seq]);
      const effect = record.value?.effect;
      if (effect && effect !== "none") found.set(name, { implemented: true, effect });
    }
  } finally {
    await kernel.close();
  }
  return found;
}

function _answeredByHandler(name: SyscallName, reply: unknown): boolean {
  const error = (reply as { ok?: boolean; error?: { code: string; message: string } } | null)
    ?.error;
  if (typeof reply !== "object" || reply === null || !error) return true;
  if (error.code === "EINVAL" && error.message.startsWith(`Invalid arguments for ${name}`)) {
    throw new Error(`Cannot probe syscall "${name}": its sample arguments fail: ${error.message}`);
  }
  return !(error.code === "ENOSYS" && error.message === `Syscall "${name}" is not implemented`);
}

/**
 * Renders `docs/abi.md` (formatted with `deno fmt`).
 *
 * @example
 * ```ts ignore
 * import { renderAbiDoc } from "./_gen_abi.ts";
 * const text = await renderAbiDoc();
 * console.assert(text.startsWith("# Syscall ABI"));
 * ```
 */
export async function renderAbiDoc(): Promise<string> {
  const probed = await probeSyscalls();
  const implemented = new Set(SYSCALL_NAMES.filter((name) => probed.get(name)?.implemented));
  for (const name of SYSCALL_NAMES) {
    const doc = SYSCALL_DOCS[name];
    if (!doc) throw new Error(`Cannot document syscall "${name}": add it to SYSCALL_DOCS`);
    if (!implemented.has(name)) continue;
    if (doc.effect === undefined) {
      throw new Error(`Cannot document syscall "${name}": add its effect to SYSCALL_DOCS`);
    }
    const seen = probed.get(name)?.effect;
    if (seen !== undefined && seen !== doc.effect) {
      throw new Error(
        `Cannot document syscall "${name}": its handler declares effect "${seen}", ` +
          `SYSCALL_DOCS says "${doc.effect}"`,
      );
    }
  }
  const lines: string[] = [];
  const push = (...more: string[]) => lines.push(...more);
  push(
    "# Syscall ABI (v1)",
    "",
    "<!-- Generated by docs/_gen_abi.ts from broker/abi.ts. Do not edit by hand: run",
    "deno run --allow-read --allow-write --allow-run docs/_gen_abi.ts -->",
    "",
    "A program reaches the world only through syscalls. The worker-side libc turns",
    "`sys.fs.read(path)` and friends into calls, the cell relays them to the host, and the",
    "broker answers each one after the same steps: validate the arguments (zod), plan (resolve",
    "paths and targets), authorize (capabilities and policy), journal the intent of an effect,",
    "run it through a provider, then journal and audit the outcome.",
    "",
    "## Envelope",
    "",
    "A call:",
    "",
    "```json",
    '{ "id": 7, "name": "fs.read", "args": { "path": "README.md" } }',
    "```",
    "",
    "`id` is a non-negative integer the caller chooses, echoed in the reply; `name` is a syscall",
    "name below; `args` is the argument object. The reply is one of:",
    "",
    "```json",
    '{ "id": 7, "ok": true, "value": "# tiny-calc\\n" }',
    '{ "id": 7, "ok": false, "error": { "code": "EPERM", "message": "Cannot read file ..." } }',
    "```",
    "",
    "A call that returns nothing answers `value: null`. Every argument object is validated",
    "before anything else happens; unknown keys are refused, and a failure answers `EINVAL` with",
    "a message naming the first bad field (`Invalid arguments for fs.read: path: ...`). An unknown",
    "name answers `ENOSYS`. In the libc a failed call throws an error whose `code` is the error",
    "code.",
    "",
    "## Error codes",
    "",
    "| code | meaning |",
    "| --- | --- |",
    ...ERROR_CODES.map((code) => `| \`${code}\` | ${_cell(ERROR_DOCS[code])} |`),
    "",
    "## Authority",
    "",
    "A call needs a capability of the caller (`resource:right:scope`) for each operation it",
    "performs, and the caller's policy decides on it: with a matching capability the most",
    "specific rule applies (`allow` when none matches); without one the call is denied unless a",
    "rule says `ask`. A call that policy asks about goes to the human queue and parks the caller",
    "until someone answers; a denial fails with `EPERM`. Relative paths resolve against the caller's working directory; the target of an `fs` operation is the resolved real",
    "path inside the filesystem provider's containment, and `obj` namespace `self` names the",
    "caller's private namespace `proc/<pid>`, which every process is granted at creation.",
    "",
    "## Effects",
    "",
    ...(Object.keys(EFFECT_DOCS) as Effect[]).map((e) => `- \`${e}\`: ${EFFECT_DOCS[e]}.`),
    "",
    "Every call, allowed or denied, is journaled under its process's `(pid, seq)` and audited.",
    "",
    "A call whose effect is a change of the host's store alone (`obj.put`, `obj.delete`,",
    "`obj.define_type`, `obj.share`, `event.emit`, `msg.send`, `human.notify`) has no separate",
    "intent: its change, its journal record and its audit record are one commit. A crash leaves",
    "it done (replay answers it from the journal) or not begun (replay runs it again), never",
    "`EUNCERTAIN`. The commit of an effect (that one, or the intent of any other) holds only",
    "while the caller's capabilities are those that authorized it: a revocation committed in",
    "between makes the call authorized again, and refused with `EPERM`.",
    "",
    "## Syscalls",
    "",
    "| syscall | status | authority | effect |",
    "| --- | --- | --- | --- |",
    ...SYSCALL_NAMES.map((name) => {
      const doc = SYSCALL_DOCS[name];
      const live = implemented.has(name);
      return `| [\`${name}\`](#${_anchor(name)}) | ${live ? "implemented" : "ENOSYS"} | ${
        _cell(live ? doc.needs : `planned: ${doc.needs}`)
      } | ${live ? `\`${doc.effect}\`` : "-"} |`;
    }),
    "",
  );
  for (const name of SYSCALL_NAMES) {
    const doc = SYSCALL_DOCS[name];
    const live = implemented.has(name);
    push(`### ${name}`, "");
    if (!live) push("**Not implemented yet (ENOSYS).**", "");
    push(doc.summary, "");
    const authority = doc.needs[0].toUpperCase() + doc.needs.slice(1);
    push(
      `${live ? "Authority" : "Planned authority"}: ${authority}.${
        doc.notes ? ` ${doc.notes}` : ""
      }`,
      "",
    );
    if (live) push(`Effect: \`${doc.effect}\`.`, "");
    push(..._argsTable(name), "");
    push(..._resultTable(name), "");
  }
  return await _format(lines.join("\n"));
}

/** The fields of a syscall's result, from its schema in `SYSCALL_RESULTS`. */
function _resultTable(name: SyscallName): string[] {
  const schema = z.toJSONSchema(SYSCALL_RESULTS[name]!, { io: "output" }) as Schema;
  const defs = _defsOf(schema);
  const list = schema.type === "array";
  const record = _resolve((list ? schema.items : schema) as Schema, defs);
  const about = schema.description ? ` ${String(schema.description).replace(/\.?$/, ".")}` : "";
  if (record.type !== "object" || record.properties === undefined) {
    return [`Result: ${_cell(`\`${_type(schema, defs)}\``)}.${_cell(about)}`];
  }
  const properties = record.properties as Record<string, Schema>;
  const required = new Set((record.required ?? []) as string[]);
  return [
    `Result: ${list ? "an array of records" : "a record"}${about ? `.${_cell(about)}` : ":"}`,
    "",
    "| field | type | always | meaning |",
    "| --- | --- | --- | --- |",
    ...Object.entries(properties).map(([key, property]) =>
      `| \`${key}\` | ${_cell(`\`${_type(property, defs)}\``)} | ${
        required.has(key) ? "yes" : "no"
      } | ${_cell(String(property.description ?? "-"))} |`
    ),
  ];
}

function _argsTable(name: SyscallName): string[] {
  const schema = argsJsonSchema(name);
  const defs = _defsOf(schema);
  const properties = (schema.properties ?? {}) as Record<string, Schema>;
  const required = new Set((schema.required ?? []) as string[]);
  const names = Object.keys(properties);
  if (names.length === 0) return ["Arguments: none (`{}`)."];
  return [
    "| argument | type | required | constraints |",
    "| --- | --- | --- | --- |",
    ...names.map((key) => {
      const property = _resolve(properties[key], defs);
      return `| \`${key}\` | ${_cell(`\`${_type(properties[key], defs)}\``)} | ${
        required.has(key) ? "yes" : "no"
      } | ${_cell(_constraints(property, defs).join("; ") || "-")} |`;
    }),
  ];
}

function _defsOf(schema: Schema): Record<string, Schema> {
  return (schema.$defs ?? {}) as Record<string, Schema>;
}

function _refName(schema: Schema): string | undefined {
  const ref = schema.$ref;
  return typeof ref === "string" ? ref.replace(/^#\/\$defs\//, "") : undefined;
}

/** True for the recursive definition zod emits for `z.json()`. */
function _isJsonValue(schema: Schema | undefined, self: string): boolean {
  const options = schema?.anyOf as Schema[] | undefined;
  return Array.isArray(options) && options.some((o) => o.type === "null") &&
    options.some((o) => o.type === "array" && _refName(o.items as Schema) === self);
}

function _resolve(schema: Schema, defs: Record<string, Schema>): Schema {
  const ref = _refName(schema);
  if (ref === undefined) return schema;
  const target = defs[ref];
  return _isJsonValue(target, ref) ? { json: true } : _resolve(target, defs);
}

function _type(raw: Schema, defs: Record<string, Schema>): string {
  const schema = _resolve(raw, defs);
  if (schema.json) return "JSON";
  if (Array.isArray(schema.enum)) return schema.enum.map((v) => JSON.stringify(v)).join(" | ");
  if (schema.const !== undefined) return JSON.stringify(schema.const);
  const options = (schema.anyOf ?? schema.oneOf) as Schema[] | undefined;
  if (options) return options.map((o) => _type(o, defs)).join(" | ");
  switch (schema.type) {
    case "array": {
      const item = _type(schema.items as Schema, defs);
      return item.includes(" | ") ? `(${item})[]` : `${item}[]`;
    }
    case "object": {
      const properties = schema.properties as Record<string, Schema> | undefined;
      if (properties && Object.keys(properties).length) {
        const required = new Set((schema.required ?? []) as string[]);
        const fields = Object.entries(properties).map(([k, v]) =>
          `${k}${required.has(k) ? "" : "?"}: ${_type(v, defs)}`
        );
        return `{ ${fields.join("; ")} }`;
      }
      const extra = schema.additionalProperties;
      if (extra && typeof extra === "object") {
        return `Record<string, ${_type(extra as Schema, defs)}>`;
      }
      return "{}";
    }
    default:
      return Array.isArray(schema.type) ? schema.type.join(" | ") : String(schema.type);
  }
}

function _range(low: number | undefined, high: number | undefined, unit: string): string[] {
  if (low !== undefined && high !== undefined) return [`${unit} ${low}..${high}`];
  if (low !== undefined) return [`${unit} ≥ ${low}`];
  if (high !== undefined) return [`${unit} ≤ ${high}`];
  return [];
}

function _constraints(schema: Schema, defs: Record<string, Schema>): string[] {
  const out: string[] = [];
  const num = (key: string) => typeof schema[key] === "number" ? schema[key] as number : undefined;
  if (schema.type === "string") {
    out.push(..._range(num("minLength"), num("maxLength"), "length"));
    if (typeof schema.format === "string") out.push(`format ${schema.format}`);
  }
  if (schema.type === "integer" || schema.type === "number") {
    const max = num("maximum");
    if (num("exclusiveMinimum") !== undefined) out.push(`> ${num("exclusiveMinimum")}`);
    out.push(
      ..._range(num("minimum"), max === Number.MAX_SAFE_INTEGER ? undefined : max, "value")
        .map((s) => s.replace(/^value /, "")),
    );
  }
  if (schema.type === "array") {
    out.push(..._range(num("minItems"), num("maxItems"), "items"));
    const each = _constraints(_resolve(schema.items as Schema, defs), defs);
    if (each.length) out.push(`each: ${each.join(", ")}`);
  }
  if (schema.type === "object") {
    const keys = schema.propertyNames as Schema | undefined;
    if (keys) {
      const each = _constraints(keys, defs);
      if (each.length) out.push(`keys: ${each.join(", ")}`);
    }
  }
  return out;
}

function _sample(raw: Schema, defs: Record<string, Schema>): unknown {
  const schema = _resolve(raw, defs);
  if (schema.json) return null;
  if (Array.isArray(schema.enum)) return schema.enum[0];
  if (schema.const !== undefined) return schema.const;
  const options = (schema.anyOf ?? schema.oneOf) as Schema[] | undefined;
  if (options) return _sample(options[0], defs);
  switch (schema.type) {
    case "string": {
      if (schema.format === "uri") return "http://127.0.0.1:9/";
      return "x".repeat(Math.max(1, (schema.minLength as number | undefined) ?? 0));
    }
    case "integer":
    case "number": {
      if (typeof schema.exclusiveMinimum === "number") return schema.exclusiveMinimum + 1;
      return typeof schema.minimum === "number" ? schema.minimum : 1;
    }
    case "boolean":
      return false;
    case "null":
      return null;
    case "array": {
      const count = (schema.minItems as number | undefined) ?? 0;
      return Array.from({ length: count }, () => _sample(schema.items as Schema, defs));
    }
    case "object": {
      const properties = (schema.properties ?? {}) as Record<string, Schema>;
      const out: Record<string, unknown> = {};
      for (const key of (schema.required ?? []) as string[]) {
        out[key] = _sample(properties[key], defs);
      }
      return out;
    }
    default:
      return null;
  }
}

function _withTimeout<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), ms);
  });
  promise.catch(() => {});
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function _cell(text: string): string {
  return text.replaceAll("|", "\\|").replaceAll("\n", " ");
}

function _anchor(name: string): string {
  return name.replaceAll(".", "");
}

async function _format(markdown: string): Promise<string> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["fmt", "--config", join(ROOT, "deno.json"), "--ext=md", "-"],
    cwd: ROOT,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(markdown + "\n"));
  await writer.close();
  const { code, stdout, stderr } = await child.output();
  if (code !== 0) {
    throw new Error(
      `Cannot format docs/abi.md: deno fmt failed: ${
        new TextDecoder().decode(stderr).split("\n")[0]
      }`,
    );
  }
  return new TextDecoder().decode(stdout);
}

/** The first line where two texts differ, for a stale-document message. */
function _firstDifference(expected: string, actual: string): string {
  const a = expected.split("\n");
  const b = actual.split("\n");
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    if (a[i] !== b[i]) {
      return `line ${i + 1}: expected ${JSON.stringify(a[i] ?? "")}, found ${
        JSON.stringify(b[i] ?? "")
      }`;
    }
  }
  return "no difference";
}

if (import.meta.main) {
  const target = join(DOCS_DIR, "abi.md");
  const text = await renderAbiDoc();
  if (Deno.args.includes("--check")) {
    let current = "";
    try {
      current = await Deno.readTextFile(target);
    } catch {
      // A missing document is stale.
    }
    if (current !== text) {
      console.error(
        `docs/abi.md is stale (${_firstDifference(text, current)}): run ` +
          "deno run --allow-read --allow-write --allow-run docs/_gen_abi.ts",
      );
      Deno.exit(1);
    }
    console.log("docs/abi.md is up to date");
    Deno.exit(0);
  }
  await Deno.writeTextFile(target, text);
  console.log(`wrote ${target}`);
  Deno.exit(0);
}
