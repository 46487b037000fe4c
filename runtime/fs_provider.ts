/**
 * The filesystem provider: every `fs.*` syscall ends here. The host runs
 * with broad `--allow-read --allow-write`, and Deno checks where a symlink
 * sits, not where it points, so this module is the containment:
 *
 * - {@link LocalFs.resolve} turns a program's path into the real absolute
 *   host path it designates (lexical `..` first, then the real path of the
 *   deepest existing ancestor, following even dangling symlinks), and
 *   refuses NUL bytes, `/proc`, `/dev`, `/sys` and the reserved paths (the
 *   KV store, its SQLite side files, audit exports).
 * - The broker checks capabilities against that real path.
 * - Each operation re-checks, right before and after acting, that the path
 *   is still its own real path, so a symlink swapped in after `resolve`
 *   fails the call with `EPERM` instead of redirecting it.
 *
 * The path checks (`lstat`, `realpath`, `readlink`) are synchronous calls:
 * on a local filesystem each takes microseconds, less than the hop to
 * Deno's async I/O threads, and a syscall makes several of them.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { LocalFs } from "./fs_provider.ts";
 * const dir = await Deno.realPath(await Deno.makeTempDir());
 * try {
 *   const fs = new LocalFs();
 *   const path = await fs.resolve(dir, "notes/../hello.txt");
 *   await fs.write(path, "hi");
 *   assert((await fs.read(path)) === "hi");
 * } finally {
 *   await Deno.remove(dir, { recursive: true });
 * }
 * ```
 *
 * @module
 */

import { posix } from "node:path";
import { type ErrorCode, SyscallError, toSyscallError } from "../broker/errors.ts";

const { basename, dirname, isAbsolute, join, normalize } = posix;

/** The default largest file, in bytes, that {@link FsProvider.read} returns. */
export const DEFAULT_MAX_READ_BYTES: number = 4 * 1024 * 1024;

/** The longest path, in UTF-8 bytes, that {@link FsProvider.resolve} accepts. */
export const MAX_PATH_BYTES = 4096;

const FORBIDDEN_ROOTS = ["/proc", "/dev", "/sys"] as const;
const SQLITE_SIDE_SUFFIXES = ["", "-wal", "-shm", "-journal"] as const;
const MAX_LINK_HOPS = 40;
const ENCODER = new TextEncoder();

/** One entry of a directory listing. */
export interface FsEntry {
  /** The entry's name inside its directory. */
  name: string;
  /** What the entry is itself (a symlink is not followed). */
  kind: "file" | "dir" | "symlink" | "other";
  /** The size in bytes of a file; 0 for every other kind. */
  size: number;
}

/** What {@link FsProvider.stat} reports about one path. */
export interface FsStat {
  /** The real absolute path. */
  path: string;
  /** What the path is. */
  kind: FsEntry["kind"];
  /** The size in bytes of a file; 0 for every other kind. */
  size: number;
  /** The last modification time, when the host reports one. */
  mtimeMs: number | null;
}

/**
 * The filesystem operations the broker runs. Every operation takes a path
 * that {@link FsProvider.resolve} returned; failures throw `SyscallError`.
 */
export interface FsProvider {
  /** Turns a program-supplied path into the real absolute host path. */
  resolve(cwd: string, path: string): Promise<string>;
  /** Reads a file as UTF-8 text; larger than `maxBytes` (default 4 MiB) fails with `EINVAL`. */
  read(path: string, options?: { maxBytes?: number }): Promise<string>;
  /** Creates or truncates a file and writes `content`; returns the bytes written. */
  write(path: string, content: string): Promise<number>;
  /** Appends `content` to a file, creating it when missing; returns the bytes written. */
  append(path: string, content: string): Promise<number>;
  /** Lists a directory, sorted by name. */
  list(path: string): Promise<FsEntry[]>;
  /** Describes one path. */
  stat(path: string): Promise<FsStat>;
  /** Creates a directory, and its missing parents with `recursive`. */
  mkdir(path: string, options?: { recursive?: boolean }): Promise<void>;
  /** Removes a file or an empty directory, or a whole tree with `recursive`. */
  remove(path: string, options?: { recursive?: boolean }): Promise<void>;
  /** Moves `from` to `to`, replacing a file at `to`. */
  rename(from: string, to: string): Promise<void>;
  /**
   * Every absolute path no call may reach (the KV store and its side files,
   * as given and as real paths), so that a command sandbox can keep them out
   * of its view too.
   */
  reservedPaths(): string[];
}

