// Hits: what this site's clients looked up that matched (the sighting log of lookup/sightings.ts) —
// top or most recent values, filtered by client, feed and type through query parameters, a hits-per-day
// chart, and (admin) "mark false positive", which creates a local allow override for the value.
import { asOutpostError, ERRORS, OutpostError } from '../../appliance/errors.ts';
import { markFalsePositive } from '../../lookup/sightings.ts';
import { BarChart } from '../chart.tsx';
import type { PageStatus, RouteDef, UiContext } from '../context.ts';
import { field, type Ctx } from '../guard.ts';
import { Csrf, ErrorBox, fmtInt, fmtTime, Page, Pager, parsePage, Table } from '../layout.tsx';

const PAGE_SIZE = 50;
const CHART_DAYS = 14;

interface HitRow {
  type: string;
  value: string;
  hits: number;
  last_ts: number;
  clients: string | null;
  feeds: string | null;
  total: number;
  first_seen: number;
  last_verdict: string | null;
  false_positive_at: string | null;
}

export interface HitFilter {
  client: string;
  feed: string;
  type: string;
  /** 'top' (most hits first) or 'recent' (latest sighting first). */
  order: 'top' | 'recent';
}

const iso = (s: number) => new Date(s * 1000).toISOString();

/** WHERE clause over sighting_log `l` for the filter; feeds are stored comma-joined. */
function where(f: HitFilter): { sql: string; args: string[] } {
  const parts: string[] = [];
  const args: string[] = [];
  if (f.client) parts.push('l.client = ?'), args.push(f.client);
  if (f.type) parts.push('l.type = ?'), args.push(f.type);
  if (f.feed) parts.push("instr(',' || coalesce(l.feeds, '') || ',', ',' || ? || ',') > 0"), args.push(f.feed);
  return { sql: parts.length ? `WHERE ${parts.join(' AND ')}` : '', args };
}

export function queryHits(ui: UiContext, f: HitFilter, page: number): { rows: HitRow[]; total: number } {
  const w = where(f);
  const total = (ui.db.prepare(`SELECT count(*) AS n FROM (SELECT 1 FROM sighting_log l ${w.sql} GROUP BY l.type, l.value)`).get(...w.args) as { n: number }).n;
  const order = f.order === 'recent' ? 'last_ts DESC, hits DESC' : 'hits DESC, last_ts DESC';
  const rows = ui.db
    .prepare(
      `SELECT l.type, l.value, sum(l.count) AS hits, max(l.ts) AS last_ts, group_concat(DISTINCT l.client) AS clients, group_concat(DISTINCT l.feeds) AS feeds,
              s.count AS total, s.first_seen, s.last_verdict, s.false_positive_at
         FROM sighting_log l JOIN sightings s ON s.type = l.type AND s.value = l.value
         ${w.sql}
        GROUP BY l.type, l.value
        ORDER BY ${order}, l.value
        LIMIT ? OFFSET ?`,
    )
    .all(...w.args, PAGE_SIZE, (page - 1) * PAGE_SIZE) as HitRow[];
  return { rows, total };
}

/** Sightings per UTC day over the last CHART_DAYS days (days without hits shown as 0). */
function perDay(ui: UiContext, f: HitFilter): { label: string; value: number }[] {
  const w = where(f);
  const since = Math.floor(Date.now() / 1000 / 86_400 - (CHART_DAYS - 1)) * 86_400;
  const rows = ui.db
    .prepare(`SELECT date(l.ts, 'unixepoch') AS day, sum(l.count) AS n FROM sighting_log l ${w.sql ? `${w.sql} AND` : 'WHERE'} l.ts >= ? GROUP BY day`)
    .all(...w.args, since) as { day: string; n: number }[];
  const by = new Map(rows.map((r) => [r.day, r.n]));
  return Array.from({ length: CHART_DAYS }, (_, i) => {
    const day = new Date((since + i * 86_400) * 1000).toISOString().slice(0, 10);
    return { label: day, value: by.get(day) ?? 0 };
  });
}

const uniq = (s: string | null) => [...new Set((s ?? '').split(',').filter(Boolean))].sort();

