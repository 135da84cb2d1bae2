// A real syslog receiver for push tests: Debian's rsyslogd started on loopback ports (imtcp with
// octet-counted framing, optionally imudp), writing the RFC 5424 fields it parsed from each message to a
// file, one message per line. It can be stopped and started again on the same ports (the output file is
// kept), to test delivery across a receiver outage. scripts/install-consumers.sh installs rsyslog.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const RSYSLOGD = fs.existsSync('/usr/sbin/rsyslogd') ? '/usr/sbin/rsyslogd' : 'rsyslogd';

export interface Received {
  pri: number;
  app: string;
  msgid: string;
  sd: string;
  msg: string;
}

export interface Rsyslog {
  tcpPort: number;
  udpPort?: number;
  /** Every message received so far (across restarts), in arrival order. */
  received(): Received[];
  start(): Promise<void>;
  stop(): Promise<void>;
}

export const until = async (cond: () => boolean, what: string, ms = 20_000): Promise<void> => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
};

/** CEF parser from the spec: 7 pipe-separated header fields (\| and \\ escaped), then key=value pairs. */
export function parseCef(line: string): { header: string[]; ext: Record<string, string> } {
  const header: string[] = [];
  let cur = '';
  let i = 0;
  for (; i < line.length && header.length < 7; i++) {
    const ch = line[i];
    if (ch === '\\' && (line[i + 1] === '|' || line[i + 1] === '\\')) cur += line[++i];
    else if (ch === '|') {
      header.push(cur);
      cur = '';
    } else cur += ch;
  }
  const rest = line.slice(i);
  const ext: Record<string, string> = {};
  // A key starts after a space (or at the start) and ends at the first unescaped '='.
  const re = /(?:^| )([A-Za-z0-9_]+)=/g;
  const keys: { key: string; start: number; valueStart: number }[] = [];
  for (let m; (m = re.exec(rest)); ) {
    // an '=' preceded by a backslash is part of a value, never a key boundary
    if (rest[m.index + m[0].length - 2] === '\\') continue;
    keys.push({ key: m[1], start: m.index, valueStart: m.index + m[0].length });
  }
  const real = keys.filter((k) => !isEscaped(rest, k.valueStart - 1));
  real.forEach((k, n) => {
    const raw = rest.slice(k.valueStart, n + 1 < real.length ? real[n + 1].start : rest.length);
    ext[k.key] = raw.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c === 'r' ? '\r' : c));
  });
  return { header, ext };
}
function isEscaped(s: string, at: number): boolean {
  let n = 0;
  for (let j = at - 1; j >= 0 && s[j] === '\\'; j--) n++;
  return n % 2 === 1;
}

export async function startRsyslog(dir: string, ports: { tcp: number; udp?: number }): Promise<Rsyslog> {
  if (spawnSync(RSYSLOGD, ['-v']).error) throw new Error('rsyslogd is required: run scripts/install-consumers.sh');
  fs.mkdirSync(path.join(dir, 'work'), { recursive: true });
  const out = path.join(dir, 'out.log');
  // The receiver writes the RFC 5424 fields it parsed, tab-separated, one message per line.
  fs.writeFileSync(
    path.join(dir, 'rsyslog.conf'),
    [
      `global(workDirectory="${dir}/work" maxMessageSize="64k")`,
      `module(load="imtcp")`,
      ports.udp ? `module(load="imudp")` : '',
      `template(name="fields" type="string" string="%pri%\\t%app-name%\\t%msgid%\\t%structured-data%\\t%msg%\\n")`,
      `ruleset(name="siem") { action(type="omfile" file="${out}" template="fields") }`,
      `input(type="imtcp" address="127.0.0.1" port="${ports.tcp}" ruleset="siem")`,
      ports.udp ? `input(type="imudp" address="127.0.0.1" port="${ports.udp}" ruleset="siem")` : '',
      '',
    ].join('\n'),
  );
  let proc: ChildProcess | undefined;
  let log = '';
  const r: Rsyslog = {
    tcpPort: ports.tcp,
    udpPort: ports.udp,
    received: () =>
      fs.existsSync(out)
        ? fs.readFileSync(out, 'utf8').split('\n').filter(Boolean).map((l) => {
            const [pri, app, msgid, sd, ...msg] = l.split('\t');
            return { pri: Number(pri), app, msgid, sd, msg: msg.join('\t') };
          })
        : [],
    async start() {
      proc = spawn(RSYSLOGD, ['-n', '-f', path.join(dir, 'rsyslog.conf'), '-i', path.join(dir, 'rsyslogd.pid')], { stdio: ['ignore', 'pipe', 'pipe'] });
      proc.stdout!.on('data', (d) => (log += d));
      proc.stderr!.on('data', (d) => (log += d));
      // Ready once the TCP input accepts connections.
      await until(() => spawnSync('bash', ['-c', `exec 3<>/dev/tcp/127.0.0.1/${ports.tcp}`]).status === 0, `rsyslogd on ${ports.tcp}: ${log}`);
    },
    async stop() {
      const p = proc;
      proc = undefined;
      if (!p || p.exitCode !== null) return;
      const done = new Promise((res) => p.once('exit', res));
      p.kill('SIGTERM');
      await done;
    },
  };
  await r.start();
  return r;
}
