// Dashboard: generation, per-feed version and data age (stale/expired warnings), the export files' state, counts by type and
// feed with SVG charts, lookups and hits per day (lookup_counts, flushed by the sightings writer), and
// the latest package results.
import { currentGeneration, layout } from '../../appliance/db.ts';
import { exportsStatus } from '../../lookup/exports/index.ts';
import { applianceStatus, type ApplianceStatus } from '../../appliance/status.ts';
import { lookupsPerDay } from '../../lookup/sightings.ts';
import { BarChart, TimeChart } from '../chart.tsx';
import type { RouteDef, UiContext } from '../context.ts';
import { fmtAge, fmtInt, fmtTime, Page, Table } from '../layout.tsx';
import { PackageRows, type PackageRow } from './packages.tsx';

interface Counts {
  generation: number;
  status: ApplianceStatus;
  byFeedType: { feed: string; type: string; n: number }[];
}

/** Counting millions of rows takes a moment, so counts are kept per generation; ages are recomputed per view. */
function countsCache(ui: UiContext): () => Counts {
  let cached: Counts | null = null;
  return () => {
    const gen = currentGeneration(ui.db);
    if (!cached || cached.generation !== gen) {
      const status = applianceStatus(ui.db, ui.cfg.staleAfterS);
      const byFeedType = ui.db.prepare('SELECT feed, type, count(*) AS n FROM indicators GROUP BY feed, type ORDER BY feed, type').all() as Counts['byFeedType'];
      cached = { generation: gen, status, byFeedType };
    }
    return cached;
  };
}

function withAges(s: ApplianceStatus, staleAfterS: number, now = Date.now()): ApplianceStatus {
  const feeds = s.feeds.map((f) => {
    const age = Math.max(0, Math.floor((now - Date.parse(f.created)) / 1000));
    return { ...f, age_s: age, stale: age > staleAfterS };
  });
  const newest = feeds.length ? Math.min(...feeds.map((f) => f.age_s)) : null;
  const health = feeds.length === 0 ? 'empty' : newest !== null && newest > staleAfterS ? 'stale' : 'ok';
  return { ...s, feeds, data_age_s: newest, health };
}