export function hitRoutes(ui: UiContext): RouteDef[] {
  const page = (c: Ctx, extra: { error?: OutpostError; notice?: string } = {}) => {
    const session = c.get('session');
    const admin = session.user.role === 'admin';
    const q = (k: string) => (c.req.query(k) ?? '').trim().slice(0, 300);
    const f: HitFilter = { client: q('client'), feed: q('feed'), type: q('type'), order: q('order') === 'recent' ? 'recent' : 'top' };
    const types = (ui.db.prepare('SELECT DISTINCT type FROM sightings ORDER BY type').all() as { type: string }[]).map((r) => r.type);
    const { total } = queryHits(ui, f, 1);
    const pages = Math.max(1, Math.ceil(total / PAGE_SIZE));
    const p = Math.min(parsePage(c.req.query('page')), pages);
    const { rows } = queryHits(ui, f, p);
    const qs = (over: Partial<HitFilter> & { page?: number }) => {
      const all = { ...f, ...over };
      const u = new URLSearchParams();
      if (all.client) u.set('client', all.client);
      if (all.feed) u.set('feed', all.feed);
      if (all.type) u.set('type', all.type);
      if (all.order !== 'top') u.set('order', all.order);
      if (over.page && over.page > 1) u.set('page', String(over.page));
      const s = u.toString();
      return `/hits${s ? `?${s}` : ''}`;
    };
    return c.html(
      <Page title="Hits" session={session} active="/hits" notice={extra.notice}>
        {extra.error ? <ErrorBox code={extra.error.code} message={extra.error.message} /> : null}
        <h2>Hits per day (last {CHART_DAYS} days)</h2>
        <BarChart bars={perDay(ui, f)} title={`sightings per day, last ${CHART_DAYS} days`} />
        <form method="get" action="/hits" class="card inline filters-form">
          <label>
            Client
            <input name="client" value={f.client} maxlength={300} />
          </label>
          <label>
            Feed
            <input name="feed" value={f.feed} maxlength={300} />
          </label>
          <label>
            Type
            <select name="type">
              <option value="">any</option>
              {types.map((t) => (
                <option value={t} selected={t === f.type}>
                  {t}
                </option>
              ))}
            </select>
          </label>
          <label>
            Order
            <select name="order">
              <option value="top" selected={f.order === 'top'}>
                top (most hits)
              </option>
              <option value="recent" selected={f.order === 'recent'}>
                recent
              </option>
            </select>
          </label>
          <button type="submit">Filter</button>
        </form>
        <p class="muted">
          {fmtInt(total)} value{total === 1 ? '' : 's'} sighted{f.client || f.feed || f.type ? ' matching the filter' : ''}.
        </p>
        {rows.length ? (
          <Table head={['Type', 'Value', 'Hits', 'All time', 'First seen', 'Last seen', 'Clients', 'Feeds', 'Verdict', ...(admin ? ['False positive'] : [])]} class="hits">
            {rows.map((r) => (
              <tr>
                <td>{r.type}</td>
                <td class="wrap">
                  <code>{r.value}</code>
                </td>
                <td class="num">{fmtInt(r.hits)}</td>
                <td class="num">{fmtInt(r.total)}</td>
                <td>{fmtTime(iso(r.first_seen))}</td>
                <td>{fmtTime(iso(r.last_ts))}</td>
                <td class="wrap">
                  {uniq(r.clients).map((cl) => (
                    <a href={qs({ client: cl, page: 1 })}>{cl} </a>
                  ))}
                </td>
                <td class="wrap">
                  {uniq(r.feeds).map((fd) => (
                    <a href={qs({ feed: fd, page: 1 })}>{fd} </a>
                  ))}
                </td>
                <td>{r.last_verdict ? <span class={`badge v-${r.last_verdict}`}>{r.last_verdict}</span> : '—'}</td>
                {admin ? (
                  <td>
                    {r.false_positive_at ? (
                      <span class="badge ok">marked {fmtTime(r.false_positive_at)}</span>
                    ) : (
                      <form method="post" action="/hits/false-positive" class="fp">
                        <Csrf session={session} />
                        <input type="hidden" name="value" value={r.value} />
                        <input name="reason" required maxlength={1000} placeholder="why" aria-label={`reason for ${r.value}`} />
                        <button type="submit" class="small">
                          Mark false positive
                        </button>
                      </form>
                    )}
                  </td>
                ) : null}
              </tr>
            ))}
          </Table>
        ) : (
          <p class="muted">No hits{f.client || f.feed || f.type ? ' for this filter' : ' yet'}.</p>
        )}
        <Pager page={p} pages={pages} href={(n) => qs({ page: n })} />
      </Page>,
      extra.error ? (ERRORS[extra.error.code].status as PageStatus) : 200,
    );
  };

  return [
    // As the API's hit routes: what was just looked up (here or by an HTTP worker) is written first.
    {
      method: 'GET',
      path: '/hits',
      access: 'viewer',
      handler: async (c) => {
        await ui.sightings?.flushAll();
        return page(c);
      },
    },
    {
      method: 'POST',
      path: '/hits/false-positive',
      access: 'admin',
      handler: async (c) => {
        await ui.sightings?.flushAll();
        try {
          const r = markFalsePositive(ui.db, field(c, 'value'), field(c, 'reason'), c.get('session').user.name);
          ui.engine.refreshOverrides();
          return page(c, { notice: `${r.value} marked as a false positive: allow override ${r.override.id} created.` });
        } catch (e) {
          return page(c, { error: asOutpostError(e) });
        }
      },
    },
  ];
}
