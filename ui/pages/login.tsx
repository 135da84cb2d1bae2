// Sign in and out. The login form carries its own CSRF token (double-submit cookie) because there is
// no session yet; failed logins are counted per user name and per address (lockout, rate limit).
import crypto from 'node:crypto';
import { audit } from '../../appliance/db.ts';
import { attemptLogin, countUsers, createSession, csrfMatches, endSession, pruneSessions } from '../../appliance/users.ts';
import type { RouteDef, UiContext } from '../context.ts';
import { clearSessionCookie, clientIp, field, LOGIN_CSRF_COOKIE, readPrivateCookie, safeNext, setPrivateCookie, setSessionCookie, type Ctx } from '../guard.ts';
import { ErrorBox, Page } from '../layout.tsx';

function loginForm(c: Ctx, ui: UiContext, opts: { next: string; name?: string; error?: { code: string; message: string } | null; status?: 200 | 401 | 403 | 429 }) {
  const token = crypto.randomBytes(24).toString('base64url');
  setPrivateCookie(c, LOGIN_CSRF_COOKIE, token, 3600);
  const noUsers = countUsers(ui.db) === 0;
  return c.html(
    <Page title="Sign in">
      {noUsers ? (
        <p class="notice warn">
          No console users exist yet. On the appliance host, create the first admin (the password is read from stdin):
          <br />
          <code>npx outpost user add admin --role admin</code>
        </p>
      ) : null}
      {opts.error ? <ErrorBox code={opts.error.code} message={opts.error.message} /> : null}
      <form method="post" action="/login" class="card narrow">
        <input type="hidden" name="_csrf" value={token} />
        <input type="hidden" name="next" value={opts.next} />
        <label>
          User name
          <input name="username" autocomplete="username" required maxlength={64} value={opts.name ?? ''} autofocus />
        </label>
        <label>
          Password
          <input name="password" type="password" autocomplete="current-password" required maxlength={1024} />
        </label>
        <button type="submit">Sign in</button>
      </form>
    </Page>,
    opts.status ?? 200,
  );
}

export function loginRoutes(ui: UiContext): RouteDef[] {
  return [
    {
      method: 'GET',
      path: '/login',
      access: 'public',
      handler: (c) => loginForm(c, ui, { next: safeNext(c.req.query('next')) }),
    },
    {
      method: 'POST',
      path: '/login',
      access: 'public',
      handler: async (c) => {
        const next = safeNext(field(c, 'next'));
        const name = field(c, 'username').trim();
        const cookie = readPrivateCookie(c, LOGIN_CSRF_COOKIE);
        if (!cookie || !csrfMatches(cookie, field(c, '_csrf'))) {
          return loginForm(c, ui, { next, name, status: 403, error: { code: 'E_CSRF', message: 'the sign-in form expired; please try again' } });
        }
        const ip = clientIp(c);
        const out = await attemptLogin(ui.db, name, field(c, 'password'), ip, ui.loginPolicy);
        if (!out.ok) {
          if (out.retryAfterS) c.header('Retry-After', String(out.retryAfterS));
          return loginForm(c, ui, { next, name, status: out.code === 'E_RATE' ? 429 : 401, error: { code: out.code, message: out.message } });
        }
        pruneSessions(ui.db, ui.sessionPolicy);
        const s = createSession(ui.db, out.user.id, { ip, userAgent: c.req.header('user-agent') });
        setSessionCookie(c, s.cookie, ui.sessionPolicy);
        setPrivateCookie(c, LOGIN_CSRF_COOKIE, '', 0);
        return c.redirect(next, 303);
      },
    },
    {
      method: 'POST',
      path: '/logout',
      access: 'viewer',
      handler: (c) => {
        const s = c.get('session');
        endSession(ui.db, s.id);
        audit(ui.db, s.user.name, 'user.logout', { subject: s.user.name });
        clearSessionCookie(c);
        return c.redirect('/login', 303);
      },
    },
  ];
}
