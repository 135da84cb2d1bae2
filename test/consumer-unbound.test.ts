// Real consumer: unbound loads the RPZ export and answers on a loopback port. Listed names and
// their subdomains get NXDOMAIN; allowlisted names pass through and resolve (test names are served
// from auth zones, test/unbound-fixture.ts, so nothing needs the internet); unlisted names are untouched.
// scripts/install-consumers.sh installs unbound and dig.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exportFormat, writeExportFiles } from '../lookup/exports/index.ts';
import { addFeed, addRow, buildFixture, collect, NOW, type Fixture } from './exports-fixture.ts';
import { startUnbound, type Unbound } from './unbound-fixture.ts';

describe('unbound consumes the RPZ export', () => {
  let fx: Fixture;
  let unbound: Unbound | undefined;
  let listed = '';
  const dig = (name: string, type = 'A') => unbound!.dig(name, type);

  beforeAll(async () => {
    fx = buildFixture();
    // Hand-made overlap on top of the real data: an allowlisted host under a blocked domain.
    addFeed(fx.db, 'local-block', 'block', 'phishing', 90);
    addFeed(fx.db, 'local-allow', 'allow', null, null);
    addRow(fx.db, 'local-block', 'block', 'domain', 'outpost-test.example');
    addRow(fx.db, 'local-allow', 'allow', 'domain', 'good.outpost-test.example');
    const dir = path.join(fx.dir, 'exports');
    await writeExportFiles(fx.db, dir, { now: NOW });
    const zone = fs.readFileSync(path.join(dir, 'outpost.rpz'), 'utf8');
    listed = /^([a-z0-9-]+\.[a-z]{2,}) CNAME \.$/m.exec(zone.split('; Outpost response policy zone')[1])![1];

    unbound = await startUnbound(fx.dir, path.join(dir, 'outpost.rpz'), [
      { name: 'example', records: ['good.outpost-test.example. A 192.0.2.11', 'unlisted-name.example. A 192.0.2.12'] },
      { name: 'github.com', records: ['github.com. A 192.0.2.10'] },
      { name: listed, records: [`${listed}. A 192.0.2.13`, `www.${listed}. A 192.0.2.14`] },
    ]);
  });

  afterAll(async () => {
    await unbound?.close();
    fx?.close();
  });

  it('answers NXDOMAIN for a listed name that would otherwise resolve', () => {
    expect(dig(listed).status).toBe('NXDOMAIN');
  });

  it('answers NXDOMAIN for subdomains of a listed name', () => {
    expect(dig(`www.${listed}`).status).toBe('NXDOMAIN');
    expect(dig('deep.sub.outpost-test.example').status).toBe('NXDOMAIN');
  });

  it('lets an allowlisted name under a blocked domain pass through and resolve', () => {
    const a = dig('good.outpost-test.example');
    expect(a.status).toBe('NOERROR');
    expect(a.answer.join('\n')).toContain('192.0.2.11');
  });

  it('lets a real allowlisted name (tranco) pass through', () => {
    const a = dig('github.com');
    expect(a.status).toBe('NOERROR');
    expect(a.answer.join('\n')).toContain('192.0.2.10');
  });

  it('does not touch unlisted names', () => {
    const a = dig('unlisted-name.example');
    expect(a.status).toBe('NOERROR');
    expect(a.answer.join('\n')).toContain('192.0.2.12');
  });

  it('serves a walled-garden CNAME when that policy is chosen', async () => {
    const zone = collect(exportFormat(fx.db, 'rpz', { now: NOW, rpzPolicy: { cname: 'walled.example' } }));
    expect(zone).toMatch(new RegExp(`^${listed.replace(/\./g, '\\.')} CNAME walled\\.example\\.$`, 'm'));
    expect(zone).toContain('good.outpost-test.example CNAME rpz-passthru.');
  });
});
