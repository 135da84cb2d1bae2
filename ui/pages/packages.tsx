// Packages: history of accepted and rejected packages with their codes and source reports, and the
// offline upload (admin): save privately → dry run (verify, sequence check) → admin confirms → apply.
import type { FC } from 'hono/jsx';
import { audit } from '../../appliance/db.ts';
import { asOutpostError, ERRORS, OutpostError } from '../../appliance/errors.ts';
import type { Manifest, SourceReport } from '../../appliance/types.ts';
import { importPackage } from '../../sync/import.ts';
import type { PageStatus, RouteDef, UiContext } from '../context.ts';
import { field, type Ctx } from '../guard.ts';
import { Csrf, ErrorBox, fmtInt, fmtTime, Page, Pager, parsePage, Table } from '../layout.tsx';
// ---- issue 7: dry-run diff samples, per-feed rollback ----
import { isReferenceManifest } from '../../sync/reference.ts';
import type { FeedRow } from '../../sync/apply.ts';
import { diffPackage, DiffSummary, type PackageDiff } from './package-diff.tsx';
import { FeedRollbacks } from './rollback.tsx';
// ---- end issue 7 ----

export interface PackageRow {
  id: number;
  received_at: string;
  source: string;
  feed: string | null;
  version: number | null;
  type: string | null;
  sha256: string | null;
  status: 'accepted' | 'rejected' | 'dry-run';
  code: string | null;
  message: string | null;
  summary: string | null;
}

interface Summary {
  added?: number;
  removed?: number;
  total?: number;
  sources?: SourceReport[];
}

function parseSummary(s: string | null): Summary {
  if (!s) return {};
  try {
    const v = JSON.parse(s) as Summary;
    return v && typeof v === 'object' ? v : {};
  } catch {
    return {};
  }
}

const PAGE_SIZE = 50;

export const PackageRows: FC<{ rows: PackageRow[] }> = ({ rows }) => (
  <Table head={['#', 'Received', 'Source', 'Feed', 'Version', 'Type', 'Result', 'Details']}>
    {rows.map((r) => {
      const s = parseSummary(r.summary);
      return (
        <tr>
          <td>
            <a href={`/packages/${r.id}`}>{r.id}</a>
          </td>
          <td>{fmtTime(r.received_at)}</td>
          <td class="wrap">{r.source}</td>
          <td>{r.feed ?? '—'}</td>
          <td class="num">{r.version ?? '—'}</td>
          <td>{r.type ?? '—'}</td>
          <td>
            <span class={`badge ${r.status === 'accepted' ? 'ok' : 'bad'}`}>{r.status}</span>
          </td>
          <td class="wrap">
            {r.code ? (
              <>
                <code>{r.code}</code> {r.message}
              </>
            ) : s.total !== undefined ? (
              `+${fmtInt(s.added)} −${fmtInt(s.removed)} = ${fmtInt(s.total)}`
            ) : (
              r.message ?? ''
            )}
          </td>
        </tr>
      );
    })}
  </Table>
);

/** The provider's per-file report: what was read, refused and why (malformed samples included). */
export const SourceReports: FC<{ sources: SourceReport[] | undefined }> = ({ sources }) =>
  !sources?.length ? (
    <p class="muted">The package carries no source report.</p>
  ) : (
    <>
      <Table head={['Source file', 'Format', 'Lines', 'Accepted', 'Malformed', 'Duplicates', 'Skipped']}>
        {sources.map((s) => (
          <tr>
            <td class="wrap">{s.file}</td>
            <td>{s.format}</td>
            <td class="num">{fmtInt(s.lines)}</td>
            <td class="num">{fmtInt(s.accepted)}</td>
            <td class="num">{fmtInt(s.malformed)}</td>
            <td class="num">{fmtInt(s.duplicates)}</td>
            <td class="num">{fmtInt(s.skipped)}</td>
          </tr>
        ))}
      </Table>
      {sources
        .filter((s) => s.samples?.length || s.notes?.length)
        .map((s) => (
          <details class="samples">
            <summary>
              {s.file}: {s.samples.length} malformed sample{s.samples.length === 1 ? '' : 's'}
            </summary>
            {s.notes?.length ? (
              <ul>
                {s.notes.map((n) => (
                  <li>{n}</li>
                ))}
              </ul>
            ) : null}
            <Table head={['Line', 'Text', 'Why refused']} class="sample-table">
              {s.samples.map((x) => (
                <tr>
                  <td class="num">{x.line}</td>
                  <td class="wrap">
                    <code>{x.text}</code>
                  </td>
                  <td>{x.error}</td>
                </tr>
              ))}
            </Table>
          </details>
        ))}
    </>
  );

