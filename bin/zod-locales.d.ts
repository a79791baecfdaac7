// Types of ./zod-locales.js (plain JavaScript: the entry shim installs it before it loads any TypeScript).
export declare function installEnglishOnlyZod(): boolean;
export declare function zodLocaleModules(): { index: string; english: string } | undefined;
export declare function englishOnlyLocalesSource(english: string): string;
