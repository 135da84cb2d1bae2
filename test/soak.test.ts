// Load while changing (bounded, loopback): HTTP lookups run without pause while a new package generation is
// imported, exports stream over HTTP and from the CLI, and two online backups are taken. Asserts no errors
// and consistent answers: values in both generations are always found; once an answer comes from the new
// generation, values only in the new one are found and values only in the old one are not.
// SOAK_S sets the duration (default 60 s).
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyDatabaseFile } from '../appliance/backup.ts';
import { DATA, cli, serve, tmpDir, type Served } from './helpers.ts';
import { bearer, cliAsync, createToken, listValues, prepareRealData, request } from './ops-fixture.ts';

const SOAK_MS = Number(process.env.SOAK_S ?? 60) * 1000;
const WORKERS = 8;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function pick<T>(arr: T[], n: number, step: number): T[] {
  const out: T[] = [];
  for (let i = 0; out.length < n && i < arr.length * step; i += step) out.push(arr[i % arr.length]);
  return [...new Set(out)];
}

describe('soak: lookups during import, export and backup', () => {
  const work = tmpDir('outpost-soak-');
  let dataDir: string;
  let server: Served;
  let lookupToken: string;
  let exportToken: string;
  let v2: string;
  const ipsum = listValues('ipsum/levels/3.txt');
  const ipsumSet = new Set(ipsum);
  // Generation 1: ipsum + Emotet C2s. Generation 2: ipsum + LummaC2 domains + URLhaus URLs (a bigger import).
  const both = pick(ipsum, 40, 331);
  const oldOnly = pick(
    listValues('maltrail/malware/emotet.txt').filter((v) => /^\d+\.\d+\.\d+\.\d+:\d+$/.test(v)).map((v) => v.replace(/:\d+$/, '')).filter((v) => !ipsumSet.has(v)),
    20,
    53,
  );
  const newOnly = pick(
    listValues('maltrail/malware/lummac2.txt').filter((v) => /^[a-z0-9.-]+\.[a-z]{2,}$/i.test(v) && !v.includes('/')),
    20,
    97,
  );

  beforeAll(async () => {
    const real = prepareRealData(work, ['ipsum/levels/3.txt', 'maltrail/malware/emotet.txt'], 'soak');
    dataDir = real.dataDir;
    const b = cli(['provider', 'build', '--feed', 'soak', '--key', real.key, '--out', real.out, '--category', 'malware', '--version', '2',
      ...['ipsum/levels/3.txt', 'maltrail/malware/lummac2.txt', 'urlhaus/urls.csv'].map((f) => path.join(DATA, f))]);
    expect(b.code, b.stderr).toBe(0);
    v2 = b.lastLine;
    lookupToken = createToken(dataDir, 'soak-lookup');
    exportToken = createToken(dataDir, 'soak-export', 'export');
    server = await serve(dataDir, ['--no-demo'], { OUTPOST_RATE_LIMIT_RPS: '0' });
  });

  afterAll(async () => {
    await server?.stop();
    fs.rmSync(work, { recursive: true, force: true });
  });

  it(`runs ${SOAK_MS / 1000} s without an error and with consistent answers`, { timeout: SOAK_MS + 180_000 }, async () => {
    expect(both.length).toBeGreaterThanOrEqual(30);
    expect(oldOnly.length).toBeGreaterThanOrEqual(10);
    expect(newOnly.length).toBeGreaterThanOrEqual(10);
    const agent = new http.Agent({ keepAlive: true, maxSockets: WORKERS + 2 });
    const url = server.url;
    const errors: string[] = [];
    const stats = { lookups: 0, values: 0, afterSwap: 0, exports: 0, exportBytes: 0 };
    let g2 = Infinity; // the generation the import creates, known when the CLI returns
    let stop = false;

    /** One answer → the consistency rules. */
    const judge = (r: { value: string; verdict: string; generation: number; matches: { feed: string }[] }) => {
      if (both.includes(r.value) && r.verdict !== 'malicious') errors.push(`listed in both generations but ${r.verdict} at generation ${r.generation}: ${r.value}`);
      if (r.generation >= g2) {
        stats.afterSwap++;
        if (newOnly.includes(r.value) && r.verdict !== 'malicious') errors.push(`new-only value ${r.value} ${r.verdict} at generation ${r.generation}`);
        if (oldOnly.includes(r.value) && r.verdict !== 'unknown') errors.push(`old-only value ${r.value} ${r.verdict} at generation ${r.generation}`);
      }
    };

    // Before anything changes: generation 1 knows the old values and not the new ones.
    const pre = await request(`${url}/api/v1/lookup`, { method: 'POST', headers: bearer(lookupToken, { 'content-type': 'application/json' }), body: JSON.stringify({ values: [...oldOnly, ...newOnly] }) });
    const preResults = JSON.parse(pre.text).results as { verdict: string }[];
    expect(preResults.slice(0, oldOnly.length).every((r) => r.verdict === 'malicious')).toBe(true);
    expect(preResults.slice(oldOnly.length).every((r) => r.verdict === 'unknown')).toBe(true);

    const lookupWorker = async (w: number) => {
      const all = [...both, ...oldOnly, ...newOnly];
      for (let i = w; !stop; i++) {
        try {
          if (i % 5 === 0) {
            const values = pick(all, 25, 7 + w + i);
            const r = await request(`${url}/api/v1/lookup`, { method: 'POST', headers: bearer(lookupToken, { 'content-type': 'application/json' }), body: JSON.stringify({ values }), agent });
            if (r.status !== 200) errors.push(`batch ${r.status}: ${r.text.slice(0, 200)}`);
            else (JSON.parse(r.text).results as any[]).forEach((x, k) => judge({ ...x, value: values[k] }));
            stats.values += values.length;
          } else {
            const value = all[(i * 31 + w) % all.length];
            const r = await request(`${url}/api/v1/lookup?value=${encodeURIComponent(value)}`, { headers: bearer(lookupToken), agent });
            if (r.status !== 200) errors.push(`lookup ${r.status}: ${r.text.slice(0, 200)}`);
            else judge({ ...JSON.parse(r.text), value });
            stats.values++;
          }
          stats.lookups++;
        } catch (e) {
          errors.push(`lookup request failed: ${(e as Error).message}`);
        }
      }
    };

    const exportLoop = async () => {
      while (!stop) {
        try {
          const r = await request(`${url}/api/v1/export/csv`, { headers: bearer(exportToken), agent });
          if (r.status !== 200 || r.body.length < 1000) errors.push(`export ${r.status} ${r.body.length} bytes`);
          stats.exports++;
          stats.exportBytes += r.body.length;
        } catch (e) {
          errors.push(`export request failed: ${(e as Error).message}`);
        }
        await sleep(500);
      }
    };

    const t0 = Date.now();
    const workers = [...Array.from({ length: WORKERS }, (_, w) => lookupWorker(w)), exportLoop()];
    const ops: { name: string; code: number; stderr: string; at: number }[] = [];
    const op = async (name: string, args: string[]) => {
      const r = await cliAsync(args, { dataDir });
      ops.push({ name, code: r.code, stderr: r.stderr.slice(0, 300), at: Date.now() - t0 });
      return r;
    };

    await sleep(Math.min(3000, SOAK_MS / 10));
    const backup1 = path.join(work, 'soak-1.db');
    await op('backup during generation 1', ['backup', backup1]);
    // The import and a CLI export run side by side, under the lookup and HTTP export load.
    const csvDuring = path.join(work, 'during.csv');
    const [imp] = await Promise.all([op('import generation 2', ['import', v2]), op('CLI export during import', ['export', 'csv', '--out', csvDuring])]);
    expect(imp.code, imp.stderr).toBe(0);
    g2 = JSON.parse(imp.lastLine).generation;
    expect(g2).toBe(2);
    const again = await op('re-import (refused)', ['import', v2]);
    expect(again.stderr).toMatch(/^E_ROLLBACK|^E_EQUIVOCATION/m);
    const backup2 = path.join(work, 'soak-2.db');
    await op('backup during generation 2', ['backup', backup2]);

    while (Date.now() - t0 < SOAK_MS) await sleep(250);
    stop = true;
    await Promise.all(workers);
    agent.destroy();

    console.log(`soak ${((Date.now() - t0) / 1000).toFixed(0)} s: ${stats.lookups} requests (${stats.values} values, ${stats.afterSwap} answers from generation ${g2}), ${stats.exports} HTTP exports (${(stats.exportBytes / 1e6).toFixed(1)} MB); ops ${JSON.stringify(ops.map((o) => [o.name, o.code, o.at]))}`);
    expect(errors.slice(0, 20)).toEqual([]);
    for (const o of ops.filter((x) => x.name !== 're-import (refused)')) expect(o.code, `${o.name}: ${o.stderr}`).toBe(0);
    expect(stats.afterSwap).toBeGreaterThan(0);
    expect(stats.exports).toBeGreaterThan(0);
    expect(fs.statSync(csvDuring).size).toBeGreaterThan(1000);
    const finalCsv = await request(`${url}/api/v1/export/csv`, { headers: bearer(exportToken) });
    expect(finalCsv.text.toLowerCase()).toContain(newOnly[0].toLowerCase());
    expect(finalCsv.text).toContain(`\n${both[0]},ipv4,`);
    expect(finalCsv.text).not.toContain(`\n${oldOnly[0]},ipv4,`);

    for (const [file, gen] of [[backup1, 1], [backup2, 2]] as const) {
      const copy = `${file}.check`;
      fs.copyFileSync(file, copy);
      expect(verifyDatabaseFile(copy).generation).toBe(gen);
    }
    // The server survived and serves generation 2.
    const h = JSON.parse((await request(`${url}/healthz`)).text);
    expect(h.generation).toBe(2);
  });
});
