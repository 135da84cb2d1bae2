// Real consumer: unbound loads the RPZ export and answers on a loopback port. Listed names and
// their subdomains get NXDOMAIN; allowlisted names pass through and resolve (test names are served
// as local-data, so nothing needs the internet); unlisted names are untouched.
// scripts/install-consumers.sh installs unbound and dig.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exportFormat, writeExportFiles } from '../lookup/exports/index.ts';
import { addFeed, addRow, buildFixture, collect, NOW, type Fixture } from './exports-fixture.ts';
import { freePort } from './helpers.ts';

const UNBOUND = fs.existsSync('/usr/sbin/unbound') ? '/usr/sbin/unbound' : 'unbound';


interface DigAnswer { status: string; answer: string[] }

describe('unbound consumes the RPZ export', () => {
  let fx: Fixture;
  let proc: ChildProcess | undefined;
  let port = 0;
  let listed = '';
  let unboundLog = '';
  const dig = (name: string, type = 'A'): DigAnswer => {
    const r = spawnSync('dig', [`@127.0.0.1`, '-p', String(port), name, type, '+time=2', '+tries=1', '+noall', '+comments', '+answer'], { encoding: 'utf8' });
    const status = /status: ([A-Z]+)/.exec(r.stdout)?.[1] ?? `no answer (${r.stderr || r.stdout})`;
    const answer = r.stdout.split('\n').filter((l) => l && !l.startsWith(';'));
    return { status, answer };
  };

  beforeAll(async () => {
    if (spawnSync('dig', ['-v']).error || spawnSync(UNBOUND, ['-V']).error) throw new Error('unbound and dig are required: run scripts/install-consumers.sh');
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

    const testZones = [
      { name: 'example', records: ['good.outpost-test.example. A 192.0.2.11', 'unlisted-name.example. A 192.0.2.12'] },
      { name: 'github.com', records: ['github.com. A 192.0.2.10'] },
      { name: listed, records: [`${listed}. A 192.0.2.13`, `www.${listed}. A 192.0.2.14`] },
    ].map((z) => {
      const file = path.join(fx.dir, `${z.name}.zone`);
      fs.writeFileSync(file, [`$TTL 300`, `${z.name}. IN SOA ns.${z.name}. hostmaster.${z.name}. 1 3600 600 86400 300`, `${z.name}. IN NS ns.${z.name}.`, `ns.${z.name}. IN A 192.0.2.53`, ...z.records.map((r) => r.replace(' A ', ' IN A ')), ''].join('\n'));
      return { name: z.name, file };
    });
    port = await freePort();
    const conf = path.join(fx.dir, 'unbound.conf');
    fs.writeFileSync(conf, [
      'server:',
      `  interface: 127.0.0.1@${port}`,
      `  port: ${port}`,
      '  do-daemonize: no',
      '  chroot: ""',
      '  username: ""',
      `  directory: "${fx.dir}"`,
      `  pidfile: "${path.join(fx.dir, 'unbound.pid')}"`,
      '  use-syslog: no',
      '  logfile: ""',
      '  verbosity: 1',
      '  do-ip6: no',
      '  access-control: 127.0.0.0/8 allow',
      '  module-config: "respip iterator"',
      'rpz:',
      '  name: rpz.outpost.',
      `  zonefile: "${path.join(dir, 'outpost.rpz')}"`,
      '  rpz-log: yes',
      // Test names come from auth zones used "for upstream": unbound treats them as the authoritative
      // servers it would recurse to, so the RPZ is applied first (local-data would win over RPZ).
      ...testZones.flatMap((z) => ['auth-zone:', `  name: "${z.name}."`, `  zonefile: "${z.file}"`, '  for-downstream: no', '  for-upstream: yes', '  fallback-enabled: no']),
      '',
    ].join('\n'));
    const check = spawnSync('unbound-checkconf', [conf], { encoding: 'utf8' });
    if (check.status !== 0) throw new Error(`unbound-checkconf: ${check.stdout}${check.stderr}`);
    proc = spawn(UNBOUND, ['-d', '-c', conf], { stdio: ['ignore', 'pipe', 'pipe'] });
    proc.stdout!.on('data', (d) => (unboundLog += d));
    proc.stderr!.on('data', (d) => (unboundLog += d));
    // Ready when it answers; the loop ends on the first answer or when unbound exits.
    for (let i = 0; i < 100; i++) {
      if (proc.exitCode != null) throw new Error(`unbound exited ${proc.exitCode}: ${unboundLog}`);
      if (!dig('unlisted-name.example').status.startsWith('no answer')) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`unbound did not answer: ${unboundLog}`);
  });

  afterAll(async () => {
    if (proc && proc.exitCode == null) {
      const exited = new Promise((r) => proc!.once('exit', r));
      proc.kill('SIGTERM');
      await exited;
    }
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