/** Options for {@link LocalFs}. */
export interface LocalFsOptions {
  /**
   * Absolute paths no call may reach, nor remove or move by way of an
   * ancestor: the KV file (its `-wal`, `-shm` and `-journal` side files are
   * refused with it), its directory, audit exports.
   */
  reserved?: readonly string[];
}

/**
 * The filesystem provider over the local host filesystem, with the
 * containment described in the module documentation.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { LocalFs } from "./fs_provider.ts";
 * const dir = await Deno.realPath(await Deno.makeTempDir());
 * try {
 *   const fs = new LocalFs({ reserved: [`${dir}/libos.db`] });
 *   try {
 *     await fs.resolve(dir, "libos.db-wal");
 *   } catch (error) {
 *     assert((error as { code: string }).code === "EPERM");
 *   }
 * } finally {
 *   await Deno.remove(dir, { recursive: true });
 * }
 * ```
 */
export class LocalFs implements FsProvider {
  #reserved: readonly string[];

  /** Creates a provider; every `reserved` path must be absolute. */
  constructor(options: LocalFsOptions = {}) {
    const reserved = options.reserved ?? [];
    for (const path of reserved) {
      if (typeof path !== "string" || !isAbsolute(path) || path.includes("\0")) {
        throw new TypeError(
          `Cannot create the filesystem provider: reserved path ${quote(path)} is not absolute`,
        );
      }
    }
    this.#reserved = reserved.map(trimSlash);
  }

  /**
   * Joins a relative `path` to `cwd`, normalizes it lexically, and returns
   * the real path it designates: the real path of its deepest existing
   * ancestor followed by the part that does not exist yet. A symlink on the
   * way, dangling or not, resolves to its target.
   *
   * @throws {SyscallError} `EINVAL` for an empty path, a NUL byte or a path
   * longer than {@link MAX_PATH_BYTES}; `EPERM` for a path inside `/proc`,
   * `/dev`, `/sys` or a reserved path.
   */
  // deno-lint-ignore require-await -- the FsProvider interface is async; the checks are sync on purpose
  async resolve(cwd: string, path: string): Promise<string> {
    const subject = `resolve path ${quote(path)}`;
    if (typeof path !== "string" || path.length === 0) {
      throw fail("EINVAL", subject, "the path is empty");
    }
    if (path.includes("\0")) throw fail("EINVAL", subject, "contains a NUL byte");
    if (ENCODER.encode(path).length > MAX_PATH_BYTES) {
      throw fail("EINVAL", subject, `longer than ${MAX_PATH_BYTES} bytes`);
    }
    if (
      !isAbsolute(path) &&
      (typeof cwd !== "string" || !isAbsolute(cwd) || cwd.includes("\0"))
    ) {
      throw fail("EINVAL", subject, `the working directory ${quote(cwd)} is not absolute`);
    }
    const lexical = trimSlash(normalize(isAbsolute(path) ? path : join(cwd, path)));
    const access = `access ${quote(path)}`;
    const reserved = this.#reservedForms(); // once per call: each form costs an lstat and a realpath
    this.#refuseReserved(lexical, access, reserved);
    let real: string;
    try {
      real = realpathLoose(lexical);
    } catch (error) {
      throw mapFsError(error, subject);
    }
    this.#refuseReserved(real, access, reserved);
    if (ENCODER.encode(real).length > MAX_PATH_BYTES) {
      throw fail("EINVAL", subject, `resolves to a path longer than ${MAX_PATH_BYTES} bytes`);
    }
    return real;
  }

