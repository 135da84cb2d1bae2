// Upstreams: the providers this appliance pulls from, with each one's last result, backoff and next due
// time (viewers see, admins change). Adding pins a pasted root.json; "sync now" runs syncUpstream in the
// background and sends the admin to a job page that refreshes itself (meta refresh, no script) until the
// result and its code are in.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { FC } from 'hono/jsx';
import { layout } from '../../appliance/db.ts';
import { asOutpostError, ERRORS, OutpostError } from '../../appliance/errors.ts';
import { upstreamStatus } from '../../appliance/status.ts';
import { syncUpstream, type UpstreamOutcome } from '../../sync/pull.ts';
import { addUpstream, DEFAULT_SCHEDULE, getUpstream, removeUpstream } from '../../sync/upstreams.ts';
import type { PageStatus, RouteDef, UiContext } from '../context.ts';
import { field, type Ctx } from '../guard.ts';
import { Csrf, DangerButton, ErrorBox, fmtTime, Page, Pager, parsePage, Table } from '../layout.tsx';

export interface SyncJob {
  id: string;
  upstream: string;
  actor: string;
  started_at: string;
  finished_at: string | null;
  outcome: UpstreamOutcome | null;
  /** A failure before syncUpstream could record one (e.g. the upstream was removed meanwhile). */
  error: OutpostError | null;
}

const PAGE_SIZE = 50;
/** Finished jobs kept for their status pages; older ones are forgotten (the audit log keeps the record). */
const KEEP_JOBS = 100;
const MAX_ROOT_BYTES = 256 * 1024;

/** Background sync runs of this process, by job id. */
export class SyncJobs {
  private readonly jobs = new Map<string, SyncJob>();
  private readonly running = new Map<string, Promise<void>>();

  get(id: string): SyncJob | undefined {
    return this.jobs.get(id);
  }

  /** The running job for an upstream, if any: a second "sync now" joins it instead of racing it. */
  runningFor(upstream: string): SyncJob | undefined {
    return [...this.jobs.values()].find((j) => j.upstream === upstream && !j.finished_at);
  }

  start(ui: UiContext, upstream: string, actor: string): SyncJob {
    const existing = this.runningFor(upstream);
    if (existing) return existing;
    const job: SyncJob = { id: crypto.randomBytes(12).toString('hex'), upstream, actor, started_at: new Date().toISOString(), finished_at: null, outcome: null, error: null };
    this.jobs.set(job.id, job);
    const run = syncUpstream(ui.cfg, ui.db, upstream, { actor, log: ui.log })
      .then((o) => {
        job.outcome = o;
      })
      .catch((e: unknown) => {
        job.error = asOutpostError(e);
        ui.log.warn({ upstream, code: job.error.code }, 'console sync failed');
      })
      .finally(() => {
        job.finished_at = new Date().toISOString();
        this.running.delete(job.id);
        this.trim();
      });
    this.running.set(job.id, run);
    return job;
  }

  /** Waits for every running job (tests, shutdown). */
  async settle(): Promise<void> {
    await Promise.all([...this.running.values()]);
  }

  private trim(): void {
    const done = [...this.jobs.values()].filter((j) => j.finished_at);
    for (const j of done.slice(0, Math.max(0, done.length - KEEP_JOBS))) this.jobs.delete(j.id);
  }
}

const JobResult: FC<{ job: SyncJob }> = ({ job }) => {
  const o = job.outcome;
  if (job.error) return <ErrorBox code={job.error.code} message={job.error.message} />;
  if (!o) return null;
  return (
    <>
      {o.ok ? (
        <p class="notice ok" role="status">
          <span class="badge ok">ok</span> Sync of <strong>{o.upstream}</strong> finished.
        </p>
      ) : (
        <ErrorBox code={o.code ?? 'E_INTERNAL'} message={o.message ?? 'sync failed'} />
      )}
      {o.feeds.length ? (
        <Table head={['Feed', 'Result', 'Version', 'Via', 'Code', 'Message']} class="sync-feeds">
          {o.feeds.map((f) => (
            <tr>
              <td>{f.feed}</td>
              <td>
                <span class={`badge ${f.action === 'failed' ? 'bad' : 'ok'}`}>{f.action}</span>
              </td>
              <td class="num">{f.version ?? '—'}</td>
              <td>{f.via ? `${f.via}${f.steps ? ` (${f.steps})` : ''}${f.fallback ? ` after ${f.fallback}` : ''}` : '—'}</td>
              <td>{f.code ? <code>{f.code}</code> : '—'}</td>
              <td class="wrap">{f.message ?? ''}</td>
            </tr>
          ))}
        </Table>
      ) : (
        <p class="muted">No feed was fetched.</p>
      )}
    </>
  );
};

