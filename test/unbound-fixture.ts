// A real unbound on a loopback port that loads an RPZ zone file, for the consumer tests. Test names are
// served from auth zones used "for upstream" (unbound treats them as the authoritative servers it would
// recurse to, so the RPZ applies first; local-data would win over RPZ), so nothing needs the internet.
// scripts/install-consumers.sh installs unbound and dig.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { freePort } from './helpers.ts';

const UNBOUND = fs.existsSync('/usr/sbin/unbound') ? '/usr/sbin/unbound' : 'unbound';

export interface DigAnswer {
  status: string;
  answer: string[];
}

export interface TestZone {
  /** Zone apex, e.g. `example`. */
  name: string;
  /** `owner. A address` lines. */
  records: string[];
}

export interface Unbound {
  port: number;
  dig(name: string, type?: string): DigAnswer;
  close(): Promise<void>;
}

/** Starts unbound in `dir` with `rpzFile` as zone rpz.outpost.; resolves once it answers. */
export async function startUnbound(dir: string, rpzFile: string, zones: TestZone[]): Promise<Unbound> {
  if (spawnSync('dig', ['-v']).error || spawnSync(UNBOUND, ['-V']).error) throw new Error('unbound and dig are required: run scripts/install-consumers.sh');
  const files = zones.map((z) => {
    const file = path.join(dir, `${z.name}.zone`);
    fs.writeFileSync(file, [`$TTL 300`, `${z.name}. IN SOA ns.${z.name}. hostmaster.${z.name}. 1 3600 600 86400 300`, `${z.name}. IN NS ns.${z.name}.`, `ns.${z.name}. IN A 192.0.2.53`, ...z.records.map((r) => r.replace(' A ', ' IN A ')), ''].join('\n'));
    return { name: z.name, file };
  });
  const port = await freePort();
  const conf = path.join(dir, 'unbound.conf');
  fs.writeFileSync(conf, [
    'server:',
    `  interface: 127.0.0.1@${port}`,
    `  port: ${port}`,
    '  do-daemonize: no',
    '  chroot: ""',
    '  username: ""',
    `  directory: "${dir}"`,
    `  pidfile: "${path.join(dir, 'unbound.pid')}"`,
    '  use-syslog: no',
    '  logfile: ""',
    '  verbosity: 1',
    '  do-ip6: no',
    '  access-control: 127.0.0.0/8 allow',
    '  module-config: "respip iterator"',
    'rpz:',
    '  name: rpz.outpost.',
    `  zonefile: "${rpzFile}"`,
    '  rpz-log: yes',
    ...files.flatMap((z) => ['auth-zone:', `  name: "${z.name}."`, `  zonefile: "${z.file}"`, '  for-downstream: no', '  for-upstream: yes', '  fallback-enabled: no']),
    '',
  ].join('\n'));
  const check = spawnSync('unbound-checkconf', [conf], { encoding: 'utf8' });
  if (check.status !== 0) throw new Error(`unbound-checkconf: ${check.stdout}${check.stderr}`);

  const dig = (name: string, type = 'A'): DigAnswer => {
    const r = spawnSync('dig', [`@127.0.0.1`, '-p', String(port), name, type, '+time=2', '+tries=1', '+noall', '+comments', '+answer'], { encoding: 'utf8' });
    const status = /status: ([A-Z]+)/.exec(r.stdout)?.[1] ?? `no answer (${r.stderr || r.stdout})`;
    return { status, answer: r.stdout.split('\n').filter((l) => l && !l.startsWith(';')) };
  };
  let log = '';
  const proc: ChildProcess = spawn(UNBOUND, ['-d', '-c', conf], { stdio: ['ignore', 'pipe', 'pipe'] });
  proc.stdout!.on('data', (d) => (log += d));
  proc.stderr!.on('data', (d) => (log += d));
  const close = async () => {
    if (proc.exitCode != null || proc.signalCode != null) return;
    const exited = new Promise((r) => proc.once('exit', r));
    proc.kill('SIGTERM');
    await exited;
  };
  // Ready when it answers anything for the first test zone; ends on the first answer or when unbound exits.
  const probe = zones[0] ? `ns.${zones[0].name}` : 'localhost';
  for (let i = 0; i < 100; i++) {
    if (proc.exitCode != null) throw new Error(`unbound exited ${proc.exitCode}: ${log}`);
    if (!dig(probe).status.startsWith('no answer')) return { port, dig, close };
    await new Promise((r) => setTimeout(r, 100));
  }
  await close();
  throw new Error(`unbound did not answer: ${log}`);
}
