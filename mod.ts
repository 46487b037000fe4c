/**
 * Agent libOS: a Deno-native runtime that runs LLM agents as long-lived,
 * capability-controlled processes. Tools are libc-like wrappers; syscalls
 * are the authority boundary.
 *
 * @example
 * ```ts ignore
 * import { Kernel, ScriptedModel } from "@libos/agent-libos";
 *
 * const kernel = await Kernel.open({
 *   store: ":memory:",
 *   model: new ScriptedModel({ turns: [{ content: "done", exit: true }] }),
 * });
 * await kernel.images.register({
 *   name: "hello", version: "1.0.0", entry: "libos:agent",
 *   tools: ["exit"], capabilities: [], policy: {},
 * });
 * const proc = await kernel.run({ image: "hello@1.0.0", workspace: "." });
 * console.log(proc.state, proc.result); // exited done
 * await kernel.close();
 * ```
 *
 * @module
 */

export { Kernel } from "./runtime/kernel.ts";
export { createApp } from "./api/app.ts";
export type { ApiApp, ControlKernel, CreateAppOptions, HumanQueueApi } from "./api/app.ts";
export { ROLES, TokenVerifier } from "./api/auth.ts";
export type { ApiEnv, Principal, Role, TokenConfig, TokenEntry } from "./api/auth.ts";
export type {
  CellPolicy,
  CellSharing,
  ChildSpawnOptions,
  KernelOptions,
  RunQueue,
  SpawnOptions,
  TranscriptEntry,
} from "./runtime/kernel.ts";
export type { Admission, RunQueueStatus } from "./runtime/scheduler.ts";
export type { Conversation, ConversationRequest, TranscriptRef } from "./runtime/transcripts.ts";
export { TopicEvents } from "./runtime/events.ts";
export type { TopicEvent, TopicEventsKernel } from "./runtime/events.ts";
export { Mailbox } from "./runtime/mailbox.ts";
export type { MailboxKernel, MailMessage } from "./runtime/mailbox.ts";
export { Waits } from "./runtime/waits.ts";
export type { ParkedCall, WaitOutcome, WaitsKernel } from "./runtime/waits.ts";
export { ToolTables } from "./runtime/jit_tools.ts";
export type { JitTool, JitToolKernel, ToolRegistration } from "./runtime/jit_tools.ts";
export { MAX_ERASED_SOURCE, ProgramEntries } from "./runtime/program_entries.ts";
export type { NetFetchInit, NetProvider } from "./runtime/net_provider.ts";
export type { ShellProvider, ShellResult, ShellRunOptions } from "./runtime/shell_provider.ts";
export { ExecSandbox } from "./runtime/exec_sandbox.ts";
export type {
  ExecSandboxMode,
  PrepareOptions,
  SandboxedRun,
  SandboxStatus,
} from "./runtime/exec_sandbox.ts";
export type { SandboxView } from "./runtime/exec_sandbox_view.ts";
export type { SandboxMount } from "./runtime/exec_sandbox_view.ts";
export { openStore } from "./runtime/store.ts";
export type { OpenStoreOptions, Store } from "./runtime/store.ts";
export { ProcessTable } from "./runtime/process_table.ts";
export type {
  Budget,
  BudgetKey,
  LinkedChange,
  NewProcess,
  PreparedUpdate,
  ProcessEvent,
  ProcessRecord,
  ProcessState,
  TransitionListener,
  Usage,
  WaitingOn,
} from "./runtime/process_table.ts";
export { DEFAULT_LIMITS, Execution } from "./runtime/execution.ts";
export type { ExecutionKernel } from "./runtime/execution.ts";
export { Cell, Slot } from "./runtime/cell.ts";
export type { CellExit, CellOptions, SlotEnd, SlotInput, SlotMessage } from "./runtime/cell.ts";
export { CellPool } from "./runtime/cell_pool.ts";
export type { CellPoolOptions, CellRow, EarlyStart, Placement } from "./runtime/cell_pool.ts";
export type {
  AgentConfig,
  CellToHost,
  CellToWorker,
  ProgramEntry,
  StartProgram,
  WorkerToCell,
} from "./runtime/guest/cell_protocol.ts";
export type { ProcessLimits } from "./runtime/execution.ts";
export {
  imageDigest,
  ImageRegistry,
  imageTag,
  loadImageFile,
  parseImage,
} from "./runtime/image.ts";
export type {
  AgentImage,
  ParseImageOptions,
  RegisteredImage,
  RegisterImageOptions,
} from "./runtime/image.ts";
export { ScriptedModel } from "./runtime/model.ts";
export { OpenAIModel } from "./runtime/openai_model.ts";
export type { OpenAIModelOptions } from "./runtime/openai_model.ts";
export { DenyingHuman, HumanQueue, ScriptedHuman } from "./runtime/human_queue.ts";
export type {
  HumanAnswer,
  HumanDecision,
  HumanQueueKernel,
  HumanRequest,
  HumanResponder,
  QuestionKind,
} from "./runtime/human_queue.ts";
export { Snapshots } from "./runtime/snapshots.ts";
export { StorageQuotas } from "./runtime/storage_quota.ts";
export type { StorageChange, StorageUsage } from "./runtime/storage_quota.ts";
export type {
  LaterEffect,
  RestoreReport,
  Snapshot,
  SnapshotEntry,
  SnapshotKernel,
} from "./runtime/snapshots.ts";
export type {
  Message,
  ModelProvider,
  ModelReply,
  ModelRequest,
  ToolCall,
  ToolSpec,
} from "./runtime/model.ts";
export { ObjectMemory } from "./runtime/object_memory.ts";
export type { ListOptions, ObjectRecord, ObjectType, PutOptions } from "./runtime/object_memory.ts";
export { LocalFs } from "./runtime/fs_provider.ts";
export type { FsEntry, FsProvider, FsStat } from "./runtime/fs_provider.ts";
export { createSys, SysError } from "./runtime/guest/libc.ts";
export type {
  CapabilityView,
  DirEntry,
  ModelReply as SysModelReply,
  Sys,
  Transport,
  WaitResult,
} from "./runtime/guest/libc.ts";
export { BUILTIN_TOOLS } from "./tools/builtin.ts";
export type { Tool, ToolInputSchema } from "./tools/builtin.ts";
export { formatCapability, parseCapability, RESOURCES } from "./broker/capability.ts";
export type { Capability, CapabilitySpec, Operation, Resource } from "./broker/capability.ts";
export { CapabilityStore } from "./broker/capability_store.ts";
export type { GrantOptions, Holdings } from "./broker/capability_store.ts";
export type { StoreChange } from "./broker/store_change.ts";
export { decide, parsePolicy } from "./broker/policy.ts";
export type { Decision, PolicyRule } from "./broker/policy.ts";
export { AuditLog } from "./broker/audit.ts";
export type {
  AuditDecision,
  AuditEntry,
  AuditHead,
  AuditListOptions,
  AuditOutcome,
  AuditRecord,
  AuditVerifyResult,
} from "./broker/audit.ts";
export { Journal } from "./broker/journal.ts";
export type {
  After,
  CallEnd,
  CallFacts,
  CallOrigin,
  ClaimedWrites,
  Effect,
  JournalOptions,
  JournalRecord,
  JournalStats,
  JournalWrite,
  ParkedAudit,
  WaitSpec,
} from "./broker/journal.ts";
export { Broker, PARKED } from "./broker/broker.ts";
export type { BrokerReply, CallContext } from "./broker/broker.ts";
export { SYSCALL_NAMES } from "./broker/abi.ts";
export type {
  AbiChildEnd,
  AbiFileKind,
  AbiMessage,
  AbiObjectMeta,
  AbiPosted,
  AbiProcessState,
  AbiToolCall,
  AbiToolSpec,
  AbiTranscriptRef,
  Empty,
  Json,
  PolicyDecision,
  SyscallArgs,
  SyscallArgsMap,
  SyscallName,
  SyscallReply,
  SyscallRequest,
  SyscallResult,
  SyscallResultsMap,
} from "./broker/abi.ts";
export { ERROR_CODES, SyscallError } from "./broker/errors.ts";
export type { ErrorCode } from "./broker/errors.ts";
