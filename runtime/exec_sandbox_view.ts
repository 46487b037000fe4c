/**
 * What a sandboxed command sees of the host's filesystem: exactly the paths
 * the calling process's `fs` capabilities name, as the filesystem provider
 * resolves and contains them, with the process's policy and the reserved
 * paths (the KV store) taken out. {@link sandboxView} computes it as an
 * ordered list of mounts; `exec_sandbox.ts` turns the list into bubblewrap
 * arguments.
 *
 * How a capability scope becomes mounts:
 *
 * - Only lasting capabilities count: a one-shot grant (`uses`) or a grant
 *   bound to one exact call authorizes a single syscall, never a view.
 * - A whole tree (`/ws/src/**`) binds the directory `/ws/src`. A literal
 *   path binds that file (a directory named literally grants the directory
 *   itself, not what it holds, and binds nothing). Any other glob
 *   (`/ws/src/**\/*.ts`) binds, one by one, the regular files that match
 *   when the command starts; files created later are not in the view.
 * - A path is bound only when it is its own real path and the provider
 *   accepts it (`FsProvider.resolve`): no path through a symlink, nothing
 *   in `/proc`, `/dev`, `/sys` or a reserved path.
 * - `read` binds read-only. A path is bound read-write where a capability
 *   grants `read` and one grants `write` (the OS cannot give write without
 *   read). `delete` alone binds nothing: inside the sandbox, removing a
 *   file needs `write`.
 * - Policy: a tree is bound only when, in every policy layer, no rule or an
 *   `allow` rule covering the whole tree decides its root; `deny` and `ask`
 *   rules for paths inside it are hidden (read) or bound read-only again
 *   (write), and so are the current matches of such a rule's glob.
 * - Reserved paths: the directory holding a reserved file is hidden when it
 *   lies inside a bound tree; when the bound tree is that directory itself,
 *   the tree is bound entry by entry without the reserved files (new files
 *   cannot then be created directly in it).
 * - A read-write tree that holds another mount (a hidden or read-only path)
 *   deeper than its own entries is bound entry by entry down to it, each
 *   directory on the way an empty read-only one: a command cannot rename
 *   the way to a protected path and so move what policy or the store's
 *   reservation protects out of their reach. (A mount point itself cannot
 *   be renamed, nor can the tree's root.)
 * - Each host bind carries the device and inode its source had when the
 *   view was made; the command checks them before it starts, so a path
 *   swapped for a symlink in between fails the command instead of binding
 *   what the symlink names.
 *
 * @module
 */

import { posix } from "node:path";
import type { Capability } from "../broker/capability.ts";
import { globCovers, matchGlob } from "../broker/glob.ts";
import { decide, type PolicyRule } from "../broker/policy.ts";
import { SyscallError } from "../broker/errors.ts";
import type { FsProvider } from "./fs_provider.ts";

/** Most mounts one view may hold. */
export const MAX_VIEW_MOUNTS = 4096;
/** Most directory entries examined to enumerate globs for one view. */
export const MAX_VIEW_WALK = 50_000;

/** One mount of a view, applied in order. */
export type SandboxMount =
  /** The host path bound at the same path. */
  | { kind: "bind"; path: string; writable: boolean }
  /** A symlink recreated with the host's target (resolved inside the view). */
  | { kind: "symlink"; path: string; target: string }
  /** An empty, read-only directory whose entries are bound one by one after it. */
  | { kind: "shell"; path: string }
  /** An empty file or directory in place of what the host has there. */
  | { kind: "hide"; path: string; dir: boolean };

/** The filesystem part of a command's sandbox. */
export interface SandboxView {
  /** Mounts in the order they are applied. */
  mounts: SandboxMount[];
  /**
   * What each bind that stays visible must be once mounted: its path and
   * the `dev:ino` its source had when the view was made.
   */
  identities: { path: string; id: string }[];
}

