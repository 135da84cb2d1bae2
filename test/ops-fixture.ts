// Shared by the hostile-input and day-2 tests (limits, scopes, backup, fuzz, secrets, soak): the CLI as a
// non-blocking child (lookups keep flowing while it runs), raw HTTP with keep-alive, a real-data appliance.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { expect } from 'vitest';
import { BIN, DATA, ROOT, cli, type CliResult } from './helpers.ts';

/** `outpost <args>` as a child process without blocking this event loop (unlike helpers.cli). */
export function cliAsync(args: string[], opts: { dataDir?: string; input?: string; env?: NodeJS.ProcessEnv } = {}): Promise<CliResult> {
  const env: NodeJS.ProcessEnv = { ...process.env, OUTPOST_LOG_LEVEL: 'warn', ...opts.env };
  if (opts.dataDir) env.OUTPOST_DATA_DIR = opts.dataDir;
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [BIN, ...args], { cwd: ROOT, env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    p.once('error', reject);
    p.once('close', (code) => {
      const lines = stdout.trimEnd().split('\n');
      resolve({ code: code ?? -1, stdout, stderr, lastLine: lines[lines.length - 1] ?? '' });
    });
    p.stdin.end(opts.input ?? '');
  });
}

export interface RawResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  text: string;
}

const guarded = new WeakSet<object>();

/** One HTTP request with node:http (arbitrary bytes, methods and headers; keep-alive through `agent`). */
export function request(
  url: string,
  opts: { method?: string; headers?: Record<string, string>; body?: Buffer | string; agent?: http.Agent; timeoutMs?: number } = {},
): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: opts.method ?? 'GET', headers: opts.headers, agent: opts.agent }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (d: Buffer) => chunks.push(d));
      res.on('end', () => {
        const body = Buffer.concat(chunks);
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body, text: body.toString('utf8') });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    // A server that refuses a body closes while it is still being written: that EPIPE belongs to this request.
    req.on('socket', (sock) => {
      if (!guarded.has(sock)) {
        guarded.add(sock);
        sock.on('error', () => {});
      }
    });
    if (opts.timeoutMs) req.setTimeout(opts.timeoutMs, () => req.destroy(new Error(`request timed out after ${opts.timeoutMs} ms`)));
    req.end(opts.body);
  });
}

export function bearer(token: string, extra: Record<string, string> = {}): Record<string, string> {
  return { authorization: `Bearer ${token}`, ...extra };
}

/** Values from a real list: non-comment, non-empty lines. */
export function listValues(rel: string): string[] {
  return fs
    .readFileSync(path.join(DATA, rel), 'utf8')
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
}

export interface RealAppliance {
  dataDir: string;
  keys: string;
  out: string;
  /** Provider private key for further packages. */
  key: string;
}

/** keygen → build a block feed from real lists → trust add → import. Returns the paths. */
export function prepareRealData(work: string, sources: string[], feed = 'threats'): RealAppliance & { pkg: string } {
  const dataDir = path.join(work, 'var');
  const keys = path.join(work, 'keys');
  const out = path.join(work, 'out');
  const kg = cli(['provider', 'keygen', '--out', keys]);
  expect(kg.code, kg.stderr).toBe(0);
  const key = path.join(keys, 'provider.key');
  const b = cli(['provider', 'build', '--feed', feed, '--key', key, '--out', out, '--category', 'malware', '--version', '1', ...sources.map((s) => path.join(DATA, s))]);
  expect(b.code, b.stderr).toBe(0);
  expect(cli(['trust', 'add', path.join(keys, 'provider.pub')], { dataDir }).code).toBe(0);
  const imp = cli(['import', b.lastLine], { dataDir });
  expect(imp.code, imp.stderr).toBe(0);
  return { dataDir, keys, out, key, pkg: b.lastLine };
}

export function createToken(dataDir: string, name: string, scope = 'lookup', extra: string[] = []): string {
  const t = cli(['token', 'create', '--name', name, '--scope', scope, ...extra], { dataDir });
  expect(t.code, t.stderr).toBe(0);
  return t.lastLine;
}
