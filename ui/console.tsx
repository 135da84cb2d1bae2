// The admin web console: one route table (every page module's routes, each behind `guard`), mounted
// into the API app through createApi's `mounts`. Served from the appliance itself, no external assets.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Hono } from 'hono';
import { HTTPException } from 'hono/http-exception';
import type { Config } from '../appliance/config.ts';
import type { DB } from '../appliance/db.ts';
import { layout } from '../appliance/db.ts';
import { ERRORS, OutpostError } from '../appliance/errors.ts';
import type { Logger } from '../appliance/log.ts';
import { DEFAULT_LOGIN_POLICY, DEFAULT_SESSION_POLICY, type LoginPolicy, type SessionPolicy } from '../appliance/users.ts';
import type { LookupEngine } from '../lookup/engine.ts';
import type { SightingsWriter } from '../lookup/sightings.ts';
import type { PageStatus, RouteDef, UiContext } from './context.ts';
import { guard, type ConsoleEnv, type Ctx } from './guard.ts';
import { ErrorBox, Page } from './layout.tsx';
import { auditRoutes } from './pages/audit.tsx';
import { dashboardRoutes } from './pages/dashboard.tsx';
import { keyRoutes } from './pages/keys.tsx';
import { loginRoutes } from './pages/login.tsx';
import { lookupRoutes } from './pages/lookup.tsx';
import { packageRoutes } from './pages/packages.tsx';
import { tokenRoutes } from './pages/tokens.tsx';
import { userRoutes } from './pages/users.tsx';
import { UploadStore } from './uploads.ts';
// ---- issue 7: upstreams, hits, overrides, rollback ----
import { hitRoutes } from './pages/hits.tsx';
import { overrideRoutes } from './pages/overrides.tsx';
import { rollbackRoutes } from './pages/rollback.tsx';
import { upstreamRoutes } from './pages/upstreams.tsx';
// ---- end issue 7 ----

export interface ConsoleDeps {
  cfg: Config;
  db: DB;
  engine: LookupEngine;
  log: Logger;
  sessionPolicy?: SessionPolicy;
  loginPolicy?: LoginPolicy;
  /** Default: 256 MiB, or the package limit when that is smaller. */
  maxUploadBytes?: number;
  /** The appliance's hit log: console lookups are recorded as client `console:<username>`. */
  sightings?: SightingsWriter | null;
}

const ASSETS = path.join(path.dirname(fileURLToPath(import.meta.url)), 'assets');
const FORM_BYTES = 1024 * 1024;
const DEFAULT_MAX_UPLOAD = 256 * 1024 * 1024;

function uiContext(deps: ConsoleDeps): UiContext {
  return {
    cfg: deps.cfg,
    db: deps.db,
    engine: deps.engine,
    log: deps.log,
    sessionPolicy: deps.sessionPolicy ?? DEFAULT_SESSION_POLICY,
    loginPolicy: deps.loginPolicy ?? DEFAULT_LOGIN_POLICY,
    maxUploadBytes: deps.maxUploadBytes ?? Math.min(DEFAULT_MAX_UPLOAD, deps.cfg.maxPackageBytes),
    uploads: new UploadStore(layout(deps.cfg.dataDir).staging),
    sightings: deps.sightings ?? null,
  };
}

function assetRoutes(): RouteDef[] {
  const css = fs.readFileSync(path.join(ASSETS, 'console.css'));
  return [
    {
      method: 'GET',
      path: '/assets/console.css',
      access: 'public',
      handler: (c) => {
        const res = c.body(css, 200, { 'Content-Type': 'text/css; charset=utf-8' });
        res.headers.set('Cache-Control', 'public, max-age=3600');
        return res;
      },
    },
  ];
}

/** Every console route: the one list that is registered and that the access-matrix test walks. */
export function consoleRoutes(ui: UiContext): RouteDef[] {
  return [
    ...assetRoutes(),
    ...loginRoutes(ui),
    ...dashboardRoutes(ui),
    ...packageRoutes(ui),
    ...lookupRoutes(ui),
    ...keyRoutes(ui),
    ...tokenRoutes(ui),
    ...auditRoutes(ui),
    ...userRoutes(ui),
    // ---- issue 7 ----
    ...upstreamRoutes(ui),
    ...hitRoutes(ui),
    ...overrideRoutes(ui),
    ...rollbackRoutes(ui),
    // ---- end issue 7 ----
  ];
}

function refusal(c: Ctx, status: PageStatus, code: string, message: string): Response | Promise<Response> {
  const s = c.get('session');
  return c.html(
    <Page title={status === 403 ? 'Not allowed' : 'Something went wrong'} session={s ?? null}>
      <ErrorBox code={code} message={message} />
      <p>
        <a href="/">← Dashboard</a>
      </p>
    </Page>,
    status,
  );
}

/** Builds the console and returns the mount for createApi({ mounts: [...] }). */
export function createConsole(deps: ConsoleDeps): { mount: (app: Hono<any>) => void; routes: RouteDef[]; ui: UiContext } {
  const ui = uiContext(deps);
  const routes = consoleRoutes(ui);
  const app = new Hono<ConsoleEnv>();
  const opts = {
    db: ui.db,
    sessionPolicy: ui.sessionPolicy,
    formBytes: FORM_BYTES,
    reject: (c: Ctx, status: 403 | 413, message: string) => refusal(c, status, status === 413 ? 'E_TOO_LARGE' : message.includes('CSRF') ? 'E_CSRF' : 'E_FORBIDDEN', message),
  };
  // A variable-length handler chain does not fit hono's typed overloads; the chain is typed where it is built.
  const add = app.on.bind(app) as unknown as (method: string, path: string, ...handlers: unknown[]) => void;
  for (const r of routes) add(r.method, r.path, ...guard(opts, r.access, r.method, r.maxBody), r.handler);
  app.onError((err, c) => {
    if (err instanceof HTTPException && err.status === 403) {
      // hono's csrf(): the request's Origin is not this console.
      return refusal(c as Ctx, 403, 'E_CSRF', 'cross-site form submission refused (Origin does not match this console)');
    }
    if (err instanceof HTTPException) return refusal(c as Ctx, err.status as PageStatus, 'E_INPUT', err.message || 'bad request');
    if (err instanceof OutpostError) return refusal(c as Ctx, ERRORS[err.code].status as PageStatus, err.code, err.message);
    deps.log.error({ err, path: c.req.path }, 'console error');
    return refusal(c as Ctx, 500, 'E_INTERNAL', 'internal error; the appliance log has the details');
  });
  return { mount: (parent) => parent.route('/', app), routes, ui };
}