export function upstreamRoutes(ui: UiContext, jobs = new SyncJobs()): RouteDef[] {
  const list = (c: Ctx, extra: { error?: OutpostError; notice?: string; form?: Record<string, string> } = {}) => {
    const session = c.get('session');
    const admin = session.user.role === 'admin';
    const all = upstreamStatus(ui.db);
    const pages = Math.max(1, Math.ceil(all.length / PAGE_SIZE));
    const page = Math.min(parsePage(c.req.query('page')), pages);
    const rows = all.slice((page - 1) * PAGE_SIZE, page * PAGE_SIZE);
    const form = extra.form ?? {};
    return c.html(
      <Page title="Upstreams" session={session} active="/upstreams" notice={extra.notice}>
        {extra.error ? <ErrorBox code={extra.error.code} message={extra.error.message} /> : null}
        {rows.length ? (
          <Table head={['Name', 'URL', 'Schedule', 'Root', 'Last result', 'Last success', 'Backoff', 'Next due', ...(admin ? [''] : [])]} class="upstreams">
            {rows.map((u) => (
              <tr>
                <td>{u.name}</td>
                <td class="wrap">
                  <code>{u.url}</code>
                </td>
                <td>
                  <code>{u.schedule}</code>
                </td>
                <td class="num">{u.root_version ?? '—'}</td>
                <td class="wrap">
                  {u.last ? (
                    <>
                      {u.last.ok ? <span class="badge ok">ok</span> : <span class="badge bad">{u.last.code}</span>} {fmtTime(u.last.at)}
                      {!u.last.ok && u.last.message ? <div class="small">{u.last.message}</div> : null}
                    </>
                  ) : (
                    'never'
                  )}
                </td>
                <td>{fmtTime(u.last_success_at)}</td>
                <td>{u.backoff_until ? `${u.failures} failure${u.failures === 1 ? '' : 's'}, until ${fmtTime(u.backoff_until)}` : '—'}</td>
                <td>{fmtTime(u.next_due)}</td>
                {admin ? (
                  <td>
                    <div class="actions tight">
                      <form method="post" action={`/upstreams/${encodeURIComponent(u.name)}/sync`}>
                        <Csrf session={session} />
                        <button type="submit" class="small" aria-label={`sync ${u.name} now`}>
                          Sync now
                        </button>
                      </form>
                      <DangerButton session={session} action={`/upstreams/${encodeURIComponent(u.name)}/remove`} label="Remove" ariaLabel={`remove upstream ${u.name}`} />
                    </div>
                  </td>
                ) : null}
              </tr>
            ))}
          </Table>
        ) : (
          <p class="muted">No upstreams configured; this appliance takes packages offline only.</p>
        )}
        <Pager page={page} pages={pages} href={(p) => `/upstreams?page=${p}`} />
        {admin ? (
          <form method="post" action="/upstreams" class="card">
            <Csrf session={session} />
            <h2>Add an upstream</h2>
            <label>
              Name
              <input name="name" required maxlength={64} pattern="[a-z0-9][a-z0-9._\-]{0,63}" placeholder="e.g. regional" value={form.name ?? ''} />
            </label>
            <label>
              Base URL
              <input name="url" required maxlength={2000} placeholder="https://provider.example/outpost/" value={form.url ?? ''} />
            </label>
            <label>
              Schedule (cron)
              <input name="schedule" maxlength={100} value={form.schedule ?? DEFAULT_SCHEDULE} />
            </label>
            <label>
              root.json (pasted; obtained from the provider out of band)
              <textarea name="root" rows={6} placeholder='{"signed": …, "signatures": …}'>
                {form.root ?? ''}
              </textarea>
            </label>
            <p class="small muted">Without a root.json the upstream's packages verify only with keys trusted directly on this appliance.</p>
            <button type="submit">Add upstream</button>
          </form>
        ) : null}
      </Page>,
      extra.error ? (ERRORS[extra.error.code].status as PageStatus) : 200,
    );
  };

  const jobPage = (c: Ctx) => {
    const session = c.get('session');
    const job = jobs.get(c.req.param('id') ?? '');
    if (!job) {
      return c.html(
        <Page title="Sync job not found" session={session} active="/upstreams">
          <ErrorBox code="E_NOT_FOUND" message="no such sync job (jobs are kept in memory until the appliance restarts)" />
          <p>
            <a href="/upstreams">← Upstreams</a>
          </p>
        </Page>,
        404,
      );
    }
    const running = !job.finished_at;
    const res = c.html(
      <Page title={`Sync ${job.upstream}`} session={session} active="/upstreams" refresh={running ? 2 : undefined}>
        <dl class="facts">
          <dt>Started</dt>
          <dd>
            {fmtTime(job.started_at)} by {job.actor}
          </dd>
          <dt>State</dt>
          <dd>{running ? <span class="badge sync-running">running…</span> : <span class="badge sync-done">finished {fmtTime(job.finished_at)}</span>}</dd>
        </dl>
        {running ? <p class="muted">This page refreshes itself every 2 seconds until the sync ends.</p> : <JobResult job={job} />}
        <p>
          <a href="/upstreams">← Upstreams</a>
        </p>
      </Page>,
    );
    return res;
  };

  return [
    { method: 'GET', path: '/upstreams', access: 'viewer', handler: (c) => list(c, { notice: c.req.query('done') === 'removed' ? 'Upstream removed.' : undefined }) },
    {
      method: 'POST',
      path: '/upstreams',
      access: 'admin',
      handler: async (c) => {
        const session = c.get('session');
        const form = { name: field(c, 'name').trim(), url: field(c, 'url').trim(), schedule: field(c, 'schedule').trim() || DEFAULT_SCHEDULE, root: field(c, 'root') };
        let rootFile: string | undefined;
        try {
          if (!form.name || !form.url) throw new OutpostError('E_INPUT', 'an upstream needs a name and a base URL');
          if (Buffer.byteLength(form.root) > MAX_ROOT_BYTES) throw new OutpostError('E_TOO_LARGE', `root.json over ${MAX_ROOT_BYTES} bytes`);
          if (form.root.trim()) {
            // addUpstream reads the root from a file: a private one in staging, removed right after.
            const staging = layout(ui.cfg.dataDir).staging;
            fs.mkdirSync(staging, { recursive: true, mode: 0o700 });
            rootFile = path.join(staging, `console-root-${crypto.randomBytes(8).toString('hex')}.json`);
            fs.writeFileSync(rootFile, form.root.trim(), { mode: 0o600, flag: 'wx' });
          }
          const u = await addUpstream(ui.db, form.name, form.url, { schedule: form.schedule, rootFile, actor: session.user.name });
          return list(c, { notice: `Added upstream ${u.name}${u.root ? ` (root version ${u.root.version} pinned)` : ''}.` });
        } catch (e) {
          const err = asOutpostError(e);
          // addUpstream speaks the CLI's E_USAGE; in a form that is bad input.
          return list(c, { error: err.code === 'E_USAGE' ? new OutpostError('E_INPUT', err.message) : err, form });
        } finally {
          if (rootFile) fs.rmSync(rootFile, { force: true });
        }
      },
    },
    {
      method: 'POST',
      path: '/upstreams/:name/remove',
      access: 'admin',
      handler: (c) => {
        try {
          removeUpstream(ui.db, c.req.param('name') ?? '', c.get('session').user.name);
          return c.redirect('/upstreams?done=removed', 303);
        } catch (e) {
          return list(c, { error: asOutpostError(e) });
        }
      },
    },
    {
      method: 'POST',
      path: '/upstreams/:name/sync',
      access: 'admin',
      handler: (c) => {
        try {
          const u = getUpstream(ui.db, c.req.param('name') ?? '');
          const job = jobs.start(ui, u.name, c.get('session').user.name);
          return c.redirect(`/upstreams/jobs/${job.id}`, 303);
        } catch (e) {
          return list(c, { error: asOutpostError(e) });
        }
      },
    },
    { method: 'GET', path: '/upstreams/jobs/:id', access: 'admin', handler: jobPage },
  ];
}
