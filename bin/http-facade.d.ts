// Types of ./http-facade.js (plain JavaScript: the entry shim installs it before it loads any TypeScript).
export declare function installHttpFacade(): boolean;
