// Types of ./zod-locales.js (plain JavaScript: the entry shim installs it before it loads any TypeScript).
export declare function installEnglishOnlyZod(): boolean;
