// Lookups over HTTP keep answering while a large package (300k indicators from real data) is imported into
// the same data dir by `outpost import`: no errors, no 5xx, values listed in both versions always found,
// values new in the second version found once the server has swapped in the new generation.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Indicator } from '../appliance/types.ts';
import { BIN, ROOT, cli, serve, tmpDir, type Served } from './helpers.ts';
import { BIG_SOURCES, grow, makeKeys, realIndicators, writeFull } from './sync-b-fixture.ts';

describe('lookups during a large sync', () => {
  const work = tmpDir('outpost-during-');
  const dataDir = path.join(work, 'var');
  let server: Served;
  let token: string;
  let v2: string;
  let known: string[];
  let fresh: string[];

  beforeAll(async () => {
    const keys = makeKeys(path.join(work, 'keys'));
    const real = await realIndicators(BIG_SOURCES);
    const kept = real.filter((_, i) => i % 5 !== 0);
    const v1 = grow(real, 300_000, 'a');
    const next = grow(kept, 310_000, 'b');
    const p1 = await writeFull(keys.key, path.join(work, 'out'), 'big', 1, v1);
    v2 = (await writeFull(keys.key, path.join(work, 'out'), 'big', 2, next)).path;
    const pick = (list: Indicator[], types: string[], step: number) => list.filter((x) => types.includes(x.t)).filter((_, i) => i % step === 0).map((x) => x.v);
    known = pick(kept, ['ipv4', 'domain', 'url', 'sha256', 'md5'], 397).slice(0, 300);
    const inV1 = new Set(v1.map((x) => `${x.t} ${x.v}`));
    fresh = next.filter((x) => x.v.startsWith('b') && !inV1.has(`${x.t} ${x.v}`)).filter((_, i) => i % 211 === 0).map((x) => x.v).slice(0, 100);
    expect(known.length).toBeGreaterThan(200);
    expect(fresh.length).toBeGreaterThan(50);
    expect(cli(['trust', 'add', keys.pubPath], { dataDir }).code).toBe(0);
    const r = cli(['import', p1.path], { dataDir });
    expect(r.code, r.stderr).toBe(0);
    token = cli(['token', 'create', '--name', 'during'], { dataDir }).lastLine;
    server = await serve(dataDir, ['--no-demo']);
  }, 150_000);

  afterAll(async () => {
    await server?.stop();
    fs.rmSync(work, { recursive: true, force: true });
  });

  it('answers every request while the import runs, and finds the new values after the swap', async () => {
    const lookup = async (values: string[]) => {
      const res = await fetch(`${server.url}/api/v1/lookup`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
        body: JSON.stringify({ values }),
      });
      return { status: res.status, body: (await res.json()) as { results: { normalized?: string; generation: number; matches: { indicator: string; kind: string; feed: string }[] }[] } };
    };
    const first = await lookup(known);
    expect(first.status).toBe(200);
    const startGen = first.body.results[0].generation;

    const child = spawn(process.execPath, [BIN, 'import', v2], { cwd: ROOT, env: { ...process.env, OUTPOST_DATA_DIR: dataDir, OUTPOST_LOG_LEVEL: 'warn' }, stdio: 'ignore' });
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    let importCode: number | null | undefined;
    void exited.then((c) => (importCode = c));

    let rounds = 0;
    let roundsDuringImport = 0;
    let swappedAt = -1;
    const statuses = new Map<number, number>();
    // Until the import has finished and the server has answered from the new generation several times.
    for (let afterSwap = 0; afterSwap < 5; rounds++) {
      if (rounds > 20_000) throw new Error('the server never swapped in the new generation');
      const { status, body } = await lookup([...known, ...fresh]);
      statuses.set(status, (statuses.get(status) ?? 0) + 1);
      expect(status, JSON.stringify(body).slice(0, 300)).toBe(200);
      const results = body.results;
      expect(results).toHaveLength(known.length + fresh.length);
      for (let i = 0; i < known.length; i++) {
        expect(results[i].matches.some((m) => m.feed === 'big' && m.indicator === results[i].normalized), `known ${known[i]} in round ${rounds}`).toBe(true);
      }
      if (importCode === undefined) roundsDuringImport++;
      const gen = results[0].generation;
      if (gen > startGen) {
        if (swappedAt < 0) swappedAt = rounds;
        // From the swap on, every new value is found exactly (not only as a subdomain of a real domain).
        for (let j = 0; j < fresh.length; j++) {
          const r = results[known.length + j];
          expect(r.matches.some((m) => m.kind === 'exact' && m.indicator === r.normalized), `new ${fresh[j]} after the swap`).toBe(true);
        }
        afterSwap++;
      }
    }
    expect(await exited).toBe(0);
    console.log(`lookup-during-sync: ${rounds} rounds of ${known.length + fresh.length} values, ${roundsDuringImport} while importing, swap seen at round ${swappedAt}, statuses ${JSON.stringify([...statuses])}`);
    expect(roundsDuringImport).toBeGreaterThan(0);
    expect([...statuses.keys()]).toEqual([200]);
  }, 180_000);
});