/** What {@link sandboxView} needs. */
export interface SandboxViewInput {
  /** The capabilities the process holds now. */
  capabilities: readonly Capability[];
  /** The process's policy. */
  policy: readonly PolicyRule[];
  /** The process's workspace: relative policy scopes match under it. */
  workspace: string;
  /** The filesystem provider whose containment the view follows. */
  fs: Pick<FsProvider, "resolve" | "reservedPaths">;
  /** The time capabilities are judged at. */
  now: number;
  /**
   * Paths the sandbox mounts itself, never bound from the host as part of a
   * bigger tree: a tree that holds one is bound entry by entry without it.
   */
  own: readonly string[];
}

type Right = "read" | "write";

interface Unit {
  path: string;
  tree: boolean;
}

/**
 * The view of a command run for a process (see the module documentation).
 *
 * @throws {SyscallError} `EINVAL` when the view would need more than
 * {@link MAX_VIEW_MOUNTS} mounts or enumerating globs more than
 * {@link MAX_VIEW_WALK} directory entries.
 *
 * @example
 * ```ts ignore
 * const view = await sandboxView({ capabilities, policy, workspace, fs, now: Date.now(), own: ["/tmp"] });
 * ```
 */
export async function sandboxView(input: SandboxViewInput): Promise<SandboxView> {
  const budget = { walk: MAX_VIEW_WALK };
  const lasting = input.capabilities.filter((cap) =>
    cap.resource === "fs" && cap.uses === undefined && cap.boundTo === undefined &&
    (cap.expiresAt === undefined || cap.expiresAt > input.now)
  );
  const units = async (right: Right): Promise<Unit[]> => {
    const out: Unit[] = [];
    for (const cap of lasting) {
      if (!cap.rights.includes(right) && !cap.rights.includes("*")) continue;
      out.push(...await _unitsOf(cap.scope, input.fs, budget));
    }
    return _filterByPolicy(_dedupe(out), right, input);
  };
  const readable = await units("read");
  const writable = _intersect(readable, await units("write"));

  const hides: SandboxMount[] = [];
  const readOnlyAgain: string[] = [];
  for (const unit of readable) {
    for (const path of _policyInside(unit, "read", input, budget)) {
      hides.push({ kind: "hide", path, dir: _isDir(path) });
    }
  }
  for (const unit of writable) readOnlyAgain.push(..._policyInside(unit, "write", input, budget));

  const reserved = input.fs.reservedPaths();
  const split: Split = new Map();
  const hiddenDirs = new Set<string>();
  const bound = [...readable, ...writable].filter((unit) => unit.tree).map((unit) => unit.path);
  for (const path of [...bound, ...readOnlyAgain]) {
    for (const form of reserved) {
      if (form === path || !_within(form, path)) continue;
      const dir = posix.dirname(form);
      if (dir === path) _mark(split, dir, posix.basename(form), "skip");
      else hiddenDirs.add(dir);
    }
    for (const own of input.own) {
      if (own === path || !_within(own, path)) continue;
      // Bind the tree around the sandbox's own path, entry by entry, down to it.
      let dir = own;
      while (dir !== path) {
        _mark(split, posix.dirname(dir), posix.basename(dir), "skip");
        dir = posix.dirname(dir);
      }
    }
  }

  // Inside a read-write tree, the way down to any other mount is bound entry by entry.
  // (A mount right below the tree's root needs nothing: neither can be renamed.)
  const rwTrees = writable.filter((unit) => unit.tree).map((unit) => unit.path);
  const nested = [...hides.map((h) => h.path), ...readOnlyAgain, ...hiddenDirs];
  for (const root of rwTrees) {
    for (const path of nested) {
      if (!_within(path, root) || posix.dirname(path) === root || path === root) continue;
      let dir = path;
      while (dir !== root) {
        _mark(split, posix.dirname(dir), posix.basename(dir), dir === path ? "skip" : "descend");
        dir = posix.dirname(dir);
      }
    }
  }

  const mounts: SandboxMount[] = [];
  const ids = new Map<string, string>();
  const binds = _ordered([
    ...readable.map((unit) => ({ ...unit, writable: _covered(unit, writable) })),
    ...writable.map((unit) => ({ ...unit, writable: true })),
  ]);
  for (const unit of binds) _bindHost(unit.path, unit.writable, unit.tree, split, mounts, ids);
  for (const path of _dedupePaths(readOnlyAgain).sort(_byDepth)) {
    _bindHost(path, false, _isDir(path), split, mounts, ids);
  }
  mounts.push(...hides.sort((a, b) => _byDepth(a.path, b.path)));
  for (const dir of [...hiddenDirs].sort(_byDepth)) {
    mounts.push({ kind: "hide", path: dir, dir: true });
  }
  if (mounts.length > MAX_VIEW_MOUNTS) {
    throw new SyscallError(
      "EINVAL",
      `Cannot build the command's view: it needs ${mounts.length} mounts, more than ` +
        `${MAX_VIEW_MOUNTS} (grant whole trees, dir/**, instead of globs that match many files)`,
    );
  }
  return { mounts, identities: _identities(mounts, ids) };
}

