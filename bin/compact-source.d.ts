// Types of ./compact-source.js (plain JavaScript: the entry shim's loader uses it).
import type { Options } from 'acorn';

export declare function parseOptions(sourceType: 'module' | 'script'): Options;
export declare function compactSource(source: string, sourceType: 'module' | 'script'): string | undefined;
export declare function compactorReady(): boolean;
