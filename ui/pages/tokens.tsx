// API clients (admin): bearer tokens for /api/ — create (the secret is shown once, only its hash is
// kept) and revoke.
import { asOutpostError, OutpostError } from '../../appliance/errors.ts';
import { createToken, listTokens, revokeToken, SCOPES, type Scope } from '../../appliance/tokens.ts';
import type { PageStatus, RouteDef, UiContext } from '../context.ts';
import { field, type Ctx } from '../guard.ts';
import { Csrf, DangerButton, ErrorBox, fmtTime, Page, Table } from '../layout.tsx';
import { ERRORS } from '../../appliance/errors.ts';

export function tokenRoutes(ui: UiContext): RouteDef[] {
  const page = (c: Ctx, extra: { created?: { token: string; name: string; scope: string }; error?: OutpostError; notice?: string } = {}) => {
    const session = c.get('session');
    const rows = listTokens(ui.db).reverse();
    const now = Date.now();
    return c.html(
      <Page title="API clients" session={session} active="/tokens" notice={extra.notice}>
        {extra.error ? <ErrorBox code={extra.error.code} message={extra.error.message} /> : null}
        {extra.created ? (
          <div class="notice ok secret" role="status">
            <p>
              Token for <strong>{extra.created.name}</strong> (scope {extra.created.scope}). It is shown <strong>only this once</strong>; store it now:
            </p>
            <input class="token" readonly value={extra.created.token} aria-label="new token" />
            <p class="small">
              Use it as <code>Authorization: Bearer …</code> on <code>/api/v1/…</code>.
            </p>
          </div>
        ) : null}
        <form method="post" action="/tokens" class="card inline">
          <Csrf session={session} />
          <label>
            Client name
            <input name="name" required maxlength={100} placeholder="e.g. suricata-edge-1" />
          </label>
          <label>
            Scope
            <select name="scope">
              {SCOPES.map((s) => (
                <option value={s}>{s}</option>
              ))}
            </select>
          </label>
          <label>
            Expires (optional)
            <input name="expires" type="date" />
          </label>
          <button type="submit">Create token</button>
        </form>
        {rows.length ? (
          <Table head={['#', 'Client', 'Scope', 'Created', 'Last used', 'Expires', 'State', '']}>
            {rows.map((t) => {
              const expired = t.expires_at !== null && Date.parse(t.expires_at) <= now;
              return (
                <tr class={t.revoked_at || expired ? 'row-off' : undefined}>
                  <td class="num">{t.id}</td>
                  <td>{t.name}</td>
                  <td>{t.scope}</td>
                  <td>{fmtTime(t.created_at)}</td>
                  <td>{fmtTime(t.last_used_at)}</td>
                  <td>{fmtTime(t.expires_at)}</td>
                  <td>{t.revoked_at ? <span class="badge bad">revoked {fmtTime(t.revoked_at)}</span> : expired ? <span class="badge bad">expired</span> : <span class="badge ok">active</span>}</td>
                  <td>
                    {!t.revoked_at ? (
                      <DangerButton session={session} action={`/tokens/${t.id}/revoke`} label="Revoke" ariaLabel={`revoke token ${t.id}`} />
                    ) : null}
                  </td>
                </tr>
              );
            })}
          </Table>
        ) : (
          <p class="muted">No tokens yet.</p>
        )}
      </Page>,
      extra.error ? (ERRORS[extra.error.code].status as PageStatus) : 200,
    );
  };

  return [
    { method: 'GET', path: '/tokens', access: 'admin', handler: (c) => page(c, { notice: c.req.query('done') === 'revoked' ? 'Token revoked.' : undefined }) },
    {
      method: 'POST',
      path: '/tokens',
      access: 'admin',
      handler: (c) => {
        const session = c.get('session');
        try {
          const name = field(c, 'name').trim();
          const scope = field(c, 'scope') as Scope;
          const expires = field(c, 'expires');
          let expiresAt: string | undefined;
          if (expires) {
            const t = Date.parse(`${expires}T23:59:59Z`);
            if (!/^\d{4}-\d{2}-\d{2}$/.test(expires) || !Number.isFinite(t)) throw new OutpostError('E_INPUT', 'expiry must be a date (YYYY-MM-DD)');
            if (t <= Date.now()) throw new OutpostError('E_INPUT', 'expiry must be in the future');
            expiresAt = new Date(t).toISOString();
          }
          const { token, row } = createToken(ui.db, name, scope, { expiresAt, actor: session.user.name });
          return page(c, { created: { token, name: row.name, scope: row.scope } });
        } catch (e) {
          return page(c, { error: asOutpostError(e) });
        }
      },
    },
    {
      method: 'POST',
      path: '/tokens/:id/revoke',
      access: 'admin',
      handler: (c) => {
        try {
          revokeToken(ui.db, Number(c.req.param('id')), c.get('session').user.name);
          return c.redirect('/tokens?done=revoked', 303);
        } catch (e) {
          return page(c, { error: asOutpostError(e) });
        }
      },
    },
  ];
}
