// The one error catalog: every stable code with its HTTP status and CLI exit code.
// CLI, API, logs and audit rows all speak these codes; docs/errors.md lists them.

export const ERRORS = {
  E_USAGE: { status: 400, exit: 2, text: 'invalid usage' },
  E_INPUT: { status: 400, exit: 1, text: 'invalid input' },
  E_TOO_LARGE: { status: 413, exit: 1, text: 'input too large' },
  E_AUTH: { status: 401, exit: 1, text: 'missing or invalid credentials' },
  E_FORBIDDEN: { status: 403, exit: 1, text: 'not allowed for this token or role' },
  E_CSRF: { status: 403, exit: 1, text: 'missing or invalid CSRF token' },
  E_RATE: { status: 429, exit: 1, text: 'rate limit exceeded' },
  E_NOT_FOUND: { status: 404, exit: 1, text: 'not found' },
  E_CONFLICT: { status: 409, exit: 1, text: 'conflict with current state' },
  E_FORMAT: { status: 422, exit: 1, text: 'package is malformed' },
  E_TAR: { status: 422, exit: 1, text: 'unsafe or invalid archive entry' },
  E_SIZE: { status: 413, exit: 1, text: 'size limit exceeded' },
  E_SIG: { status: 422, exit: 1, text: 'signature does not verify' },
  E_UNKNOWN_KEY: { status: 422, exit: 1, text: 'signed by a key this appliance does not trust' },
  E_REVOKED_KEY: { status: 422, exit: 1, text: 'signed by a revoked key' },
  E_ROOT: { status: 422, exit: 1, text: 'root of trust rotation not signed by enough previous root keys' },
  E_HASH: { status: 422, exit: 1, text: 'content hash mismatch' },
  E_ROLLBACK: { status: 409, exit: 1, text: 'version is not newer than the applied version' },
  E_EQUIVOCATION: { status: 409, exit: 1, text: 'same version with different content' },
  E_EXPIRED: { status: 422, exit: 1, text: 'package has expired' },
  E_BASE: { status: 409, exit: 1, text: 'delta does not apply to the current version' },
  E_STATE: { status: 409, exit: 1, text: 'state hash after apply does not match' },
  E_DOWNLOAD: { status: 502, exit: 1, text: 'download failed' },
  E_TIMEOUT: { status: 504, exit: 1, text: 'deadline exceeded' },
  E_LOCKED: { status: 409, exit: 1, text: 'data directory is in use by another process' },
  E_CONFIG: { status: 500, exit: 1, text: 'invalid configuration' },
  E_KEY: { status: 400, exit: 1, text: 'invalid key file' },
  E_DB: { status: 500, exit: 1, text: 'database error' },
  E_EMPTY: { status: 503, exit: 1, text: 'no data loaded' },
  E_INTERNAL: { status: 500, exit: 1, text: 'internal error' },
} as const;

export type ErrorCode = keyof typeof ERRORS;

export class OutpostError extends Error {
  readonly code: ErrorCode;
  readonly details?: Record<string, unknown>;

  constructor(code: ErrorCode, message?: string, details?: Record<string, unknown>) {
    super(message ?? ERRORS[code].text);
    this.name = 'OutpostError';
    this.code = code;
    this.details = details;
  }

  get status(): number {
    return ERRORS[this.code].status;
  }

  get exitCode(): number {
    return ERRORS[this.code].exit;
  }

  /** `E_SIG: signature does not verify` — the form CLI output and audit rows use. */
  toString(): string {
    return `${this.code}: ${this.message}`;
  }

  toJSON(): { code: ErrorCode; message: string } {
    return { code: this.code, message: this.message };
  }
}

export function isOutpostError(e: unknown): e is OutpostError {
  return e instanceof OutpostError;
}

/** Wraps anything thrown into an OutpostError so callers always have a stable code. */
export function asOutpostError(e: unknown): OutpostError {
  if (e instanceof OutpostError && e.code in ERRORS) return e;
  const msg = e instanceof Error ? e.message : String(e);
  return new OutpostError('E_INTERNAL', msg);
}
