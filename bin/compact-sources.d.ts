// Types of ./compact-sources.js (plain JavaScript: the entry shim installs it before it loads any TypeScript).
export declare const compactSourceCounts: { hits: number; compacted: number; unwritable: number; unparsed: number };
export declare function installCompactSources(dir?: string): boolean;
export declare function pruneCompactSources(now?: number): number;
