// One error type for everything IPAM refuses, so callers (CNI: error 11/other, agent: Node
// condition) can tell an address-management problem from an I/O or API failure.

export class IpamError extends Error {
  /** Short machine-readable reason, also used as a Node condition reason (CamelCase). */
  readonly reason: string;
  constructor(reason: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'IpamError';
    this.reason = reason;
  }
}
