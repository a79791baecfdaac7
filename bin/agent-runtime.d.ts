// Types of ./agent-runtime.js (plain JavaScript: the entry shim loads it before anything that needs type stripping).
export declare const AGENT_V8_FLAGS: string[];
export declare const AGENT_MALLOC_ENV: Record<string, string>;
export declare function missingAgentFlags(execArgv: readonly string[]): string[];
export declare function missingAgentEnv(env: NodeJS.ProcessEnv): Record<string, string>;
