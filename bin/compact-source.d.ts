// Types of ./compact-source.js (plain JavaScript: the entry shim's loader uses it).
export declare function compactSource(source: string, sourceType: 'module' | 'script'): string | undefined;
export declare function compactorReady(): boolean;