  /**
   * Reads a regular file as UTF-8 text.
   *
   * @throws {SyscallError} `EINVAL` when the file is larger than `maxBytes`,
   * is not a regular file, or is not valid UTF-8.
   */
  async read(path: string, options: { maxBytes?: number } = {}): Promise<string> {
    const subject = `read ${quote(path)}`;
    const maxBytes = options.maxBytes ?? DEFAULT_MAX_READ_BYTES;
    if (!Number.isSafeInteger(maxBytes) || maxBytes < 0) {
      throw fail("EINVAL", subject, `maxBytes must be a non-negative integer, got ${maxBytes}`);
    }
    this.#confirm(path, subject);
    const { file, info } = await openVerified(path, subject, "read");
    try {
      if (info.size > maxBytes) {
        throw fail("EINVAL", subject, tooLarge(info.size, maxBytes));
      }
      const bytes = await readCapped(file, maxBytes, subject);
      try {
        return new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes);
      } catch {
        throw fail("EINVAL", subject, "the file is not valid UTF-8 text");
      }
    } finally {
      file.close();
    }
  }

  /** Creates or truncates a file and writes `content` as UTF-8; returns the bytes written. */
  async write(path: string, content: string): Promise<number> {
    const subject = `write ${quote(path)}`;
    this.#confirm(path, subject);
    const { file } = await openVerified(path, subject, "write");
    try {
      const bytes = ENCODER.encode(content);
      await file.truncate(0);
      await writeAll(file, bytes, subject);
      return bytes.length;
    } finally {
      file.close();
    }
  }

  /** Appends `content` as UTF-8, creating the file when missing; returns the bytes written. */
  async append(path: string, content: string): Promise<number> {
    const subject = `append to ${quote(path)}`;
    this.#confirm(path, subject);
    const { file } = await openVerified(path, subject, "append");
    try {
      const bytes = ENCODER.encode(content);
      await writeAll(file, bytes, subject);
      return bytes.length;
    } finally {
      file.close();
    }
  }

  /** Lists a directory, sorted by name (code unit order); symlinks are not followed. */
  async list(path: string): Promise<FsEntry[]> {
    const subject = `list ${quote(path)}`;
    this.#confirm(path, subject);
    const entries: FsEntry[] = [];
    try {
      for await (const entry of Deno.readDir(path)) {
        const kind = kindOf(entry);
        let size = 0;
        if (kind === "file") {
          try {
            size = (await Deno.lstat(join(path, entry.name))).size;
          } catch (error) {
            if (error instanceof Deno.errors.NotFound) continue;
            throw error;
          }
        }
        entries.push({ name: entry.name, kind, size });
      }
    } catch (error) {
      throw mapFsError(error, subject);
    }
    this.#confirm(path, subject);
    return entries.sort((a, b) => a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
  }

  /** Describes one path without following a symlink. */
  // deno-lint-ignore require-await -- the FsProvider interface is async; the checks are sync on purpose
  async stat(path: string): Promise<FsStat> {
    const subject = `stat ${quote(path)}`;
    this.#confirm(path, subject);
    let info: Deno.FileInfo;
    try {
      info = Deno.lstatSync(path);
    } catch (error) {
      throw mapFsError(error, subject);
    }
    this.#confirm(path, subject);
    const kind = kindOf(info);
    return {
      path,
      kind,
      size: kind === "file" ? info.size : 0,
      mtimeMs: info.mtime?.getTime() ?? null,
    };
  }

  /** Creates a directory; `recursive` creates missing parents and accepts an existing one. */
  async mkdir(path: string, options: { recursive?: boolean } = {}): Promise<void> {
    const subject = `create directory ${quote(path)}`;
    this.#confirm(path, subject);
    try {
      await Deno.mkdir(path, { recursive: options.recursive ?? false });
    } catch (error) {
      throw mapFsError(error, subject);
    }
    this.#confirm(path, subject);
  }

  /**
   * Removes a file, a symlink or an empty directory; a directory with
   * content needs `recursive`.
   *
   * @throws {SyscallError} `EINVAL` for a non-empty directory without
   * `recursive`; `EPERM` when the path contains a reserved path.
   */
  async remove(path: string, options: { recursive?: boolean } = {}): Promise<void> {
    const subject = `remove ${quote(path)}`;
    this.#confirm(path, subject);
    this.#refuseReservedInside(path, subject);
    try {
      await Deno.remove(path, { recursive: options.recursive ?? false });
    } catch (error) {
      throw mapFsError(error, subject);
    }
  }

  /**
   * Moves `from` to `to`.
   *
   * @throws {SyscallError} `EPERM` when either path is, is inside, or
   * contains a reserved path.
   */
  async rename(from: string, to: string): Promise<void> {
    const subject = `rename ${quote(from)} to ${quote(to)}`;
    this.#confirm(from, subject);
    this.#confirm(to, subject);
    this.#refuseReservedInside(from, subject);
    this.#refuseReservedInside(to, subject);
    try {
      await Deno.rename(from, to);
    } catch (error) {
      throw mapFsError(error, subject);
    }
  }

  /** Every reserved path as given and as its real path, each with its SQLite side files. */
  reservedPaths(): string[] {
    return this.#reservedForms();
  }

  /**
   * Checks that `path` is a resolved path outside every reserved path and
   * is still its own real path.
   */
  #confirm(path: string, subject: string): void {
    if (
      typeof path !== "string" || !isAbsolute(path) || path.includes("\0") ||
      trimSlash(normalize(path)) !== path
    ) {
      throw fail("EINVAL", subject, "not a resolved absolute path");
    }
    this.#refuseReserved(path, subject);
    let real: string;
    try {
      real = realpathLoose(path);
    } catch (error) {
      throw mapFsError(error, subject);
    }
    if (real !== path) throw changed(subject);
  }

  /** Refuses a path inside `/proc`, `/dev`, `/sys` or a reserved path. */
  #refuseReserved(path: string, subject: string, reserved = this.#reservedForms()): void {
    const roots = [...FORBIDDEN_ROOTS, ...reserved];
    if (roots.some((root) => isWithin(path, root))) {
      throw fail("EPERM", subject, "inside a reserved path");
    }
  }

  /** Refuses a path that is an ancestor of a reserved path. */
  #refuseReservedInside(path: string, subject: string): void {
    const forms = this.#reservedForms();
    if (forms.some((form) => isWithin(form, path))) {
      throw fail("EPERM", subject, "it contains a reserved path");
    }
  }

  /**
   * Every reserved path as given and as its real path, each with its SQLite
   * side files. Recomputed per call, so a reserved file created or moved
   * after construction is still covered.
   */
  #reservedForms(): string[] {
    const forms = new Set<string>();
    for (const path of this.#reserved) {
      const variants = [path];
      try {
        variants.push(realpathLoose(path));
      } catch {
        // The lexical form is still refused when the real one is unknowable.
      }
      for (const variant of variants) {
        for (const suffix of SQLITE_SIDE_SUFFIXES) forms.add(variant + suffix);
      }
    }
    return [...forms];
  }
}

