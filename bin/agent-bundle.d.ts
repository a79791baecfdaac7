// Types of ./agent-bundle.js (plain JavaScript: the entry shim reads it before it loads any TypeScript).
export type FileStamp = [size: number, mtimeMs: number];
export interface AgentManifest {
  bundle: [path: string, stamp: FileStamp | undefined];
  inputs: Record<string, FileStamp>;
}
export declare const REPO_ROOT: string;
export declare const AGENT_BUNDLE_PATH: string;
export declare const AGENT_MANIFEST_PATH: string;
export declare function fileStamp(path: string): FileStamp | undefined;
export declare function agentManifest(root: string, inputs: Iterable<string>, bundlePath?: string): AgentManifest;
export declare function agentBundleStaleness(root?: string, manifestPath?: string): string | undefined;
export declare function restampAgentManifest(root: string, manifestPath?: string): void;
