// Trusted provider keys: everyone signed in sees them and their add/revoke history; admins add one by
// pasting its PEM public key, or revoke one (packages it signed are refused from then on).
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { layout } from '../../appliance/db.ts';
import { asOutpostError, ERRORS, OutpostError } from '../../appliance/errors.ts';
import { trustAdd, trustList, trustRemove } from '../../sync/trust.ts';
import type { PageStatus, RouteDef, UiContext } from '../context.ts';
import { field, type Ctx } from '../guard.ts';
import { Csrf, DangerButton, ErrorBox, fmtTime, Page, Table } from '../layout.tsx';

const MAX_PEM = 8 * 1024;

export function keyRoutes(ui: UiContext): RouteDef[] {
  const page = (c: Ctx, extra: { error?: OutpostError; notice?: string; pem?: string; label?: string } = {}) => {
    const session = c.get('session');
    const admin = session.user.role === 'admin';
    const rows = trustList(ui.db).reverse();
    const history = ui.db.prepare("SELECT ts, actor, action, subject FROM audit WHERE action IN ('trust.add', 'trust.remove') ORDER BY id DESC LIMIT 20").all() as {
      ts: string;
      actor: string;
      action: string;
      subject: string | null;
    }[];
    return c.html(
      <Page title="Trusted keys" session={session} active="/keys" notice={extra.notice}>
        {extra.error ? <ErrorBox code={extra.error.code} message={extra.error.message} /> : null}
        <p class="muted">Packages are applied only when signed (Ed25519) by an active key listed here.</p>
        {rows.length ? (
          <Table head={['Key id', 'Label', 'Added', 'State', ...(admin ? [''] : [])]}>
            {rows.map((k) => (
              <tr class={k.revoked_at ? 'row-off' : undefined}>
                <td>
                  <code>{k.key_id}</code>
                </td>
                <td>{k.label ?? ''}</td>
                <td>{fmtTime(k.added_at)}</td>
                <td>{k.revoked_at ? <span class="badge bad">revoked {fmtTime(k.revoked_at)}</span> : <span class="badge ok">active</span>}</td>
                {admin ? (
                  <td>
                    {!k.revoked_at ? (
                      <DangerButton session={session} action={`/keys/${encodeURIComponent(k.key_id)}/revoke`} label="Revoke" />
                    ) : null}
                  </td>
                ) : null}
              </tr>
            ))}
          </Table>
        ) : (
          <p class="notice warn">No trusted keys: every package will be refused (E_UNKNOWN_KEY).</p>
        )}
        {admin ? (
          <form method="post" action="/keys" class="card">
            <Csrf session={session} />
            <h2>Trust a provider key</h2>
            <label>
              Label
              <input name="label" maxlength={200} value={extra.label ?? ''} placeholder="who gave it to you, and when" />
            </label>
            <label>
              <span>
                Public key (PEM, as written by <code>outpost provider keygen</code> to <code>provider.pub</code>)
              </span>
              <textarea name="pem" rows={4} required spellcheck={false} placeholder="-----BEGIN PUBLIC KEY-----">
                {extra.pem ?? ''}
              </textarea>
            </label>
            <button type="submit">Add key</button>
          </form>
        ) : null}
        {history.length ? (
          <>
            <h2>Key history</h2>
            <Table head={['When', 'Who', 'What', 'Key id']}>
              {history.map((h) => (
                <tr>
                  <td>{fmtTime(h.ts)}</td>
                  <td>{h.actor}</td>
                  <td>{h.action === 'trust.add' ? 'added' : 'revoked'}</td>
                  <td>
                    <code>{h.subject}</code>
                  </td>
                </tr>
              ))}
            </Table>
          </>
        ) : null}
      </Page>,
      extra.error ? (ERRORS[extra.error.code].status as PageStatus) : 200,
    );
  };

  return [
    { method: 'GET', path: '/keys', access: 'viewer', handler: (c) => page(c, { notice: c.req.query('done') === 'revoked' ? 'Key revoked.' : undefined }) },
    {
      method: 'POST',
      path: '/keys',
      access: 'admin',
      handler: (c) => {
        const pem = field(c, 'pem').trim();
        const label = field(c, 'label').trim().slice(0, 200);
        // trustAdd reads a key file: the pasted PEM goes to a private temp file in staging, removed at once.
        const tmp = path.join(layout(ui.cfg.dataDir).staging, `console-key-${crypto.randomBytes(8).toString('hex')}.pub`);
        try {
          if (!pem.includes('-----BEGIN PUBLIC KEY-----')) throw new OutpostError('E_KEY', 'paste a PEM public key (-----BEGIN PUBLIC KEY----- …)');
          if (pem.length > MAX_PEM) throw new OutpostError('E_KEY', 'that is too long for a public key');
          fs.mkdirSync(path.dirname(tmp), { recursive: true, mode: 0o700 });
          fs.writeFileSync(tmp, pem + '\n', { mode: 0o600, flag: 'wx' });
          const row = trustAdd(ui.db, tmp, { label: label || undefined, actor: c.get('session').user.name });
          return page(c, { notice: `Trusted key ${row.key_id}.` });
        } catch (e) {
          return page(c, { error: asOutpostError(e), pem: pem.slice(0, MAX_PEM), label });
        } finally {
          fs.rmSync(tmp, { force: true });
        }
      },
    },
    {
      method: 'POST',
      path: '/keys/:id/revoke',
      access: 'admin',
      handler: (c) => {
        try {
          trustRemove(ui.db, c.req.param('id') ?? '', c.get('session').user.name);
          return c.redirect('/keys?done=revoked', 303);
        } catch (e) {
          return page(c, { error: asOutpostError(e) });
        }
      },
    },
  ];
}