export function dashboardRoutes(ui: UiContext): RouteDef[] {
  const counts = countsCache(ui);
  return [
    {
      method: 'GET',
      path: '/',
      access: 'viewer',
      handler: (c) => {
        const session = c.get('session');
        const { byFeedType, status: cachedStatus } = counts();
        const s = withAges(cachedStatus, ui.cfg.staleAfterS);
        const now = Date.now();
        const stale = s.feeds.filter((f) => f.stale);
        const expired = s.feeds.filter((f) => Date.parse(f.expires) <= now);
        const recent = ui.db.prepare('SELECT * FROM packages ORDER BY id DESC LIMIT 8').all() as PackageRow[];
        const stats = ui.engine.stats();
        // The files `serve` rewrites after each generation (minutes at 10M indicators): when, for which generation.
        const ex = exportsStatus(layout(ui.cfg.dataDir).exports);
        const perDay = lookupsPerDay(ui.db, 14);
        const types = Object.entries(s.by_type).sort((a, b) => b[1] - a[1]);
        const feedTypes = new Map<string, Record<string, number>>();
        for (const r of byFeedType) feedTypes.set(r.feed, { ...(feedTypes.get(r.feed) ?? {}), [r.type]: r.n });
        const allTypes = [...new Set(byFeedType.map((r) => r.type))].sort();
        return c.html(
          <Page title="Dashboard" session={session} active="/">
            {s.health === 'empty' ? (
              <p class="notice warn">
                No feed data is loaded yet: lookups answer "unknown". An admin can upload a signed package on the <a href="/packages">Packages</a> page.
              </p>
            ) : null}
            {s.health === 'stale' ? (
              <p class="notice bad" role="alert">
                <strong>Stale data:</strong> the newest feed data is {fmtAge(s.data_age_s)} old (limit {fmtAge(s.stale_after_s)}). /healthz reports
                "stale". Import a newer package.
              </p>
            ) : stale.length ? (
              <p class="notice warn">
                <strong>Stale feeds:</strong> {stale.map((f) => f.name).join(', ')} — older than {fmtAge(s.stale_after_s)}.
              </p>
            ) : null}
            {expired.length ? (
              <p class="notice warn">
                <strong>Expired packages:</strong> {expired.map((f) => f.name).join(', ')} — past the expiry their provider signed.
              </p>
            ) : null}
            <section class="tiles">
              <div class="tile">
                <span class="k">Health</span>
                <span class={`v health-${s.health}`}>{s.health}</span>
              </div>
              <div class="tile">
                <span class="k">Generation</span>
                <span class="v">{s.generation}</span>
                <small>serving {ui.engine.generation}</small>
              </div>
              <div class="tile">
                <span class="k">Indicators</span>
                <span class="v">{fmtInt(s.indicators)}</span>
              </div>
              <div class="tile">
                <span class="k">Data age</span>
                <span class="v">{fmtAge(s.data_age_s)}</span>
              </div>
              <div class="tile">
                <span class="k">Export files</span>
                <span class="v">{!ex ? 'none' : ex.running ? 'writing' : ex.generation !== null && ex.generation < s.generation ? 'behind' : 'current'}</span>
                <small>
                  {ex?.generated_at
                    ? `gen ${ex.generation ?? '?'}, ${fmtTime(ex.generated_at)}${ex.took_ms !== null ? `, ${(ex.took_ms / 1000).toFixed(1)} s` : ''}`
                    : 'not written yet'}
                </small>
              </div>
              <div class="tile">
                <span class="k">Lookups since start</span>
                <span class="v">{fmtInt(stats.lookups)}</span>
                <small>{fmtInt(stats.confirmedMatches)} matches</small>
              </div>
            </section>

            <section>
              <h2>Lookups and hits over time</h2>
              <TimeChart
                title="Lookups and hits over time (last 14 days, UTC)"
                labels={perDay.map((d) => d.day.slice(5))}
                series={[
                  { name: 'lookups', values: perDay.map((d) => d.lookups) },
                  { name: 'hits', tone: 'block', values: perDay.map((d) => d.matches) },
                ]}
              />
            </section>

            <h2>Feeds</h2>
            {s.feeds.length ? (
              <Table head={['Feed', 'Kind', 'Version', 'Indicators', 'Created', 'Age', 'Expires', 'Applied']}>
                {s.feeds.map((f) => (
                  <tr class={f.stale ? 'row-stale' : undefined}>
                    <td>
                      <strong>{f.name}</strong>
                    </td>
                    <td>
                      <span class={`badge kind-${f.kind}`}>{f.kind}</span>
                    </td>
                    <td class="num">{f.version}</td>
                    <td class="num">{fmtInt(f.count)}</td>
                    <td>{fmtTime(f.created)}</td>
                    <td>
                      {fmtAge(f.age_s)} {f.stale ? <span class="badge bad">stale</span> : null}
                    </td>
                    <td>
                      {fmtTime(f.expires)} {Date.parse(f.expires) <= now ? <span class="badge bad">expired</span> : null}
                    </td>
                    <td>{fmtTime(f.applied_at)}</td>
                  </tr>
                ))}
              </Table>
            ) : (
              <p class="muted">No feeds.</p>
            )}

            <div class="cols">
              <section>
                <h2>Indicators per feed</h2>
                <BarChart title="Indicators per feed" bars={s.feeds.map((f) => ({ label: f.name, value: f.count, tone: f.kind }))} />
              </section>
              <section>
                <h2>Indicators per type</h2>
                <BarChart title="Indicators per type" bars={types.map(([t, n]) => ({ label: t, value: n }))} />
              </section>
            </div>

            {allTypes.length ? (
              <>
                <h2>Counts by feed and type</h2>
                <Table head={['Feed', ...allTypes, 'Total']}>
                  {[...feedTypes.entries()].map(([feed, m]) => (
                    <tr>
                      <td>{feed}</td>
                      {allTypes.map((t) => (
                        <td class="num">{m[t] ? fmtInt(m[t]) : '—'}</td>
                      ))}
                      <td class="num">{fmtInt(Object.values(m).reduce((a, b) => a + b, 0))}</td>
                    </tr>
                  ))}
                </Table>
              </>
            ) : null}

            <h2>Latest package results</h2>
            {recent.length ? <PackageRows rows={recent} /> : <p class="muted">No packages received yet.</p>}
            <p>
              <a href="/packages">All packages →</a>
            </p>
          </Page>,
        );
      },
    },
  ];
}
