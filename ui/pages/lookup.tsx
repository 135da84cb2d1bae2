// Lookup: paste one or many values (defanged accepted), see each verdict with the matches behind it.
// Values are POSTed, never put in a URL, so they stay out of proxy logs and browser history. Results go
// to the hit log as client `console:<username>`, like the API's lookups under their token name.
import type { FC } from 'hono/jsx';
import type { LookupResult } from '../../appliance/types.ts';
import type { RouteDef, UiContext } from '../context.ts';
import { Csrf, ErrorBox, fmtInt, fmtTime, Page, Table } from '../layout.tsx';
import { field } from '../guard.ts';

/** Most values per submission; bigger batches belong to the API's NDJSON stream. */
const MAX_VALUES = 1000;

export function splitValues(text: string): string[] {
  return text
    .split(/[\s]+/)
    .map((v) => v.trim())
    .filter(Boolean);
}

const Result: FC<{ r: LookupResult }> = ({ r }) => (
  <tr class={`verdict-${r.verdict}`}>
    <td class="wrap">
      <code>{r.value}</code>
      {r.normalized && r.normalized !== r.value ? (
        <div class="muted small">
          → <code>{r.normalized}</code>
        </div>
      ) : null}
    </td>
    <td>{r.type}</td>
    <td>
      <span class={`badge v-${r.verdict}`}>{r.verdict}</span>
      {r.confidence ? <small> {r.confidence}</small> : null}
    </td>
    <td class="wrap">
      {r.error ? <span class="muted">{r.error}</span> : null}
      {r.rule ? <div class="small">{r.rule}</div> : null}
      {r.matches.length ? (
        <ul class="matches">
          {r.matches.map((m) => (
            <li>
              <strong>{m.feed}</strong>
              {m.feed_kind ? <span class={`badge kind-${m.feed_kind}`}>{m.feed_kind}</span> : null} {m.kind} match on <code>{m.indicator}</code>
              {m.category ? <> · {m.category}</> : null} · confidence {m.confidence}
              {m.ports?.length ? <> · ports {m.ports.join(', ')}</> : null}
              {m.tags?.length ? <> · tags {m.tags.join(', ')}</> : null}
              <div class="muted small">
                first seen {fmtTime(m.first_seen)} · last seen {fmtTime(m.last_seen)} · expires {fmtTime(m.expires_at)}
              </div>
              {m.context ? <div class="muted small wrap">context {JSON.stringify(m.context)}</div> : null}
            </li>
          ))}
        </ul>
      ) : r.type !== 'invalid' ? (
        <span class="muted">not listed</span>
      ) : null}
    </td>
  </tr>
);

export function lookupRoutes(ui: UiContext): RouteDef[] {
  const max = Math.min(MAX_VALUES, ui.cfg.maxBatch);
  const form = (session: Parameters<typeof Csrf>[0]['session'], text: string) => (
    <form method="post" action="/lookup" class="card">
      <Csrf session={session} />
      <label>
        <span>
          Values — IPs, domains, URLs, hashes, e-mail addresses; one per line or separated by spaces; defanged forms such as <code>hxxp://evil[.]example</code>{' '}
          are accepted (up to {max})
        </span>
        <textarea name="values" rows={8} required spellcheck={false}>
          {text}
        </textarea>
      </label>
      <button type="submit">Look up</button>
    </form>
  );
  return [
    {
      method: 'GET',
      path: '/lookup',
      access: 'viewer',
      handler: (c) => {
        const session = c.get('session');
        return c.html(
          <Page title="Lookup" session={session} active="/lookup">
            {form(session, '')}
          </Page>,
        );
      },
    },
    {
      method: 'POST',
      path: '/lookup',
      access: 'viewer',
      handler: (c) => {
        const session = c.get('session');
        const text = field(c, 'values');
        const values = splitValues(text);
        if (values.length > max || values.length === 0) {
          return c.html(
            <Page title="Lookup" session={session} active="/lookup">
              <ErrorBox code={values.length ? 'E_TOO_LARGE' : 'E_INPUT'} message={values.length ? `${values.length} values; at most ${max} per lookup here (use the API for more)` : 'enter at least one value'} />
              {form(session, text.slice(0, 200_000))}
            </Page>,
            values.length ? 413 : 400,
          );
        }
        const results = ui.engine.lookupMany(values);
        if (ui.sightings) {
          ui.sightings.recordMany(results, `console:${session.user.name}`);
          // Flushed now so the hits page shows what was just looked up; a busy database only defers it.
          try {
            ui.sightings.flush();
          } catch (err) {
            ui.log.warn({ err }, 'sightings flush after console lookup failed; retried by the writer');
          }
        }
        const tally: Record<string, number> = {};
        for (const r of results) tally[r.type === 'invalid' ? 'invalid' : r.verdict] = (tally[r.type === 'invalid' ? 'invalid' : r.verdict] ?? 0) + 1;
        const gen = results[0]?.generation;
        return c.html(
          <Page title="Lookup" session={session} active="/lookup">
            {form(session, text)}
            <p class="tally">
              {fmtInt(results.length)} value{results.length === 1 ? '' : 's'}:{' '}
              {['malicious', 'suspicious', 'benign', 'unknown', 'invalid']
                .filter((k) => tally[k])
                .map((k) => (
                  <span class={`badge v-${k}`}>
                    {tally[k]} {k}
                  </span>
                ))}{' '}
              <small class="muted">generation {gen}</small>
            </p>
            <Table head={['Value', 'Type', 'Verdict', 'Why']} class="results">
              {results.map((r) => (
                <Result r={r} />
              ))}
            </Table>
          </Page>,
        );
      },
    },
  ];
}
