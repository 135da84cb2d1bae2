// Test helpers: temp data dirs, the real CLI as a child process, a real server on a loopback port.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import net from 'node:net';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const DATA = path.resolve(ROOT, '../shared/data');
export const BIN = path.join(ROOT, 'bin/outpost.js');

export function tmpDir(prefix = 'outpost-test-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
  lastLine: string;
}

/** Runs `outpost <args>` as a real child process. */
export function cli(args: string[], opts: { dataDir?: string; input?: string; env?: NodeJS.ProcessEnv } = {}): CliResult {
  const env: NodeJS.ProcessEnv = { ...process.env, OUTPOST_LOG_LEVEL: 'warn', ...opts.env };
  if (opts.dataDir) env.OUTPOST_DATA_DIR = opts.dataDir;
  const r = spawnSync(process.execPath, [BIN, ...args], { cwd: ROOT, env, input: opts.input, encoding: 'utf8', maxBuffer: 256 * 1024 * 1024 });
  const stdout = r.stdout ?? '';
  const lines = stdout.trimEnd().split('\n');
  return { code: r.status ?? -1, stdout, stderr: r.stderr ?? '', lastLine: lines[lines.length - 1] ?? '' };
}

export interface Served {
  url: string;
  proc: ChildProcess;
  stderr: () => string;
  stop(): Promise<void>;
}

/** Starts `outpost serve` on a free loopback port and waits until /healthz answers. */
export async function serve(dataDir: string, extraArgs: string[] = [], env: NodeJS.ProcessEnv = {}): Promise<Served> {
  const proc = spawn(process.execPath, [BIN, 'serve', '--port', '0', ...extraArgs], {
    cwd: ROOT,
    // Tests block their own event loop in cli() (spawnSync, seconds under load), longer than the server's 5 s
    // keep-alive: fetch would then reuse a socket the server already closed ("other side closed"). A long
    // keep-alive here keeps such tests deterministic; test/limits.test.ts checks the real default separately.
    env: { ...process.env, OUTPOST_DATA_DIR: dataDir, OUTPOST_LOG_LEVEL: 'info', OUTPOST_KEEPALIVE_TIMEOUT_MS: '120000', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let err = '';
  let out = '';
  proc.stderr!.on('data', (d) => (err += d));
  proc.stdout!.on('data', (d) => (out += d));
  const url = await new Promise<string>((resolve, reject) => {
    const deadline = setTimeout(() => reject(new Error(`serve did not start: ${err}`)), 90_000);
    const check = () => {
      const m = /serving on (http:\/\/[^\s]+)/.exec(err) ?? /"url":"(http:\/\/[^"]+)"/.exec(out + err);
      if (m) {
        clearTimeout(deadline);
        resolve(m[1]);
      }
    };
    proc.stderr!.on('data', check);
    proc.stdout!.on('data', check);
    proc.once('exit', (code) => {
      clearTimeout(deadline);
      reject(new Error(`serve exited with ${code}: ${err}`));
    });
  });
  return {
    url,
    proc,
    stderr: () => err,
    async stop() {
      if (proc.exitCode !== null) return;
      const done = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGTERM');
      await done;
    },
  };
}

/** A digest of the data tables — equal before and after means "the database is unchanged". */
export function dbDigest(dataDir: string): string {
  const db = new Database(path.join(dataDir, 'outpost.db'), { readonly: true });
  const h = crypto.createHash('sha256');
  for (const [table, order] of [
    ['indicators', 'type, value, feed'],
    ['feeds', 'name'],
    ['meta', 'key'],
    ['generations', 'id'],
    ['trusted_keys', 'key_id'],
  ]) {
    h.update(`#${table}\n`);
    for (const row of db.prepare(`SELECT * FROM ${table} ORDER BY ${order}`).iterate()) h.update(JSON.stringify(row) + '\n');
  }
  db.close();
  return h.digest('hex');
}

export function readLines(file: string): string[] {
  return fs.readFileSync(file, 'utf8').split(/\r?\n/);
}

/** Every n-th element, for sampling real lists deterministically. */
export function every<T>(arr: T[], n: number): T[] {
  return arr.filter((_, i) => i % n === 0);
}

/** The value of an unlabelled sample `name` in a Prometheus text exposition (/metrics); NaN when absent. */
export function metricOf(text: string, name: string): number {
  return Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
}

export async function getJson(url: string, token?: string): Promise<{ status: number; body: any }> {
  const res = await fetch(url, { headers: token ? { authorization: `Bearer ${token}` } : {} });
  return { status: res.status, body: await res.json() };
}

export async function postJson(url: string, body: unknown, token?: string): Promise<{ status: number; body: any }> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() };
}

/** A free TCP port on 127.0.0.1 for a consumer process the test starts. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}
