// `outpost bench` must keep running end to end (so it cannot rot): a small store through the real signed
// import path, the in-process figures, and the HTTP phase with two HTTP worker processes (appliance/
// cluster.ts) — GET lookups, NDJSON batch, and lookups while a delta is applied and its filters swapped
// in, with the load generator in a process of its own. Asserts the JSON last line's keys and that no
// request failed; never a timing threshold.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { timePerCall } from '../scripts/bench-inproc.ts';
import { BIN, ROOT } from './helpers.ts';

function run(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, ...args], { cwd: ROOT, env: { ...process.env, ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

const REQUIRED = ['lookup_miss_ns', 'sqlite_point_ns', 'batch_values_per_s', 'http_rps', 'raw_http_rps', 'import_per_s', 'import_peak_rss_mb', 'import_cpu_ms', 'rss_mb', 'size'];

describe('outpost bench', () => {
  it('runs at --size 20000 and prints a JSON last line with every figure, no failed request', async () => {
    const r = await run(['bench', '--json', '--size', '20000', '--keep'], { OUTPOST_HTTP_WORKERS: '2' });
    expect(r.code, r.stderr.slice(-2000)).toBe(0);
    const lines = r.stdout.trim().split('\n');
    const last = JSON.parse(lines[lines.length - 1]) as Record<string, number | null>;
    for (const k of REQUIRED) {
      expect(typeof last[k], k).toBe('number');
      expect(last[k]! > 0, k).toBe(true);
    }
    expect(last.size).toBe(20000);
    expect(last.http_workers).toBe(2);
    expect(last.http_errors).toBe(0);
    expect(last.ndjson_errors).toBe(0);
    expect(last.delta_errors).toBe(0);
    expect(last.delta_size).toBe(2000);
    // The bare server is measured in the alternate slots of the same delta window.
    expect(typeof last.raw_delta_p99_ms).toBe('number');
    expect(last.raw_delta_p99_ms! > 0).toBe(true);
    expect(last.raw_delta_errors).toBe(0);
    expect(r.stderr).toMatch(/delta_p99_ms .*bare node:http in the alternate 100 ms slots of the same window: p99 [\d.]+ ms, 0 errors/);
    expect(typeof last.http_p99_half_ms).toBe('number');
    // p99 at half load is the median of alternating rounds; the worst round is reported beside it.
    expect(last.http_half_errors).toBe(0);
    expect(last.http_p99_half_worst_ms!).toBeGreaterThanOrEqual(last.http_p99_half_ms!);
    expect(r.stderr).toMatch(/http_p99_half_ms .*median of 3 alternating rounds: [\d.]+ \/ [\d.]+ \/ [\d.]+ ms/);
    expect(typeof last.ndjson_values_per_s).toBe('number');
    // The load generator runs in its own process and reports the CPU it used, beside the servers' workers.
    expect(last.http_client_cores! > 0).toBe(true);
    expect(last.raw_http_client_cores! > 0).toBe(true);
    expect(last.http_server_cores! > 0).toBe(true);
    expect(last.raw_http_server_cores! > 0).toBe(true);
    // The import runs in a process of its own (getrusage peak of a whole node process: tens of MiB at least).
    expect(last.import_peak_rss_mb!).toBeGreaterThan(30);
    expect(r.stderr).toContain('peak RSS of the importing process');
    // --keep: the store stays (and only the store), with the command to serve it.
    const kept = /store kept in (\S+); serve it with/.exec(r.stderr)?.[1];
    expect(kept, r.stderr.slice(-1500)).toBeDefined();
    try {
      expect(fs.existsSync(path.join(kept!, 'outpost.db'))).toBe(true);
      expect(fs.readdirSync(path.dirname(kept!))).toEqual(['data']);
      expect(r.stderr).toContain(`OUTPOST_DATA_DIR=${kept} OUTPOST_NO_DEMO=1 OUTPOST_HTTP_WORKERS=auto npx outpost serve`);
    } finally {
      fs.rmSync(path.dirname(kept!), { recursive: true, force: true });
    }
    // The human-readable figures go to stderr with --json.
    expect(r.stderr).toContain('import_per_s');
    expect(r.stderr).toContain('http_rps');
  }, 300_000);
});

describe('bench loops', () => {
  it('timePerCall hands every value its own index, in the warm-up pass and the timed passes alike', () => {
    // The mixed loops read each value's type by that index; a counter of their own drifted from the values.
    const values = Array.from({ length: 30_000 }, (_, i) => `v${i}`);
    let calls = 0;
    let wrong = 0;
    const ns = timePerCall(values, 0.01, (v, i) => {
      calls++;
      if (v !== `v${i}`) wrong++;
    });
    expect(calls).toBeGreaterThan(values.length); // the warm-up and at least one timed pass
    expect(wrong).toBe(0);
    expect(ns).toBeGreaterThan(0);
  });
});
