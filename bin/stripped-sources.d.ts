// Types of ./stripped-sources.js (plain JavaScript: the entry shim installs it before it loads any TypeScript).
export declare const strippedSourceCounts: { hits: number; stripped: number; unwritable: number };
export declare function installStrippedSources(dir?: string): boolean;
export declare function pruneStrippedSources(now?: number): number;
