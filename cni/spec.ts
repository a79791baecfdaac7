// The CNI specification's vocabulary (spec 1.1, with the older result formats we still
// answer in): supported versions, commands, error codes and the error result.

export const SUPPORTED_VERSIONS = ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] as const;
export type CniVersion = (typeof SUPPORTED_VERSIONS)[number];
export const LATEST_VERSION: CniVersion = '1.1.0';

export const COMMANDS = ['ADD', 'DEL', 'CHECK', 'STATUS', 'GC', 'VERSION'] as const;
export type CniCommand = (typeof COMMANDS)[number];

/** Well-known error codes (spec "Error" section). 100+ would be plugin specific. */
export const ErrorCode = {
  IncompatibleVersion: 1,
  UnsupportedField: 2,
  UnknownContainer: 3,
  InvalidEnvironment: 4,
  IoFailure: 5,
  DecodingFailure: 6,
  InvalidNetworkConfig: 7,
  TryAgainLater: 11,
  PluginNotAvailable: 50,
  LimitedConnectivity: 51,
  /** Plugin specific: CHECK found the attachment different from prevResult. */
  CheckMismatch: 100,
  /** What libcni's skel uses for unexpected internal failures. */
  Internal: 999,
} as const;

/** An error the plugin reports to the runtime as the spec's error JSON (never a stack trace). */
export class CniError extends Error {
  readonly code: number;
  readonly details: string;
  constructor(code: number, msg: string, details = '') {
    super(msg);
    this.name = 'CniError';
    this.code = code;
    this.details = details;
  }
}

export function isSupportedVersion(v: unknown): v is CniVersion {
  return typeof v === 'string' && (SUPPORTED_VERSIONS as readonly string[]).includes(v);
}

/** Compares two dotted versions numerically: negative, zero or positive like a sort comparator. */
export function compareVersions(a: string, b: string): number {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < 3; i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

export interface ErrorResult {
  cniVersion: string;
  code: number;
  msg: string;
  details?: string;
}

export function errorResult(err: CniError, cniVersion: string): ErrorResult {
  return {
    cniVersion,
    code: err.code,
    msg: err.message,
    ...(err.details ? { details: err.details } : {}),
  };
}

export interface VersionResult {
  cniVersion: string;
  supportedVersions: string[];
}

/** VERSION's answer: the requested version when we speak it, else our latest. */
export function versionResult(requested: unknown): VersionResult {
  return {
    cniVersion: isSupportedVersion(requested) ? requested : LATEST_VERSION,
    supportedVersions: [...SUPPORTED_VERSIONS],
  };
}
