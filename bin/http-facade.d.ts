// Types of ./http-facade.js (plain JavaScript: the entry shim installs it before it loads any TypeScript).
export declare const LAZY_HTTP_EXPORTS: Set<string>;
export declare function httpFacadeSource(): string;
export declare function installHttpFacade(): boolean;
