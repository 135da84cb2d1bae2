// Per-feed rollback (admin) with a confirm step: GET /rollback lists the feeds and whether a step back
// is possible, GET /rollback?feed=<name> asks for confirmation, POST /rollback runs sync/rollback.ts
// (the kept previous package re-verified and applied; a version floor keeps the next pull from undoing it).
import type { FC } from 'hono/jsx';
import { asOutpostError, ERRORS, OutpostError } from '../../appliance/errors.ts';
import { getFeed, type FeedRow } from '../../sync/apply.ts';
import { rollbackFeed } from '../../sync/rollback.ts';
import type { PageStatus, RouteDef, UiContext } from '../context.ts';
import { field, type Ctx } from '../guard.ts';
import { Csrf, ErrorBox, fmtInt, fmtTime, Page, Table } from '../layout.tsx';

/** Why a feed cannot be rolled back now, or null when it can (mirrors rollbackFeed's own refusals). */
export function rollbackBlocker(f: FeedRow): string | null {
  if (f.prev_version == null || !f.prev_package) return 'no previous version kept';
  if (f.floor_version != null && f.prev_version <= f.floor_version) return `already rolled back from version ${f.floor_version}`;
  return null;
}

/** The feeds table with a rollback link per feed (admins), shown on /rollback and on the packages page. */
export const FeedRollbacks: FC<{ feeds: FeedRow[]; admin: boolean }> = ({ feeds, admin }) =>
  !feeds.length ? (
    <p class="muted">No feeds yet.</p>
  ) : (
    <Table head={['Feed', 'Kind', 'Version', 'Indicators', 'Applied', 'Previous', ...(admin ? ['Rollback'] : [])]} class="feeds">
      {feeds.map((f) => {
        const blocker = rollbackBlocker(f);
        return (
          <tr>
            <td>{f.name}</td>
            <td>
              <span class={`badge kind-${f.kind}`}>{f.kind}</span>
            </td>
            <td class="num">{f.version}</td>
            <td class="num">{fmtInt(f.count)}</td>
            <td>{fmtTime(f.applied_at)}</td>
            <td class="num">{f.prev_version ?? '—'}</td>
            {admin ? <td>{blocker ? <span class="muted small">{blocker}</span> : <a href={`/rollback?feed=${encodeURIComponent(f.name)}`}>Roll back to {f.prev_version}…</a>}</td> : null}
          </tr>
        );
      })}
    </Table>
  );

export function rollbackRoutes(ui: UiContext): RouteDef[] {
  const feeds = () => ui.db.prepare('SELECT * FROM feeds ORDER BY name').all() as FeedRow[];
  const overview = (c: Ctx, extra: { error?: OutpostError; notice?: string } = {}) =>
    c.html(
      <Page title="Roll back a feed" session={c.get('session')} active="/packages" notice={extra.notice}>
        {extra.error ? <ErrorBox code={extra.error.code} message={extra.error.message} /> : null}
        <p class="muted">A rollback re-applies the kept package of the previous version (verified again). Versions up to the one rolled back from stay refused until the provider publishes a newer one.</p>
        <FeedRollbacks feeds={feeds()} admin={true} />
        <p>
          <a href="/packages">← Packages</a>
        </p>
      </Page>,
      extra.error ? (ERRORS[extra.error.code].status as PageStatus) : 200,
    );

  return [
    {
      method: 'GET',
      path: '/rollback',
      access: 'admin',
      handler: (c) => {
        const name = c.req.query('feed');
        if (!name) return overview(c);
        const session = c.get('session');
        const f = getFeed(ui.db, name);
        if (!f) return overview(c, { error: new OutpostError('E_NOT_FOUND', `no feed "${name}" on this appliance`) });
        const blocker = rollbackBlocker(f);
        if (blocker) return overview(c, { error: new OutpostError('E_CONFLICT', `feed "${f.name}" cannot be rolled back: ${blocker}`) });
        return c.html(
          <Page title={`Roll back ${f.name}?`} session={session} active="/packages">
            <p class="notice bad" role="alert">
              Feed <strong>{f.name}</strong> goes back from version {f.version} ({fmtInt(f.count)} indicators) to version {f.prev_version}. Versions up to {f.version} will then be refused until the provider
              publishes a newer one.
            </p>
            <div class="actions">
              <form method="post" action="/rollback">
                <Csrf session={session} />
                <input type="hidden" name="feed" value={f.name} />
                <input type="hidden" name="from" value={String(f.version)} />
                <button type="submit" class="danger">
                  Roll back {f.name} to version {f.prev_version}
                </button>
              </form>
              <a href="/packages" class="button secondary">
                Cancel
              </a>
            </div>
          </Page>,
        );
      },
    },
    {
      method: 'POST',
      path: '/rollback',
      access: 'admin',
      handler: async (c) => {
        const name = field(c, 'feed');
        try {
          if (!name) throw new OutpostError('E_INPUT', 'which feed? (feed is required)');
          const f = getFeed(ui.db, name);
          // The confirmation named a version: if the feed moved since (a sync), the admin confirmed something else.
          if (f && field(c, 'from') && String(f.version) !== field(c, 'from')) {
            throw new OutpostError('E_CONFLICT', `feed "${name}" is at version ${f.version} now, not ${field(c, 'from')} as confirmed; review and confirm again`);
          }
          const r = await rollbackFeed(ui.cfg, ui.db, name, { actor: c.get('session').user.name });
          ui.log.info({ feed: r.feed, from: r.from_version, to: r.to_version, actor: c.get('session').user.name }, 'feed rolled back from the console');
          return overview(c, { notice: `Rolled ${r.feed} back from version ${r.from_version} to ${r.to_version} (${fmtInt(r.total)} indicators; generation ${r.generation}).` });
        } catch (e) {
          return overview(c, { error: asOutpostError(e) });
        }
      },
    },
  ];
}