/**
 * The binds still visible after every mount is applied, with the identity
 * their source had: a later mount at or above a path covers what was there.
 */
function _identities(
  mounts: readonly SandboxMount[],
  ids: ReadonlyMap<string, string>,
): { path: string; id: string }[] {
  const visible = new Map<string, string>();
  for (const mount of mounts) {
    for (const path of [...visible.keys()]) {
      if (_within(path, mount.path)) visible.delete(path);
    }
    if (mount.kind === "bind") visible.set(mount.path, ids.get(mount.path)!);
  }
  return [...visible].map(([path, id]) => ({ path, id }));
}

/** The paths one capability scope binds. */
async function _unitsOf(
  scope: string,
  fs: SandboxViewInput["fs"],
  budget: { walk: number },
): Promise<Unit[]> {
  if (!scope.startsWith("/")) return [];
  const star = scope.indexOf("*");
  if (star < 0) {
    const real = await _ownRealPath(scope, fs);
    return real !== undefined && _isFile(real) ? [{ path: real, tree: false }] : [];
  }
  const tree = /^(.*)\/\*\*$/.exec(scope);
  if (tree && !tree[1].includes("*")) {
    const real = await _ownRealPath(tree[1] || "/", fs);
    if (real === undefined) return [];
    if (_isDir(real)) return [{ path: real, tree: true }];
    return _isFile(real) ? [{ path: real, tree: false }] : [];
  }
  const base = scope.slice(0, scope.lastIndexOf("/", star)) || "/";
  const root = await _ownRealPath(base, fs);
  if (root === undefined || !_isDir(root)) return [];
  const out: Unit[] = [];
  for (const entry of _walk(root, budget, scope)) {
    if (!entry.isFile || !matchGlob(scope, entry.path)) continue;
    if (await _ownRealPath(entry.path, fs) === entry.path) {
      out.push({ path: entry.path, tree: false });
    }
  }
  return out;
}

/** `path` when the provider resolves it to itself; undefined when it refuses it or moves it. */
async function _ownRealPath(
  path: string,
  fs: SandboxViewInput["fs"],
): Promise<string | undefined> {
  try {
    return (await fs.resolve("/", path)) === path ? path : undefined;
  } catch {
    return undefined;
  }
}

interface WalkEntry {
  path: string;
  isFile: boolean;
  isDirectory: boolean;
}

/** Every entry below `root`, symlinks not followed, within the shared budget. */
function* _walk(root: string, budget: { walk: number }, what: string): Generator<WalkEntry> {
  const stack = [root];
  while (stack.length) {
    const dir = stack.pop()!;
    let entries: Deno.DirEntry[];
    try {
      entries = [...Deno.readDirSync(dir)];
    } catch {
      continue;
    }
    for (const entry of entries) {
      if (--budget.walk < 0) {
        throw new SyscallError(
          "EINVAL",
          `Cannot build the command's view: enumerating "${what}" examines more than ` +
            `${MAX_VIEW_WALK} entries (grant whole trees, dir/**, instead)`,
        );
      }
      const path = dir === "/" ? `/${entry.name}` : `${dir}/${entry.name}`;
      yield { path, isFile: entry.isFile, isDirectory: entry.isDirectory };
      if (entry.isDirectory) stack.push(path);
    }
  }
}

