// Page frame and small shared pieces of the console (navigation, CSRF field, pager, formatting).
// Everything is rendered with Hono's JSX, which escapes every text and attribute value.
import type { Child, FC, PropsWithChildren } from 'hono/jsx';
import { raw } from 'hono/html';
import type { Session } from '../appliance/users.ts';

const NAV: { href: string; label: string; admin?: boolean }[] = [
  { href: '/', label: 'Dashboard' },
  { href: '/packages', label: 'Packages' },
  { href: '/lookup', label: 'Lookup' },
  { href: '/keys', label: 'Trusted keys' },
  // ---- issue 7: upstreams, hits, overrides ----
  { href: '/upstreams', label: 'Upstreams' },
  { href: '/hits', label: 'Hits' },
  { href: '/overrides', label: 'Overrides', admin: true },
  // ---- end issue 7 ----
  { href: '/tokens', label: 'API clients', admin: true },
  { href: '/audit', label: 'Audit log', admin: true },
  { href: '/users', label: 'Users', admin: true },
];

export const Csrf: FC<{ session: Session }> = ({ session }) => <input type="hidden" name="_csrf" value={session.csrf} />;

/** A one-button form that POSTs a destructive action (revoke, remove, delete) with the CSRF token. */
export const DangerButton: FC<{ session: Session; action: string; label: string; ariaLabel?: string }> = ({ session, action, label, ariaLabel }) => (
  <form method="post" action={action}>
    <Csrf session={session} />
    <button type="submit" class="danger small" aria-label={ariaLabel}>
      {label}
    </button>
  </form>
);

/** `refresh`: seconds after which the browser reloads the page by itself (progress pages; no script needed). */
export const Page: FC<PropsWithChildren<{ title: string; session?: Session | null; active?: string; notice?: string | null; refresh?: number }>> = ({ title, session, active, notice, refresh, children }) => (
  <>
    {raw('<!doctype html>')}
    <html lang="en">
      <head>
        <meta charset="utf-8" />
        <meta name="viewport" content="width=device-width, initial-scale=1" />
        <meta name="referrer" content="no-referrer" />
        {refresh ? <meta http-equiv="refresh" content={String(refresh)} /> : null}
        <title>{`${title} · Outpost`}</title>
        <link rel="stylesheet" href="/assets/console.css" />
      </head>
      <body>
        <header class="top">
          <a class="brand" href="/">Outpost</a>
          {session ? (
            <>
              <nav>
                {NAV.filter((n) => !n.admin || session.user.role === 'admin').map((n) => (
                  <a href={n.href} class={active === n.href ? 'on' : undefined}>
                    {n.label}
                  </a>
                ))}
              </nav>
              <form method="post" action="/logout" class="who">
                <Csrf session={session} />
                <span>
                  {session.user.name} <small>({session.user.role})</small>
                </span>
                <button type="submit" class="link">
                  Sign out
                </button>
              </form>
            </>
          ) : null}
        </header>
        <main>
          <h1>{title}</h1>
          {notice ? <p class="notice ok">{notice}</p> : null}
          {children}
        </main>
      </body>
    </html>
  </>
);

export const ErrorBox: FC<{ code?: string | null; message: string }> = ({ code, message }) => (
  <p class="notice bad" role="alert">
    {code ? <code>{code}</code> : null} {message}
  </p>
);

export const Pager: FC<{ page: number; pages: number; href: (page: number) => string }> = ({ page, pages, href }) =>
  pages <= 1 ? null : (
    <nav class="pager" aria-label="pages">
      {page > 1 ? <a href={href(page - 1)}>← newer</a> : <span />}
      <span>
        page {page} of {pages}
      </span>
      {page < pages ? <a href={href(page + 1)}>older →</a> : <span />}
    </nav>
  );

/** Wide tables scroll sideways on a phone instead of breaking the layout. */
export const Table: FC<PropsWithChildren<{ head: Child[]; class?: string }>> = (p) => (
  <div class="scroll">
    <table class={p.class}>
      <thead>
        <tr>
          {p.head.map((h) => (
            <th>{h}</th>
          ))}
        </tr>
      </thead>
      <tbody>{p.children}</tbody>
    </table>
  </div>
);

export function fmtAge(s: number | null | undefined): string {
  if (s === null || s === undefined) return '—';
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  if (s < 172_800) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86_400)} days`;
}

export function fmtTime(iso: string | null | undefined): string {
  if (!iso) return '—';
  const d = new Date(iso);
  return Number.isFinite(d.getTime()) ? d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z').replace(/Z$/, ' UTC') : iso;
}

export function fmtInt(n: number | null | undefined): string {
  return n === null || n === undefined ? '—' : n.toLocaleString('en-US');
}

export function parsePage(raw: string | undefined): number {
  const n = Number(raw);
  return Number.isInteger(n) && n > 0 && n < 1e6 ? n : 1;
}
