// Shared by the console tests: a real appliance (signed package from ../shared/data imported with the
// CLI, users made with `outpost user add`, `outpost serve` on loopback) and an HTTP client that signs in.
import fs from 'node:fs';
import path from 'node:path';
import { expect } from 'vitest';
import { DATA, cli, serve, tmpDir, type Served } from './helpers.ts';

export const ADMIN = { name: 'admin', password: 'admin passphrase 2026' };
export const VIEWER = { name: 'soc-viewer', password: 'viewer passphrase 2026' };

export interface Appliance {
  work: string;
  dataDir: string;
  keys: string;
  out: string;
  server: Served;
  close(): Promise<void>;
}

export function buildPackage(keys: string, out: string, feed: string, files: string[], extra: string[] = []): string {
  const r = cli(['provider', 'build', '--feed', feed, '--key', path.join(keys, 'provider.key'), '--out', out, ...extra, ...files]);
  expect(r.code, r.stderr).toBe(0);
  return r.lastLine;
}

/** A served appliance with a real feed imported and an admin and a viewer created through the real CLI. */
export async function startAppliance(sources: string[]): Promise<Appliance> {
  const work = tmpDir('outpost-console-');
  const dataDir = path.join(work, 'var');
  const keys = path.join(work, 'keys');
  const out = path.join(work, 'out');
  expect(cli(['provider', 'keygen', '--out', keys]).code).toBe(0);
  const pkg = buildPackage(keys, out, 'threats', sources.map((s) => path.join(DATA, s)), ['--category', 'malware']);
  expect(cli(['trust', 'add', path.join(keys, 'provider.pub'), '--label', 'test provider'], { dataDir }).code).toBe(0);
  const imp = cli(['import', pkg], { dataDir });
  expect(imp.code, imp.stderr).toBe(0);
  for (const u of [
    { ...ADMIN, role: 'admin' },
    { ...VIEWER, role: 'viewer' },
  ]) {
    const r = cli(['user', 'add', u.name, '--role', u.role], { dataDir, input: `${u.password}\n` });
    expect(r.code, r.stderr).toBe(0);
  }
  const server = await serve(dataDir, ['--no-demo']);
  return {
    work,
    dataDir,
    keys,
    out,
    server,
    async close() {
      await server.stop();
      fs.rmSync(work, { recursive: true, force: true });
    },
  };
}

export interface Signed {
  cookie: string;
  csrf: string;
}

function cookiePair(res: Response, name: string): string | undefined {
  return res.headers
    .getSetCookie()
    .map((c) => c.split(';')[0])
    .find((c) => c.startsWith(`${name}=`));
}

export async function login(url: string, who: { name: string; password: string }): Promise<Signed> {
  const page = await fetch(`${url}/login`);
  const pre = cookiePair(page, 'outpost_login')!;
  const res = await fetch(`${url}/login`, {
    method: 'POST',
    redirect: 'manual',
    headers: { cookie: pre, origin: url, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ _csrf: pre.split('=')[1], username: who.name, password: who.password, next: '/' }),
  });
  expect(res.status, await res.clone().text()).toBe(303);
  const cookie = cookiePair(res, 'outpost_session')!;
  expect(cookie).toBeTruthy();
  const dash = await (await fetch(`${url}/`, { headers: { cookie } })).text();
  const csrf = /name="_csrf" value="([^"]+)"/.exec(dash)![1];
  return { cookie, csrf };
}

export function post(url: string, p: string, s: Signed | null, fields: Record<string, string> = {}, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(`${url}${p}`, {
    method: 'POST',
    redirect: 'manual',
    headers: { origin: url, 'content-type': 'application/x-www-form-urlencoded', ...(s ? { cookie: s.cookie } : {}), ...headers },
    body: new URLSearchParams({ ...(s ? { _csrf: s.csrf } : {}), ...fields }),
  });
}

export function get(url: string, p: string, s: Signed | null, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(`${url}${p}`, { redirect: 'manual', headers: { ...(s ? { cookie: s.cookie } : {}), ...headers } });
}
