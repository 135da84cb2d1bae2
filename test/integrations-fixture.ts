// Test fixture for TAXII, compat and push tests: the real API app (createApi) with extra mounts,
// served by @hono/node-server on a free loopback port, over a real SQLite store.
import type { AddressInfo } from 'node:net';
import { serve as serveHttp, type ServerType } from '@hono/node-server';
import type { Hono } from 'hono';
import { loadConfig } from '../appliance/config.ts';
import type { DB } from '../appliance/db.ts';
import { createLogger } from '../appliance/log.ts';
import { createToken, type Scope } from '../appliance/tokens.ts';
import { createApi, type ApiDeps, type AppEnv } from '../lookup/api.ts';
import { LookupEngine } from '../lookup/engine.ts';

export interface TestServer {
  url: string;
  app: Hono<AppEnv>;
  engine: LookupEngine;
  token(scope: Scope): string;
  close(): Promise<void>;
}

export async function startTestServer(
  db: DB,
  mounts: ((app: Hono<AppEnv>) => void)[],
  opts: { now?: () => number; extra?: Partial<ApiDeps> } = {},
): Promise<TestServer> {
  const cfg = loadConfig({ rateLimitRps: 0 }, {});
  const engine = new LookupEngine(db, { fpRate: 0.001, worker: false, filterDir: null, now: opts.now });
  await engine.reload({ force: true });
  const log = createLogger('silent');
  const app = createApi({ cfg, db, engine, log, mounts, ...opts.extra });
  const server: ServerType = await new Promise((resolve) => {
    const s = serveHttp({ fetch: app.fetch, hostname: '127.0.0.1', port: 0 }, () => resolve(s));
  });
  const port = (server.address() as AddressInfo).port;
  let n = 0;
  return {
    url: `http://127.0.0.1:${port}`,
    app,
    engine,
    token: (scope) => createToken(db, `test-${scope}-${++n}`, scope).token,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}
