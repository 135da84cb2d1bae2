// Audit log (admin): search, paginate, download as CSV. Every write the appliance makes leaves a row.
import type { AuditRow, DB } from '../../appliance/db.ts';
import type { RouteDef, UiContext } from '../context.ts';
import type { Ctx } from '../guard.ts';
import { fmtInt, fmtTime, Page, Pager, parsePage, Table } from '../layout.tsx';

const PAGE_SIZE = 50;
/** A CSV download is capped so one click cannot build an unbounded response in memory. */
const CSV_MAX_ROWS = 100_000;

interface Filter {
  q: string;
  failures: boolean;
}

function filterOf(c: Ctx): Filter {
  return { q: (c.req.query('q') ?? '').slice(0, 200), failures: c.req.query('failures') === '1' };
}

function whereOf(f: Filter): { sql: string; args: string[] } {
  const parts: string[] = [];
  const args: string[] = [];
  if (f.q) {
    const like = `%${f.q.replace(/[\\%_]/g, (ch) => `\\${ch}`)}%`;
    parts.push("(actor LIKE ? ESCAPE '\\' OR action LIKE ? ESCAPE '\\' OR code LIKE ? ESCAPE '\\' OR subject LIKE ? ESCAPE '\\' OR detail LIKE ? ESCAPE '\\')");
    args.push(like, like, like, like, like);
  }
  if (f.failures) parts.push('code IS NOT NULL');
  return { sql: parts.length ? `WHERE ${parts.join(' AND ')}` : '', args };
}

function query(f: Filter): string {
  const p = new URLSearchParams();
  if (f.q) p.set('q', f.q);
  if (f.failures) p.set('failures', '1');
  const s = p.toString();
  return s ? `?${s}` : '';
}

/** RFC 4180 quoting, plus a leading ' on cells a spreadsheet would run as a formula. */
export function csvCell(v: unknown): string {
  let s = v === null || v === undefined ? '' : String(v);
  if (/^[=+\-@\t\r]/.test(s)) s = `'${s}`;
  return /[",\r\n']/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/**
 * CSV in chunks of rows fetched by id (keyset paging). No statement stays open between chunks: an open
 * better-sqlite3 iterator would block every other query on the shared connection while the client reads.
 */
function csvChunks(db: DB, f: Filter): () => string | null {
  const w = whereOf(f);
  const cond = w.sql ? `${w.sql} AND id < ?` : 'WHERE id < ?';
  const stmt = db.prepare(`SELECT * FROM audit ${cond} ORDER BY id DESC LIMIT 500`);
  let before = Number.MAX_SAFE_INTEGER;
  let sent = 0;
  let header = true;
  return () => {
    if (header) {
      header = false;
      return 'id,ts,actor,action,code,subject,detail\r\n';
    }
    if (sent >= CSV_MAX_ROWS) return null;
    const rows = stmt.all(...w.args, before) as AuditRow[];
    if (!rows.length) return null;
    before = rows[rows.length - 1].id;
    sent += rows.length;
    return rows.map((r) => [r.id, r.ts, r.actor, r.action, r.code, r.subject, r.detail].map(csvCell).join(',') + '\r\n').join('');
  };
}

export function auditRoutes(ui: UiContext): RouteDef[] {
  return [
    {
      method: 'GET',
      path: '/audit',
      access: 'admin',
      handler: (c) => {
        const session = c.get('session');
        const f = filterOf(c);
        const w = whereOf(f);
        const total = (ui.db.prepare(`SELECT count(*) AS n FROM audit ${w.sql}`).get(...w.args) as { n: number }).n;
        const pages = Math.max(1, Math.ceil(total / PAGE_SIZE));
        const page = Math.min(parsePage(c.req.query('page')), pages);
        const rows = ui.db.prepare(`SELECT * FROM audit ${w.sql} ORDER BY id DESC LIMIT ? OFFSET ?`).all(...w.args, PAGE_SIZE, (page - 1) * PAGE_SIZE) as AuditRow[];
        const qs = query(f);
        return c.html(
          <Page title="Audit log" session={session} active="/audit">
            <form method="get" action="/audit" class="card inline">
              <label>
                Search
                <input name="q" value={f.q} maxlength={200} placeholder="actor, action, code, subject…" type="search" />
              </label>
              <label class="check">
                <input type="checkbox" name="failures" value="1" checked={f.failures} /> refusals only
              </label>
              <button type="submit">Search</button>
              <a class="button secondary" href={`/audit.csv${qs}`}>
                Download CSV
              </a>
            </form>
            <p class="muted">{fmtInt(total)} entries</p>
            <Table head={['#', 'When', 'Actor', 'Action', 'Code', 'Subject', 'Detail']}>
              {rows.map((r) => (
                <tr class={r.code ? 'row-bad' : undefined}>
                  <td class="num">{r.id}</td>
                  <td>{fmtTime(r.ts)}</td>
                  <td>{r.actor}</td>
                  <td>{r.action}</td>
                  <td>{r.code ? <code>{r.code}</code> : ''}</td>
                  <td class="wrap">{r.subject ?? ''}</td>
                  <td class="wrap small">{r.detail ?? ''}</td>
                </tr>
              ))}
            </Table>
            <Pager page={page} pages={pages} href={(p) => `/audit${qs ? `${qs}&` : '?'}page=${p}`} />
          </Page>,
        );
      },
    },
    {
      method: 'GET',
      path: '/audit.csv',
      access: 'admin',
      handler: (c) => {
        const f = filterOf(c);
        const next = csvChunks(ui.db, f);
        const enc = new TextEncoder();
        const body = new ReadableStream<Uint8Array>({
          pull(controller) {
            const chunk = next();
            if (chunk === null) controller.close();
            else controller.enqueue(enc.encode(chunk));
          },
        });
        const stamp = new Date().toISOString().slice(0, 19).replace(/[:T]/g, '-');
        return c.body(body, 200, {
          'Content-Type': 'text/csv; charset=utf-8',
          'Content-Disposition': `attachment; filename="outpost-audit-${stamp}.csv"`,
        });
      },
    },
  ];
}
