// What an authenticated API request may do: the one route → scope table with the middleware that
// enforces it, and the per-token rate limit (token bucket). Both run on every /api request after bearer auth.
import type { Context, MiddlewareHandler } from 'hono';
import { matchedRoutes } from 'hono/route';
import { ERRORS } from '../appliance/errors.ts';
import { scopeAllows, type Scope, type TokenRow } from '../appliance/tokens.ts';

type TokenEnv = { Variables: { token: TokenRow } };

/**
 * Every /api route, keyed `METHOD <registered path>`, with the least scope that may call it
 * (lookup < export < admin). A route missing here is refused (fail closed); test/scopes.test.ts
 * walks app.routes so a new route cannot ship without an entry.
 */
export const API_SCOPES: Readonly<Record<string, Scope>> = {
  'GET /api/v1/lookup': 'lookup',
  'POST /api/v1/lookup': 'lookup',
  'GET /api/v1/export/:format': 'export',
  // verdict tuning (lookup/verdict-routes.ts): site-wide decisions and who saw what → admin only
  'GET /api/v1/overrides': 'admin',
  'POST /api/v1/overrides': 'admin',
  'DELETE /api/v1/overrides/:id': 'admin',
  'GET /api/v1/hits': 'admin',
  'POST /api/v1/hits/false-positive': 'admin',
  // actors and families by alias with their indicators here (lookup/actors.ts): read-only, like a lookup
  'GET /api/v1/actors': 'lookup',
};

/** Route entries that are middleware for all of /api (method ALL, path ending in *), not endpoints. */
export function isApiMiddleware(route: { method: string; path: string }): boolean {
  return route.method === 'ALL' && route.path.endsWith('*');
}

function deny(c: Context, status: 403 | 429, code: 'E_FORBIDDEN' | 'E_RATE', message: string): Response {
  return c.json({ error: { code, message: message || ERRORS[code].text } }, status);
}

/**
 * The one scope check. The endpoint is the last matched route that is not /api-wide middleware;
 * no endpoint means the request falls through to the 404 handler.
 */
export function scopeGuard(table: Readonly<Record<string, Scope>> = API_SCOPES): MiddlewareHandler<TokenEnv> {
  return async (c, next) => {
    const routes = matchedRoutes(c);
    let key: string | undefined;
    for (let i = routes.length - 1; i >= 0; i--) {
      const r = routes[i];
      if (!isApiMiddleware(r)) {
        key = `${r.method} ${r.path}`;
        break;
      }
    }
    if (key === undefined) return next();
    const need = table[key];
    const have = c.get('token').scope;
    if (need === undefined) return deny(c, 403, 'E_FORBIDDEN', `route ${key} has no scope entry; refused`);
    if (!scopeAllows(have, need)) return deny(c, 403, 'E_FORBIDDEN', `this token has scope "${have}"; the route needs "${need}"`);
    return next();
  };
}

export interface RateLimitOptions {
  /** Sustained requests per second per token; 0 disables the limit. */
  rps: number;
  /** Bucket size: requests a token may send at once. */
  burst: number;
  /** Clock in ms; injectable for tests. */
  now?: () => number;
}

interface Bucket {
  tokens: number;
  at: number;
}

/**
 * Per-token token bucket. One Map lookup and a few float operations per request; the bucket object is
 * mutated in place, so after a token's first request nothing is allocated. Shared by the /api middleware
 * (rateLimit) and the GET lookup fast path (lookup/api.ts), so both count against one bucket per token.
 */
export class RateLimiter {
  readonly rps: number;
  readonly burst: number;
  private readonly now: () => number;
  private readonly perMs: number;
  private readonly buckets = new Map<number, Bucket>();

  constructor(opts: RateLimitOptions) {
    this.rps = opts.rps;
    this.burst = opts.burst;
    this.now = opts.now ?? Date.now;
    this.perMs = opts.rps / 1000;
  }

  get enabled(): boolean {
    return this.rps > 0;
  }

  /** Takes one request from the token's bucket: 0 when allowed, else the whole seconds until one is (Retry-After). */
  take(id: number): number {
    if (!(this.rps > 0)) return 0;
    const t = this.now();
    let b = this.buckets.get(id);
    if (b === undefined) {
      // Token ids are few (created by an admin), so the map stays small; no eviction needed.
      b = { tokens: this.burst, at: t };
      this.buckets.set(id, b);
    } else {
      b.tokens = Math.min(this.burst, b.tokens + (t - b.at) * this.perMs);
      b.at = t;
    }
    if (b.tokens < 1) return Math.max(1, Math.ceil((1 - b.tokens) / this.rps));
    b.tokens -= 1;
    return 0;
  }

  /** The 429 message for a refused request. */
  message(retry: number): string {
    return `rate limit of ${this.rps} requests/s (burst ${this.burst}) for this token exceeded; retry after ${retry} s`;
  }
}

/**
 * The rate limit as /api middleware (a RateLimiter, or options for a new one). Over the limit: 429 E_RATE
 * with Retry-After (whole seconds until one request is allowed again).
 */
export function rateLimit(opts: RateLimitOptions | RateLimiter): MiddlewareHandler<TokenEnv> {
  const limiter = opts instanceof RateLimiter ? opts : new RateLimiter(opts);
  if (!limiter.enabled) return (_c, next) => next();
  return async (c, next) => {
    const retry = limiter.take(c.get('token').id);
    if (retry > 0) {
      c.header('Retry-After', String(retry));
      return deny(c, 429, 'E_RATE', limiter.message(retry));
    }
    return next();
  };
}

type ClientErrorSocket = import('node:stream').Duplex & { _httpMessage?: { headersSent?: boolean } | null };

/**
 * Node's 'clientError' hook: requests refused by the HTTP parser or a server timeout (malformed request
 * line, headers over the size cap, slow headers) get the same {"error":{"code"}} body as the API instead
 * of Node's bare status line, then the connection is closed.
 */
export function answerClientError(err: Error & { code?: string }, socket: ClientErrorSocket): void {
  if (err.code === 'ECONNRESET' || !socket.writable || socket._httpMessage?.headersSent) {
    socket.destroy();
    return;
  }
  const [status, reason, code, message] =
    err.code === 'HPE_HEADER_OVERFLOW'
      ? [431, 'Request Header Fields Too Large', 'E_TOO_LARGE', 'request line or headers over the size limit']
      : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? [408, 'Request Timeout', 'E_TIMEOUT', 'the request was not received in time']
        : [400, 'Bad Request', 'E_INPUT', 'malformed HTTP request'];
  const body = JSON.stringify({ error: { code, message } });
  socket.end(`HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`, () => socket.destroy());
}

/**
 * True when JSON text nests arrays/objects deeper than `max` (brackets inside strings ignored). A linear scan
 * before JSON.parse: V8 parses 200,000 nested brackets in ~0.3 s, a CPU cost a 4 MiB body could multiply.
 */
export function jsonTooDeep(text: string, max: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text.charCodeAt(i);
    if (inString) {
      if (ch === 92 /* \ */) i++;
      else if (ch === 34 /* " */) inString = false;
    } else if (ch === 34) inString = true;
    else if (ch === 91 /* [ */ || ch === 123 /* { */) {
      if (++depth > max) return true;
    } else if (ch === 93 /* ] */ || ch === 125 /* } */) depth--;
  }
  return false;
}
