// Console access control: security headers, session cookie, role check and CSRF (hono's origin check
// plus a per-session token in every form). Every console route is registered through `guard`.
import type { Context, MiddlewareHandler } from 'hono';
import { getConnInfo } from '@hono/node-server/conninfo';
import { bodyLimit } from 'hono/body-limit';
import { getCookie, setCookie, deleteCookie } from 'hono/cookie';
import { csrf } from 'hono/csrf';
import { secureHeaders } from 'hono/secure-headers';
import type { DB } from '../appliance/db.ts';
import { csrfMatches, getSession, type Role, type Session, type SessionPolicy } from '../appliance/users.ts';

export type Access = 'public' | 'viewer' | 'admin';

export type ConsoleEnv = { Variables: { session: Session; body: Record<string, string | File> } };
export type Ctx = Context<ConsoleEnv>;

const SESSION_COOKIE = 'outpost_session';
export const LOGIN_CSRF_COOKIE = 'outpost_login';

/** https directly, or behind a TLS-terminating proxy that says so: cookies then get Secure and the __Host- prefix. */
export function isHttps(c: Context): boolean {
  return new URL(c.req.url).protocol === 'https:' || c.req.header('x-forwarded-proto') === 'https';
}

export function clientIp(c: Context): string {
  try {
    return getConnInfo(c).remote.address ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

function cookieName(c: Context, base: string): string {
  return isHttps(c) ? `__Host-${base}` : base;
}

export function setPrivateCookie(c: Context, base: string, value: string, maxAgeS?: number): void {
  setCookie(c, cookieName(c, base), value, { path: '/', httpOnly: true, sameSite: 'Strict', secure: isHttps(c), maxAge: maxAgeS });
}

export function readPrivateCookie(c: Context, base: string): string | undefined {
  return getCookie(c, cookieName(c, base));
}

export function clearPrivateCookie(c: Context, base: string): void {
  deleteCookie(c, cookieName(c, base), { path: '/', secure: isHttps(c), httpOnly: true, sameSite: 'Strict' });
}

export function setSessionCookie(c: Context, value: string, policy: SessionPolicy): void {
  setPrivateCookie(c, SESSION_COOKIE, value, Math.floor(policy.absoluteMs / 1000));
}

export function clearSessionCookie(c: Context): void {
  clearPrivateCookie(c, SESSION_COOKIE);
}

/** No inline scripts or styles, nothing from elsewhere, never framed. The console ships no JavaScript at all. */
export const headers = secureHeaders({
  contentSecurityPolicy: {
    defaultSrc: ["'none'"],
    scriptSrc: ["'none'"],
    styleSrc: ["'self'"],
    imgSrc: ["'self'"],
    formAction: ["'self'"],
    frameAncestors: ["'none'"],
    baseUri: ["'none'"],
  },
  xFrameOptions: 'DENY',
  referrerPolicy: 'no-referrer',
  crossOriginResourcePolicy: 'same-origin',
});

const noStore: MiddlewareHandler = async (c, next) => {
  await next();
  c.header('Cache-Control', 'no-store');
};

/** A local path to return to after login; anything else (//host, \\host, absolute URLs) becomes "/". */
export function safeNext(next: string | undefined | null): string {
  if (!next || !next.startsWith('/') || next.startsWith('//') || next.startsWith('/\\') || next.length > 500) return '/';
  return next;
}

/**
 * The form must come from this console: the request's own origin, or its https form when a TLS proxy in
 * front says so (a cross-site form cannot set X-Forwarded-Proto, so this widens nothing for an attacker).
 */
function sameOrigin(origin: string, c: Context): boolean {
  const own = new URL(c.req.url);
  return origin === own.origin || (c.req.header('x-forwarded-proto') === 'https' && origin === `https://${own.host}`);
}

export interface GuardOptions {
  db: DB;
  sessionPolicy: SessionPolicy;
  /** Body cap for ordinary forms; uploads pass their own. */
  formBytes: number;
  /** Renders a refusal page (403 role/CSRF, 413 body too large). */
  reject: (c: Ctx, status: 403 | 413, message: string) => Response | Promise<Response>;
}

/** Middleware chain for one route: headers, then (unless public) session + role, then CSRF on POST. */
export function guard(opts: GuardOptions, access: Access, method: 'GET' | 'POST', maxBody?: number): MiddlewareHandler<ConsoleEnv>[] {
  const chain: MiddlewareHandler<ConsoleEnv>[] = [headers, noStore];
  if (access !== 'public') {
    chain.push(async (c, next) => {
      const session = getSession(opts.db, readPrivateCookie(c, SESSION_COOKIE), opts.sessionPolicy);
      if (!session) {
        if (readPrivateCookie(c, SESSION_COOKIE)) clearSessionCookie(c);
        // After signing in, a GET comes back to where it was going; a form post cannot be replayed.
        const back = method === 'GET' ? c.req.path + (new URL(c.req.url).search || '') : '/';
        return c.redirect(back === '/' ? '/login' : `/login?next=${encodeURIComponent(back)}`, 303);
      }
      c.set('session', session);
      if (access === 'admin' && session.user.role !== ('admin' satisfies Role)) {
        return opts.reject(c, 403, `this page needs the admin role; you are signed in as "${session.user.name}" (${session.user.role})`);
      }
      await next();
    });
  }
  if (method === 'POST') {
    chain.push(csrf({ origin: sameOrigin }) as unknown as MiddlewareHandler<ConsoleEnv>);
    const limit = maxBody ?? opts.formBytes;
    chain.push(bodyLimit({ maxSize: limit, onError: (c) => opts.reject(c as Ctx, 413, `request body over ${limit} bytes`) }) as unknown as MiddlewareHandler<ConsoleEnv>);
    chain.push(async (c, next) => {
      const body = (await c.req.parseBody()) as Record<string, string | File>;
      c.set('body', body);
      if (access !== 'public' && !csrfMatches(c.get('session').csrf, body._csrf)) {
        return opts.reject(c, 403, 'the form has expired or did not come from this console (CSRF token mismatch); reload the page and try again');
      }
      await next();
    });
  }
  return chain;
}

/** A string field of the parsed form ('' when absent or a file). */
export function field(c: Ctx, name: string): string {
  const v = c.get('body')?.[name];
  return typeof v === 'string' ? v : '';
}