const ManifestSummary: FC<{ m: Manifest; sha256: string }> = ({ m, sha256 }) => (
  <dl class="facts">
    <dt>Feed</dt>
    <dd>
      <strong>{m.feed}</strong> <span class={`badge kind-${m.kind}`}>{m.kind}</span>
    </dd>
    <dt>Version</dt>
    <dd>
      {m.version} ({m.type}
      {m.base_version !== undefined ? ` against base ${m.base_version}` : ''})
    </dd>
    <dt>Created / expires</dt>
    <dd>
      {fmtTime(m.created)} / {fmtTime(m.expires)}
    </dd>
    <dt>Signed by key</dt>
    <dd>
      <code>{m.key_id}</code>
    </dd>
    <dt>Package sha256</dt>
    <dd>
      <code class="wrap">{sha256}</code>
    </dd>
    <dt>Indicators</dt>
    <dd>
      {fmtInt(m.counts.total)}
      {m.counts.added !== undefined ? ` (+${fmtInt(m.counts.added)} −${fmtInt(m.counts.removed)})` : ''}
    </dd>
    <dt>By type</dt>
    <dd>
      {Object.entries(m.counts.by_type)
        .map(([t, n]) => `${t} ${fmtInt(n)}`)
        .join(' · ') || '—'}
    </dd>
  </dl>
);

/** Control characters and overlong names are trimmed for display; the name is never used as a path. */
function displayName(name: string): string {
  const clean = name.replace(/[\u0000-\u001f\u007f]/g, '?');
  return clean.length > 200 ? `${clean.slice(0, 199)}…` : clean || '(unnamed)';
}

function statusOf(code: keyof typeof ERRORS): PageStatus {
  return ERRORS[code].status as PageStatus;
}