/**
 * The real path of an absolute, lexically normal `path` that may not exist:
 * the real path of its deepest existing ancestor plus the rest. A dangling
 * symlink is followed to where its target would be.
 */
function realpathLoose(path: string, hops = 0): string {
  let existing = path;
  const rest: string[] = [];
  while (true) {
    let info: Deno.FileInfo | undefined;
    try {
      info = Deno.lstatSync(existing);
    } catch (error) {
      if (!isMissing(error)) throw error;
    }
    if (info !== undefined) {
      try {
        return join(Deno.realPathSync(existing), ...rest);
      } catch (error) {
        if (!info.isSymlink || !isMissing(error)) throw error;
      }
      if (hops >= MAX_LINK_HOPS) {
        throw new Deno.errors.FilesystemLoop(`Too many symbolic links at "${existing}"`);
      }
      const target = Deno.readLinkSync(existing);
      const parent = Deno.realPathSync(dirname(existing));
      const next = trimSlash(normalize(isAbsolute(target) ? target : join(parent, target)));
      return join(realpathLoose(next, hops + 1), ...rest);
    }
    if (existing === "/") return join("/", ...rest);
    rest.unshift(basename(existing));
    existing = dirname(existing);
  }
}

type OpenMode = "read" | "write" | "append";

/**
 * Opens a regular file without following a symlink swapped in at `path`,
 * then proves the open file is the one at `path` now: same device and inode,
 * and `path` still its own real path. Write modes create a missing file
 * exclusively, which never follows a symlink.
 */
