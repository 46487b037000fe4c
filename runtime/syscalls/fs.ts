/**
 * The `fs.*` syscalls: each resolves its path(s) through the filesystem
 * provider's containment, names the right it needs on the real path, and
 * runs the provider operation.
 *
 * A call that moves or removes a whole directory acts on every entry below
 * it, so it needs its rights on each of them: the handler lists the tree and
 * names one operation per entry (and per destination), and policy decides
 * each one, so a rule on anything inside the tree applies.
 *
 * @module
 */

import type { CallContext, HandlerTable } from "../../broker/broker.ts";
import type { Operation } from "../../broker/capability.ts";
import { SyscallError } from "../../broker/errors.ts";
import { decide } from "../../broker/policy.ts";
import type { FsProvider } from "../fs_provider.ts";
import type { ProcessTable } from "../process_table.ts";

/** Most entries below a directory that a rename or recursive remove checks one by one. */
export const MAX_TREE_ENTRIES = 10_000;

/** What the `fs` handlers need from the kernel. */
export interface FsKernel {
  /** The filesystem provider. */
  readonly fs: FsProvider;
  /** The process table, for the caller's working directory. */
  readonly processes: Pick<ProcessTable, "require">;
}

/** Handlers of the `fs` namespace. */
export function fsHandlers(kernel: FsKernel): HandlerTable {
  const fs = kernel.fs;
  const at = async (ctx: CallContext, path: string) =>
    await fs.resolve(ctx.cwd ?? (await kernel.processes.require(ctx.pid)).cwd, path);
  const op = (right: string) => (target: string): Operation => ({
    resource: "fs",
    right,
    target,
  });
  const read = op("read");
  const write = op("write");
  const remove = op("delete");
  return {
    "fs.read": async (ctx, args) => {
      const path = await at(ctx, args.path);
      return {
        ops: [read(path)],
        effect: "none",
        run: () => fs.read(path, { maxBytes: args.maxBytes }),
      };
    },
    "fs.list": async (ctx, args) => {
      const path = await at(ctx, args.path);
      return {
        ops: [read(path)],
        effect: "none",
        // An entry that policy denies reading is none of the caller's business: not even its name.
        run: async () =>
          (await fs.list(path)).filter((entry) =>
            decide(ctx.policy, read(_join(path, entry.name)), { workspace: ctx.workspace })
              ?.decision !== "deny"
          ),
      };
    },
    "fs.stat": async (ctx, args) => {
      const path = await at(ctx, args.path);
      return { ops: [read(path)], effect: "none", run: () => fs.stat(path) };
    },
    "fs.write": async (ctx, args) => {
      const path = await at(ctx, args.path);
      return {
        ops: [write(path)],
        effect: "idempotent",
        run: async () => ({ bytes: await fs.write(path, args.content) }),
      };
    },
    "fs.append": async (ctx, args) => {
      const path = await at(ctx, args.path);
      return {
        ops: [write(path)],
        effect: "effect",
        run: async () => ({ bytes: await fs.append(path, args.content) }),
      };
    },
    "fs.mkdir": async (ctx, args) => {
      const path = await at(ctx, args.path);
      return {
        ops: [write(path)],
        effect: "idempotent",
        run: () => fs.mkdir(path, { recursive: args.recursive }),
      };
    },
    "fs.remove": async (ctx, args) => {
      const path = await at(ctx, args.path);
      const tree = args.recursive ? await _treeBelow(fs, path, "remove") : _EMPTY_TREE;
      return {
        ops: [path, ...tree.entries.map((rel) => _join(path, rel))].map(remove),
        effect: "idempotent",
        run: () => {
          if (tree.error) throw tree.error;
          return fs.remove(path, { recursive: args.recursive });
        },
      };
    },
    // Moving data is reading it at its old place and writing it at the new
    // one: read and delete on the source, write on the destination, for the
    // path itself and every entry below it.
    "fs.rename": async (ctx, args) => {
      const from = await at(ctx, args.from);
      const to = await at(ctx, args.to);
      const tree = await _treeBelow(fs, from, "rename");
      const ops: Operation[] = [read(from), remove(from), write(to)];
      for (const rel of tree.entries) {
        ops.push(read(_join(from, rel)), remove(_join(from, rel)), write(_join(to, rel)));
      }
      return {
        ops,
        effect: "effect",
        run: () => {
          if (tree.error) throw tree.error;
          return fs.rename(from, to);
        },
      };
    },
  };
}

/**
 * The entries below a directory, as paths relative to it (symlinks are
 * entries, never followed), or none for anything else. A listing that fails
 * or holds more than {@link MAX_TREE_ENTRIES} entries is kept as an error
 * that the call throws once it is authorized: before that, a failure must
 * not tell the caller anything about a path it may not touch, and the
 * operations named so far still have to pass.
 */
async function _treeBelow(
  fs: FsProvider,
  root: string,
  action: string,
): Promise<{ entries: string[]; error?: SyscallError }> {
  const entries: string[] = [];
  try {
    if ((await fs.stat(root)).kind !== "dir") return { entries };
  } catch {
    return { entries }; // the call itself reports what is wrong with the path
  }
  const pending = [""];
  try {
    while (pending.length) {
      const dir = pending.pop()!;
      for (const entry of await fs.list(dir === "" ? root : _join(root, dir))) {
        const rel = dir === "" ? entry.name : `${dir}/${entry.name}`;
        if (entries.length === MAX_TREE_ENTRIES) {
          throw new SyscallError(
            "EPERM",
            `Cannot ${action} "${root}": it holds more than ${MAX_TREE_ENTRIES} entries to check one by one`,
          );
        }
        entries.push(rel);
        if (entry.kind === "dir") pending.push(rel);
      }
    }
  } catch (error) {
    const failure = error instanceof SyscallError ? error : new SyscallError(
      "EPERM",
      `Cannot ${action} "${root}": its entries could not be listed to check them`,
    );
    // Fail closed: the entries listed so far are still checked, and the call fails.
    return { entries, error: failure };
  }
  return { entries };
}

const _EMPTY_TREE: { entries: string[]; error?: SyscallError } = { entries: [] };

function _join(dir: string, rel: string): string {
  return dir === "/" ? `/${rel}` : `${dir}/${rel}`;
}