export function packageRoutes(ui: UiContext): RouteDef[] {
  const list = (c: Ctx, extra?: { error?: OutpostError; status?: PageStatus; notice?: string }) => {
    const session = c.get('session');
    const status = c.req.query('status');
    const where = status === 'accepted' || status === 'rejected' ? 'WHERE status = ?' : '';
    const args = where ? [status] : [];
    const total = (ui.db.prepare(`SELECT count(*) AS n FROM packages ${where}`).get(...args) as { n: number }).n;
    const pages = Math.max(1, Math.ceil(total / PAGE_SIZE));
    const page = Math.min(parsePage(c.req.query('page')), pages);
    const rows = ui.db.prepare(`SELECT * FROM packages ${where} ORDER BY id DESC LIMIT ? OFFSET ?`).all(...args, PAGE_SIZE, (page - 1) * PAGE_SIZE) as PackageRow[];
    const href = (p: number) => `/packages?page=${p}${where ? `&status=${status}` : ''}`;
    return c.html(
      <Page title="Packages" session={session} active="/packages" notice={extra?.notice}>
        {extra?.error ? <ErrorBox code={extra.error.code} message={extra.error.message} /> : null}
        {session.user.role === 'admin' ? (
          <form method="post" action="/packages/upload" enctype="multipart/form-data" class="card">
            <Csrf session={session} />
            <h2>Upload an offline package</h2>
            <p class="muted">
              The package is verified (signature, hashes, expiry, version) and summarised first; nothing changes until you confirm. Up to{' '}
              {fmtInt(Math.floor(ui.maxUploadBytes / 1048576))} MiB here; larger packages: <code>npx outpost import &lt;file&gt;</code> on the host.
            </p>
            <input type="file" name="package" accept=".tar,application/x-tar" required />
            <button type="submit">Verify (dry run)</button>
          </form>
        ) : null}
        <nav class="filters">
          Show: <a href="/packages" class={!where ? 'on' : undefined}>all</a> · <a href="/packages?status=accepted" class={status === 'accepted' ? 'on' : undefined}>accepted</a> ·{' '}
          <a href="/packages?status=rejected" class={status === 'rejected' ? 'on' : undefined}>rejected</a>
        </nav>
        {rows.length ? <PackageRows rows={rows} /> : <p class="muted">No packages.</p>}
        <Pager page={page} pages={pages} href={href} />
        {/* ---- issue 7: feeds with their rollback links ---- */}
        <h2>Feeds</h2>
        <FeedRollbacks feeds={ui.db.prepare('SELECT * FROM feeds ORDER BY name').all() as FeedRow[]} admin={session.user.role === 'admin'} />
        {/* ---- end issue 7 ---- */}
      </Page>,
      extra?.status ?? 200,
    );
  };

  return [
    { method: 'GET', path: '/packages', access: 'viewer', handler: (c) => list(c) },
    {
      method: 'GET',
      path: '/packages/:id',
      access: 'viewer',
      handler: (c) => {
        const session = c.get('session');
        const row = ui.db.prepare('SELECT * FROM packages WHERE id = ?').get(Number(c.req.param('id'))) as PackageRow | undefined;
        if (!row) {
          return c.html(
            <Page title="Package not found" session={session} active="/packages">
              <ErrorBox code="E_NOT_FOUND" message="no such package record" />
            </Page>,
            404,
          );
        }
        const s = parseSummary(row.summary);
        return c.html(
          <Page title={`Package #${row.id}`} session={session} active="/packages">
            <PackageRows rows={[row]} />
            <dl class="facts">
              <dt>sha256</dt>
              <dd>
                <code class="wrap">{row.sha256 ?? '—'}</code>
              </dd>
              {s.total !== undefined ? (
                <>
                  <dt>Change</dt>
                  <dd>
                    +{fmtInt(s.added)} added, −{fmtInt(s.removed)} removed, {fmtInt(s.total)} in the feed after
                  </dd>
                </>
              ) : null}
            </dl>
            <h2>Source report</h2>
            <SourceReports sources={s.sources} />
            <p>
              <a href="/packages">← all packages</a>
            </p>
          </Page>,
        );
      },
    },
    {
      method: 'POST',
      path: '/packages/upload',
      access: 'admin',
      maxBody: ui.maxUploadBytes + 64 * 1024,
      handler: async (c) => {
        const session = c.get('session');
        const file = c.get('body').package;
        if (!(file instanceof File) || file.size === 0) return list(c, { error: new OutpostError('E_INPUT', 'choose a package file (.tar) to upload'), status: 400 });
        const filename = displayName(file.name);
        if (file.size > ui.maxUploadBytes) {
          return list(c, { error: new OutpostError('E_TOO_LARGE', `the file is over the console's ${ui.maxUploadBytes}-byte upload limit; import it on the host`), status: 413 });
        }
        const saved = await ui.uploads.save(file);
        try {
          const r = await importPackage(ui.cfg, ui.db, saved.path, { dryRun: true, actor: session.user.name, source: `console:${filename}` });
          ui.uploads.hold({ id: saved.id, path: saved.path, filename, size: file.size, sessionId: session.id, at: Date.now(), manifest: r.manifest, sha256: r.sha256 });
          audit(ui.db, session.user.name, 'package.dry-run', { subject: `${r.feed}@${r.version}`, detail: { file: filename, sha256: r.sha256 } });
          const current = ui.db.prepare('SELECT version, count, kind FROM feeds WHERE name = ?').get(r.feed) as { version: number; count: number; kind: string } | undefined;
          const m = r.manifest;
          // ---- issue 7: what the package changes, row by row (read-only; a failure here only hides the diff) ----
          let diff: PackageDiff | null = null;
          let diffError: OutpostError | null = null;
          if (!isReferenceManifest(m)) {
            try {
              diff = await diffPackage(ui.cfg, ui.db, saved.path);
            } catch (e) {
              diffError = asOutpostError(e);
            }
          }
          // ---- end issue 7 ----
          return c.html(
            <Page title="Confirm package" session={session} active="/packages">
              <p class="notice ok">
                <strong>{filename}</strong> ({fmtInt(file.size)} bytes) verified: signature, hashes, expiry and version all hold. Nothing has changed yet.
              </p>
              <ManifestSummary m={m} sha256={r.sha256} />
              <h2>What applying it changes</h2>
              <p>
                {current ? (
                  <>
                    Feed <strong>{m.feed}</strong> goes from version {current.version} ({fmtInt(current.count)} indicators) to version {m.version} (
                    {fmtInt(m.counts.total)} indicators, {m.counts.total - current.count >= 0 ? '+' : '−'}
                    {fmtInt(Math.abs(m.counts.total - current.count))}).
                  </>
                ) : (
                  <>
                    New feed <strong>{m.feed}</strong> with {fmtInt(m.counts.total)} indicators.
                  </>
                )}
              </p>
              {/* ---- issue 7 ---- */}
              {diff ? <DiffSummary diff={diff} /> : null}
              {diffError ? <ErrorBox code={diffError.code} message={`row comparison unavailable: ${diffError.message}`} /> : null}
              {/* ---- end issue 7 ---- */}
              <h2>Source report</h2>
              <SourceReports sources={m.sources} />
              <div class="actions">
                <form method="post" action="/packages/confirm">
                  <Csrf session={session} />
                  <input type="hidden" name="upload" value={saved.id} />
                  <button type="submit">Apply this package</button>
                </form>
                <form method="post" action="/packages/discard">
                  <Csrf session={session} />
                  <input type="hidden" name="upload" value={saved.id} />
                  <button type="submit" class="secondary">
                    Discard
                  </button>
                </form>
              </div>
            </Page>,
          );
        } catch (e) {
          ui.uploads.remove(saved.path);
          const err = asOutpostError(e);
          audit(ui.db, session.user.name, 'package.dry-run', { code: err.code, subject: filename, detail: { message: err.message } });
          return list(c, { error: new OutpostError(err.code, `${filename}: ${err.message}`), status: statusOf(err.code) });
        }
      },
    },
    {
      method: 'POST',
      path: '/packages/confirm',
      access: 'admin',
      handler: async (c) => {
        const session = c.get('session');
        // Taken out of the pending set first, so a double submit cannot apply it twice.
        const pending = ui.uploads.take(field(c, 'upload'), session.id);
        if (!pending) return list(c, { error: new OutpostError('E_NOT_FOUND', 'that upload is no longer pending (expired, discarded or already applied); upload it again'), status: 404 });
        try {
          const r = await importPackage(ui.cfg, ui.db, pending.path, { actor: session.user.name, source: `console:${pending.filename}` });
          ui.log.info({ feed: r.feed, version: r.version, generation: r.generation, actor: session.user.name }, 'package applied from the console');
          return list(c, {
            notice: `Applied ${r.feed} version ${r.version}: +${fmtInt(r.added)} −${fmtInt(r.removed)}, ${fmtInt(r.total)} indicators in the feed; generation ${r.generation}.`,
          });
        } catch (e) {
          const err = asOutpostError(e);
          return list(c, { error: new OutpostError(err.code, `${pending.filename}: ${err.message}`), status: statusOf(err.code) });
        } finally {
          ui.uploads.remove(pending.path);
        }
      },
    },
    {
      method: 'POST',
      path: '/packages/discard',
      access: 'admin',
      handler: (c) => {
        const session = c.get('session');
        const pending = ui.uploads.get(field(c, 'upload'), session.id);
        if (pending) {
          ui.uploads.discard(pending.id);
          audit(ui.db, session.user.name, 'package.discard', { subject: `${pending.manifest.feed}@${pending.manifest.version}`, detail: { file: pending.filename } });
        }
        return c.redirect('/packages', 303);
      },
    },
  ];
}
