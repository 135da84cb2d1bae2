// Local overrides (admin): allow or block a value, network or domain subtree on this site with a reason
// and an optional expiry; list (active, or all with revoked/expired), remove. Changes go through
// lookup/overrides.ts (validated, audited) and the console's engine reloads its override index at once.
import { asOutpostError, ERRORS, OutpostError } from '../../appliance/errors.ts';
import { addOverride, listOverrides, removeOverride } from '../../lookup/overrides.ts';
import type { PageStatus, RouteDef, UiContext } from '../context.ts';
import { field, type Ctx } from '../guard.ts';
import { Csrf, DangerButton, ErrorBox, fmtTime, Page, Pager, parsePage, Table } from '../layout.tsx';

const PAGE_SIZE = 50;

export function overrideRoutes(ui: UiContext): RouteDef[] {
  const page = (c: Ctx, extra: { error?: OutpostError; notice?: string; form?: Record<string, string> } = {}) => {
    const session = c.get('session');
    const all = c.req.query('all') === '1';
    const rows = listOverrides(ui.db, { all });
    const pages = Math.max(1, Math.ceil(rows.length / PAGE_SIZE));
    const p = Math.min(parsePage(c.req.query('page')), pages);
    const now = Date.now();
    const form = extra.form ?? {};
    return c.html(
      <Page title="Local overrides" session={session} active="/overrides" notice={extra.notice}>
        {extra.error ? <ErrorBox code={extra.error.code} message={extra.error.message} /> : null}
        <form method="post" action="/overrides" class="card inline">
          <Csrf session={session} />
          <h2>Add an override</h2>
          <label>
            Action
            <select name="action">
              <option value="allow" selected={form.action !== 'block'}>
                allow (benign on this site)
              </option>
              <option value="block" selected={form.action === 'block'}>
                block (malicious on this site)
              </option>
            </select>
          </label>
          <label>
            Value (IP, network, domain, URL, hash)
            <input name="value" required maxlength={2000} value={form.value ?? ''} />
          </label>
          <label>
            Reason
            <input name="reason" required maxlength={1000} value={form.reason ?? ''} />
          </label>
          <label>
            Expires (optional)
            <input name="expires" type="date" value={form.expires ?? ''} />
          </label>
          <button type="submit">Add override</button>
        </form>
        <nav class="filters">
          Show: <a href="/overrides" class={!all ? 'on' : undefined}>active</a> · <a href="/overrides?all=1" class={all ? 'on' : undefined}>all (with removed and expired)</a>
        </nav>
        {rows.length ? (
          <Table head={['#', 'Action', 'Type', 'Value', 'Reason', 'By', 'Created', 'Expires', 'State', '']} class="overrides">
            {rows.slice((p - 1) * PAGE_SIZE, p * PAGE_SIZE).map((o) => {
              const expired = o.expires_at !== null && Date.parse(o.expires_at) <= now;
              return (
                <tr class={o.revoked_at || expired ? 'row-off' : undefined}>
                  <td class="num">{o.id}</td>
                  <td>
                    <span class={`badge kind-${o.action}`}>{o.action}</span>
                  </td>
                  <td>{o.type}</td>
                  <td class="wrap">
                    <code>{o.value}</code>
                  </td>
                  <td class="wrap">{o.reason}</td>
                  <td>{o.created_by}</td>
                  <td>{fmtTime(o.created_at)}</td>
                  <td>{fmtTime(o.expires_at)}</td>
                  <td>{o.revoked_at ? <span class="badge bad">removed by {o.revoked_by}</span> : expired ? <span class="badge bad">expired</span> : <span class="badge ok">active</span>}</td>
                  <td>
                    {!o.revoked_at && !expired ? (
                      <DangerButton session={session} action={`/overrides/${o.id}/remove`} label="Remove" ariaLabel={`remove override ${o.id}`} />
                    ) : null}
                  </td>
                </tr>
              );
            })}
          </Table>
        ) : (
          <p class="muted">No {all ? '' : 'active '}overrides.</p>
        )}
        <Pager page={p} pages={pages} href={(n) => `/overrides?page=${n}${all ? '&all=1' : ''}`} />
      </Page>,
      extra.error ? (ERRORS[extra.error.code].status as PageStatus) : 200,
    );
  };

  return [
    { method: 'GET', path: '/overrides', access: 'admin', handler: (c) => page(c, { notice: c.req.query('done') === 'removed' ? 'Override removed.' : undefined }) },
    {
      method: 'POST',
      path: '/overrides',
      access: 'admin',
      handler: (c) => {
        const form = { action: field(c, 'action'), value: field(c, 'value').trim(), reason: field(c, 'reason'), expires: field(c, 'expires') };
        try {
          let expiresAt: string | null = null;
          if (form.expires) {
            if (!/^\d{4}-\d{2}-\d{2}$/.test(form.expires)) throw new OutpostError('E_INPUT', 'expiry must be a date (YYYY-MM-DD)');
            expiresAt = `${form.expires}T23:59:59Z`;
          }
          const row = addOverride(ui.db, { action: form.action, value: form.value, reason: form.reason, createdBy: c.get('session').user.name, expiresAt });
          ui.engine.refreshOverrides();
          return page(c, { notice: `Added: ${row.action} ${row.value} (override ${row.id}).` });
        } catch (e) {
          return page(c, { error: asOutpostError(e), form });
        }
      },
    },
    {
      method: 'POST',
      path: '/overrides/:id/remove',
      access: 'admin',
      handler: (c) => {
        try {
          removeOverride(ui.db, Number(c.req.param('id')), c.get('session').user.name);
          ui.engine.refreshOverrides();
          return c.redirect('/overrides?done=removed', 303);
        } catch (e) {
          return page(c, { error: asOutpostError(e) });
        }
      },
    },
  ];
}