/** Units the policy lets the process see (read) or change (write) as a whole. */
function _filterByPolicy(units: Unit[], right: Right, input: SandboxViewInput): Unit[] {
  const layers = new Map<number, PolicyRule[]>();
  for (const rule of input.policy) {
    const layer = rule.layer ?? 0;
    layers.set(layer, [...layers.get(layer) ?? [], rule]);
  }
  return units.filter((unit) => {
    const op = { resource: "fs" as const, right, target: unit.path };
    for (const rules of layers.values()) {
      const rule = decide(rules, op, { workspace: input.workspace });
      if (rule === undefined) continue;
      if (rule.decision !== "allow") return false;
      // An allow that decides a tree's root must decide all of it.
      if (
        unit.tree && !_footprints(rule, input.workspace).some((f) => globCovers(f, _all(unit.path)))
      ) {
        return false;
      }
    }
    return true;
  });
}

/**
 * Paths inside a bound tree that a `deny` or `ask` rule for `right` names:
 * the literal path or tree a rule names, or what its glob matches now.
 */
function _policyInside(
  unit: Unit,
  right: Right,
  input: SandboxViewInput,
  budget: { walk: number },
): string[] {
  if (!unit.tree) return [];
  const out = new Set<string>();
  let listing: WalkEntry[] | undefined;
  for (const rule of input.policy) {
    if (rule.decision === "allow") continue;
    if (rule.resource !== "fs" && rule.resource !== "*") continue;
    if (!rule.rights.includes(right) && !rule.rights.includes("*")) continue;
    for (const footprint of _footprints(rule, input.workspace)) {
      // A rule over the whole tree lost at its root (see _filterByPolicy), so everywhere in it.
      if (globCovers(footprint, _all(unit.path))) continue;
      const star = footprint.indexOf("*");
      const tree = /^(.*)\/\*\*$/.exec(footprint);
      const literal = star < 0 ? footprint : tree && !tree[1].includes("*") ? tree[1] : undefined;
      if (literal !== undefined) {
        if (literal !== unit.path && _within(literal, unit.path) && _exists(literal)) {
          out.add(literal);
        }
        continue;
      }
      const base = footprint.slice(0, footprint.lastIndexOf("/", star)) || "/";
      if (!_within(base, unit.path) && !_within(unit.path, base)) continue;
      listing ??= [..._walk(unit.path, budget, footprint)];
      for (const entry of listing) {
        if (matchGlob(footprint, entry.path)) out.add(entry.path);
      }
    }
  }
  // A hidden directory hides what is inside it.
  const paths = [...out].sort(_byDepth);
  return paths.filter((path) => !paths.some((other) => other !== path && _within(path, other)));
}

/** The absolute globs a rule's scope matches (a relative scope also under the workspace). */
function _footprints(rule: PolicyRule, workspace: string): string[] {
  const scope = rule.scope;
  if (scope.startsWith("/")) return [scope];
  const out = [posix.join(posix.resolve("/", workspace), scope)];
  // A relative scope that starts with a wildcard also matches absolute targets as written.
  if (scope.startsWith("*")) out.push(scope.startsWith("**") ? scope : `/${scope}`);
  return out;
}

/** How a bound tree treats one of its entries: left out, or bound entry by entry in turn. */
type Split = Map<string, Map<string, "skip" | "descend">>;

/**
 * Binds the host's `path`, entry by entry when some of its entries must stay
 * out or be split in turn, and records each bind's source identity. A path
 * that is no longer its own kind (a symlink now) is left out.
 */
function _bindHost(
  path: string,
  writable: boolean,
  tree: boolean,
  split: Split,
  mounts: SandboxMount[],
  ids: Map<string, string>,
): void {
  const info = _lstat(path);
  if (!info || info.isSymlink || !(info.isDirectory || info.isFile)) return;
  const entries = tree && info.isDirectory ? split.get(path) : undefined;
  if (!entries) {
    mounts.push({ kind: "bind", path, writable });
    ids.set(path, `${info.dev}:${info.ino}`);
    return;
  }
  if (path !== "/") mounts.push({ kind: "shell", path });
  let listing: Deno.DirEntry[];
  try {
    listing = [...Deno.readDirSync(path)].sort((a, b) => (a.name < b.name ? -1 : 1));
  } catch {
    return;
  }
  for (const entry of listing) {
    const how = entries.get(entry.name);
    if (how === "skip") continue;
    const child = path === "/" ? `/${entry.name}` : `${path}/${entry.name}`;
    if (entry.isSymlink) {
      if (how === "descend") continue;
      try {
        mounts.push({ kind: "symlink", path: child, target: Deno.readLinkSync(child) });
      } catch {
        // Gone since the listing.
      }
    } else {
      _bindHost(child, writable, entry.isDirectory, split, mounts, ids);
    }
  }
}