async function openVerified(
  path: string,
  subject: string,
  mode: OpenMode,
): Promise<{ file: Deno.FsFile; info: Deno.FileInfo }> {
  let before: Deno.FileInfo | undefined;
  try {
    before = Deno.lstatSync(path);
  } catch (error) {
    if (mode === "read" || !(error instanceof Deno.errors.NotFound)) {
      throw mapFsError(error, subject);
    }
  }
  if (before?.isSymlink) throw changed(subject);
  if (before !== undefined && !before.isFile) {
    throw fail("EINVAL", subject, before.isDirectory ? "is a directory" : "not a regular file");
  }
  const options: Deno.OpenOptions = mode === "read"
    ? { read: true }
    : { write: true, append: mode === "append", createNew: before === undefined };
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, options);
  } catch (error) {
    if (before === undefined && error instanceof Deno.errors.AlreadyExists) {
      throw changed(subject);
    }
    throw mapFsError(error, subject);
  }
  try {
    const info = await file.stat();
    const now = Deno.lstatSync(path);
    const real = Deno.realPathSync(path);
    if (now.isSymlink || real !== path || !sameFile(info, now)) throw changed(subject);
    if (!info.isFile) throw fail("EINVAL", subject, "not a regular file");
    return { file, info };
  } catch (error) {
    file.close();
    throw mapFsError(error, subject);
  }
}

function sameFile(a: Deno.FileInfo, b: Deno.FileInfo): boolean {
  if (a.ino === null || b.ino === null) return true;
  return a.dev === b.dev && a.ino === b.ino;
}

/** Reads at most `maxBytes`, failing if the file holds more (it may grow after stat). */
async function readCapped(
  file: Deno.FsFile,
  maxBytes: number,
  subject: string,
): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let total = 0;
  const buffer = new Uint8Array(64 * 1024);
  while (true) {
    const n = await file.read(buffer);
    if (n === null) break;
    total += n;
    if (total > maxBytes) throw fail("EINVAL", subject, tooLarge(total, maxBytes));
    chunks.push(buffer.slice(0, n));
  }
  const bytes = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.length;
  }
  return bytes;
}

async function writeAll(file: Deno.FsFile, bytes: Uint8Array, subject: string): Promise<void> {
  let offset = 0;
  while (offset < bytes.length) {
    const n = await file.write(bytes.subarray(offset));
    if (n === 0) throw fail("EINVAL", subject, "the host accepted no bytes");
    offset += n;
  }
}

function kindOf(
  info: { isFile: boolean; isDirectory: boolean; isSymlink: boolean },
): FsEntry["kind"] {
  if (info.isSymlink) return "symlink";
  if (info.isFile) return "file";
  if (info.isDirectory) return "dir";
  return "other";
}

function isMissing(error: unknown): boolean {
  return error instanceof Deno.errors.NotFound || error instanceof Deno.errors.NotADirectory;
}

function isWithin(path: string, root: string): boolean {
  return root === "/" || path === root || path.startsWith(`${root}/`);
}

function trimSlash(path: string): string {
  return path.length > 1 && path.endsWith("/") ? path.slice(0, -1) : path;
}

function quote(value: unknown): string {
  const text = String(value);
  return JSON.stringify(text.length > 200 ? `${text.slice(0, 200)}…` : text);
}

function tooLarge(size: number, maxBytes: number): string {
  return `${size} bytes is larger than the ${maxBytes}-byte limit`;
}

function fail(code: ErrorCode, subject: string, reason: string): SyscallError {
  return new SyscallError(code, `Cannot ${subject}: ${reason}`);
}

function changed(subject: string): SyscallError {
  return fail("EPERM", subject, "the path changed during the call");
}

/** Maps a host error to an ABI error whose message names the action and the path. */
function mapFsError(error: unknown, subject: string): SyscallError {
  if (error instanceof SyscallError) return error;
  const { code, message } = toSyscallError(error);
  return fail(code, subject, reasonOf(error) ?? message);
}

function reasonOf(error: unknown): string | undefined {
  if (error instanceof Deno.errors.NotFound) return "no such file or directory";
  if (error instanceof Deno.errors.AlreadyExists) return "already exists";
  if (error instanceof Deno.errors.IsADirectory) return "is a directory";
  if (error instanceof Deno.errors.NotADirectory) return "not a directory";
  if (error instanceof Deno.errors.FilesystemLoop) return "too many levels of symbolic links";
  if (error instanceof Deno.errors.PermissionDenied) return "the host denied permission";
  if ((error as { code?: unknown } | null)?.code === "ENOTEMPTY") {
    return "the directory is not empty";
  }
  return undefined;
}