function _mark(split: Split, dir: string, name: string, how: "skip" | "descend"): void {
  const entries = split.get(dir) ?? new Map<string, "skip" | "descend">();
  if (entries.get(name) !== "skip") entries.set(name, how);
  split.set(dir, entries);
}

/** What both unit lists grant: the deeper of nested trees, files inside trees, equal files. */
function _intersect(a: readonly Unit[], b: readonly Unit[]): Unit[] {
  const out: Unit[] = [];
  for (const x of a) {
    for (const y of b) {
      if (x.tree && y.tree) {
        if (_within(x.path, y.path)) out.push(x);
        else if (_within(y.path, x.path)) out.push(y);
      } else if (x.tree) {
        if (_within(y.path, x.path)) out.push(y);
      } else if (y.tree) {
        if (_within(x.path, y.path)) out.push(x);
      } else if (x.path === y.path) out.push(x);
    }
  }
  return _dedupe(out);
}

/** True when `unit` lies inside (or is) one of `units`. */
function _covered(unit: Unit, units: readonly Unit[]): boolean {
  return units.some((other) =>
    other.tree ? _within(unit.path, other.path) : !unit.tree && other.path === unit.path
  );
}

/**
 * Units parents first (read-only before read-write at the same path); a
 * unit inside a bound tree of the same mode adds nothing and is dropped.
 */
function _ordered(units: (Unit & { writable: boolean })[]): (Unit & { writable: boolean })[] {
  const sorted = _dedupeBy(units, (u) => `${u.path}\0${u.tree}\0${u.writable}`)
    .sort((a, b) => _byDepth(a.path, b.path) || Number(a.writable) - Number(b.writable));
  const out: (Unit & { writable: boolean })[] = [];
  for (const unit of sorted) {
    let parent: (Unit & { writable: boolean }) | undefined;
    for (const placed of out) {
      if (placed.tree && _within(unit.path, placed.path)) {
        if (!parent || placed.path.length >= parent.path.length) parent = placed;
      }
    }
    if (parent?.writable === unit.writable) continue;
    out.push(unit);
  }
  return out;
}

function _dedupe(units: Unit[]): Unit[] {
  return _dedupeBy(units, (u) => `${u.path}\0${u.tree}`);
}

function _dedupeBy<T>(items: T[], key: (item: T) => string): T[] {
  const seen = new Map<string, T>();
  for (const item of items) if (!seen.has(key(item))) seen.set(key(item), item);
  return [...seen.values()];
}

function _dedupePaths(paths: string[]): string[] {
  const sorted = [...new Set(paths)].sort(_byDepth);
  return sorted.filter((path) => !sorted.some((other) => other !== path && _within(path, other)));
}

function _byDepth(a: string, b: string): number {
  const depth = (p: string) => (p === "/" ? 0 : p.split("/").length - 1);
  return depth(a) - depth(b) || (a < b ? -1 : a > b ? 1 : 0);
}

function _all(path: string): string {
  return path === "/" ? "/**" : `${path}/**`;
}

function _within(path: string, root: string): boolean {
  return root === "/" || path === root || path.startsWith(`${root}/`);
}

function _lstat(path: string): Deno.FileInfo | undefined {
  try {
    return Deno.lstatSync(path);
  } catch {
    return undefined;
  }
}

function _isFile(path: string): boolean {
  return _lstat(path)?.isFile === true;
}

function _isDir(path: string): boolean {
  return _lstat(path)?.isDirectory === true;
}

function _exists(path: string): boolean {
  return _lstat(path) !== undefined;
}
