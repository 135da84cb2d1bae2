// `outpost <command>`: the CLI. Exit codes: 0 success, 1 failure (stderr starts with a stable E_ code), 2 usage.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Command, CommanderError, Option } from 'commander';
import { loadConfig, type Config } from './config.ts';
import { layout, openDb } from './db.ts';
import { OutpostError, asOutpostError } from './errors.ts';
import { createLogger, type Logger } from './log.ts';
import { countUsers } from './users.ts';

interface GlobalOpts {
  dataDir?: string;
  logLevel?: string;
}

function config(cmd: Command, extra: Partial<Record<keyof Config, string | number | boolean | undefined>> = {}): Config {
  const g = cmd.optsWithGlobals() as GlobalOpts;
  return loadConfig({ dataDir: g.dataDir, logLevel: g.logLevel, ...extra });
}

function logger(cfg: Config): Logger {
  return createLogger(cfg.logLevel);
}

function print(line: string): void {
  process.stdout.write(line + '\n');
}

/** Progress on stderr for long applies: a bar on a terminal, a line every few seconds otherwise. */
async function withProgress<T>(label: string, run: (onProgress: (p: { done: number; total: number }) => void) => Promise<T>): Promise<T> {
  const { default: cliProgress } = await import('cli-progress');
  let bar: InstanceType<typeof cliProgress.SingleBar> | undefined;
  let lastLine = 0;
  try {
    return await run(({ done, total }) => {
      if (total < 50_000) return;
      if (process.stderr.isTTY) {
        if (!bar) {
          bar = new cliProgress.SingleBar({ format: `${label} [{bar}] {percentage}% {value}/{total} indicators`, stream: process.stderr }, cliProgress.Presets.shades_classic);
          bar.start(total, 0);
        }
        bar.update(done);
      } else if (Date.now() - lastLine > 2000 || done === total) {
        lastLine = Date.now();
        process.stderr.write(`${label}: ${done}/${total} indicators (${Math.floor((100 * done) / total)}%)\n`);
      }
    });
  } finally {
    bar?.stop();
  }
}

export function buildCli(): Command {
  const program = new Command('outpost')
    .description('Outpost: on-premises threat-intelligence appliance')
    .option('--data-dir <dir>', 'data directory (env OUTPOST_DATA_DIR, default ./var)')
    .option('--log-level <level>', 'pino log level (env OUTPOST_LOG_LEVEL, default info)')
    .showHelpAfterError()
    .exitOverride();

  program
    .command('serve')
    .description('lookup API + console + sync scheduler')
    .option('--host <host>', 'listen address (env OUTPOST_HOST, default 127.0.0.1)')
    .option('--port <port>', 'listen port (env OUTPOST_PORT, default 8080)')
    .option('--no-demo', 'do not seed demo data on first start')
    .action(async (opts, cmd) => {
      const cfg = config(cmd, { host: opts.host, port: opts.port, noDemo: opts.demo === false ? true : undefined });
      const log = logger(cfg);
      // OUTPOST_HTTP_WORKERS > 1: HTTP workers share the port, this process stays the one writer (cluster.ts).
      const { startServing } = await import('./cluster.ts');
      const app = await startServing(cfg, log);
      printBanner(app, cfg);
      const stop = async (sig: string) => {
        log.info({ signal: sig }, 'shutting down');
        await app.close();
        process.exit(0);
      };
      process.once('SIGINT', () => void stop('SIGINT'));
      process.once('SIGTERM', () => void stop('SIGTERM'));
      await new Promise(() => {});
    });

  program
    .command('import')
    .description('verify and apply an offline package (a .tar file or a directory of them)')
    .argument('<package>', 'package .tar file or directory')
    .option('--dry-run', 'verify and print what would change, changing nothing')
    .action(async (pkg: string, opts, cmd) => {
      const cfg = config(cmd);
      const db = openDb(cfg.dataDir);
      const { importPackage } = await import('../sync/import.ts');
      const files = fs.existsSync(pkg) && fs.statSync(pkg).isDirectory()
        ? fs.readdirSync(pkg).filter((f) => f.endsWith('.tar')).sort().map((f) => path.join(pkg, f))
        : [pkg];
      if (!files.length) throw new OutpostError('E_NOT_FOUND', `no .tar packages in ${pkg}`);
      let failed: OutpostError | undefined;
      for (const f of files) {
        try {
          const r = await withProgress(`applying ${f}`, (onProgress) => importPackage(cfg, db, f, { dryRun: opts.dryRun, onProgress }));
          const m = r.manifest;
          if (r.dryRun) {
            print(JSON.stringify({ package: f, ok: true, dry_run: true, feed: m.feed, kind: m.kind, type: m.type, version: m.version, key_id: m.key_id, created: m.created, expires: m.expires, indicators: m.counts.total, by_type: m.counts.by_type }));
          } else {
            print(JSON.stringify({ package: f, ok: true, feed: r.feed, version: r.version, type: r.type, generation: r.generation, added: r.added, removed: r.removed, total: r.total }));
          }
        } catch (e) {
          const err = asOutpostError(e);
          print(JSON.stringify({ package: f, ok: false, error: err.toJSON() }));
          process.stderr.write(`${err.toString()}\n`);
          failed ??= err;
        }
      }
      db.close();
      if (failed) process.exitCode = failed.exitCode;
    });

  program
    .command('lookup')
    .description('local lookup, one JSON result per line')
    .argument('<value...>', 'values (IPs, domains, URLs, hashes; defanged accepted)')
    .action(async (values: string[], _opts, cmd) => {
      const cfg = config(cmd);
      const db = openDb(cfg.dataDir);
      const { LookupEngine } = await import('../lookup/engine.ts');
      const { policyFrom } = await import('../lookup/verdict.ts');
      const { FeedPolicy, policyOptionsOf } = await import('./freshness.ts');
      const engine = new LookupEngine(db, { fpRate: cfg.filterFpRate, verdict: policyFrom(cfg), feedPolicy: new FeedPolicy(db, policyOptionsOf(cfg)) });
      await engine.reload();
      for (const r of engine.lookupMany(values)) print(JSON.stringify(r));
      db.close();
    });

  program
    .command('status')
    .description('generation, per-feed versions, counts, data age, last sync result')
    .option('--json', 'one JSON object')
    .action(async (opts, cmd) => {
      const cfg = config(cmd);
      const db = openDb(cfg.dataDir);
      const { applianceStatus } = await import('./status.ts');
      const { exportsStatus } = await import('../lookup/exports/index.ts');
      const s = applianceStatus(db, cfg.staleAfterS);
      const ex = exportsStatus(layout(cfg.dataDir).exports);
      db.close();
      if (opts.json) return print(JSON.stringify({ ...s, exports: ex }));
      print(`health: ${s.health}   generation: ${s.generation}   indicators: ${s.indicators}   data age: ${s.data_age_s === null ? '-' : `${s.data_age_s}s`}`);
      print(`by type: ${Object.entries(s.by_type).map(([t, n]) => `${t}=${n}`).join(' ') || '-'}`);
      for (const f of s.feeds) print(`feed ${f.name} (${f.kind}) version ${f.version}: ${f.count} indicators, created ${f.created}, applied ${f.applied_at}${f.stale ? `  STALE (older than ${f.stale_after_s}s, fail-${f.fail_mode})` : ''}`);
      if (s.last_package) print(`last package: ${s.last_package.status} ${s.last_package.feed ?? '?'}@${s.last_package.version ?? '?'} at ${s.last_package.received_at}${s.last_package.code ? ` ${s.last_package.code}: ${s.last_package.message}` : ''}`);
      if (!ex) print('export files: none written yet');
      else {
        const last = ex.generated_at ? `written at ${ex.generated_at}${ex.generation !== null ? ` for generation ${ex.generation}` : ''}${ex.took_ms !== null ? ` in ${(ex.took_ms / 1000).toFixed(1)} s` : ''}` : 'none written yet';
        print(`export files: ${last}${ex.running ? '; a run is writing new files now' : ''}${ex.not_written.length ? `; off: ${ex.not_written.join(', ')}` : ''}`);
      }
      for (const u of s.upstreams) {
        const last = !u.last ? 'never synced' : u.last.ok ? `last sync ok at ${u.last.at}` : `last sync FAILED at ${u.last.at}: ${u.last.code}: ${u.last.message}`;
        print(`upstream ${u.name} ${u.url} "${u.schedule}" root v${u.root_version ?? '-'}: ${last}${u.failures ? `; ${u.failures} failure(s) in a row, backing off until ${u.backoff_until ?? 'now'}` : ''}; next due ${u.next_due ?? '-'}`);
      }
    });

  const trust = program.command('trust').description('provider keys this appliance accepts');
  trust
    .command('add')
    .argument('<public-key-file>')
    .option('--label <text>', 'a note shown in `trust list`')
    .action(async (file: string, opts, cmd) => {
      const cfg = config(cmd);
      const db = openDb(cfg.dataDir);
      const { trustAdd } = await import('../sync/trust.ts');
      const row = trustAdd(db, file, { label: opts.label });
      db.close();
      print(`trusted key ${row.key_id}`);
    });
  trust.command('list').option('--json').action(async (opts, cmd) => {
    const cfg = config(cmd);
    const db = openDb(cfg.dataDir);
    const { trustList } = await import('../sync/trust.ts');
    const rows = trustList(db);
    db.close();
    for (const r of rows) print(opts.json ? JSON.stringify({ key_id: r.key_id, label: r.label, added_at: r.added_at, revoked_at: r.revoked_at }) : `${r.key_id}  ${r.revoked_at ? `REVOKED ${r.revoked_at}` : 'active'}  added ${r.added_at}  ${r.label ?? ''}`);
  });
  trust.command('remove').argument('<key-id>').action(async (keyId: string, _o, cmd) => {
    const cfg = config(cmd);
    const db = openDb(cfg.dataDir);
    const { trustRemove } = await import('../sync/trust.ts');
    trustRemove(db, keyId);
    db.close();
    print(`revoked key ${keyId}`);
  });

  // ---- console users (ui/) ----
  const user = program.command('user').description('console users (the password is read from stdin, never from the command line)');
  const readNewPassword = async (name: string): Promise<string> => {
    const { readPassword } = await import('./users.ts');
    const pw = await readPassword(`password for ${name}: `);
    if (process.stdin.isTTY && (await readPassword('again: ')) !== pw) throw new OutpostError('E_INPUT', 'the passwords differ');
    return pw;
  };
  user
    .command('add')
    .description('add a console user; first line of stdin (or typed at a terminal) is the password')
    .argument('<name>')
    .addOption(new Option('--role <role>', 'what the user may do').choices(['admin', 'viewer']).default('viewer'))
    .action(async (name: string, opts, cmd) => {
      const cfg = config(cmd);
      const db = openDb(cfg.dataDir);
      try {
        const { addUser } = await import('./users.ts');
        const u = await addUser(db, name, opts.role, await readNewPassword(name));
        print(`added ${u.role} user ${u.name}; sign in at /login`);
      } finally {
        db.close();
      }
    });
  user
    .command('passwd')
    .description("set a console user's password (stdin) and end their sessions")
    .argument('<name>')
    .action(async (name: string, _o, cmd) => {
      const cfg = config(cmd);
      const db = openDb(cfg.dataDir);
      try {
        const { setPassword } = await import('./users.ts');
        await setPassword(db, name, await readNewPassword(name));
        print(`password of ${name} set`);
      } finally {
        db.close();
      }
    });
  user.command('list').option('--json').action(async (opts, cmd) => {
    const cfg = config(cmd);
    const db = openDb(cfg.dataDir);
    const { listUsers } = await import('./users.ts');
    for (const u of listUsers(db)) print(opts.json ? JSON.stringify(u) : `${u.name}  ${u.role}  created ${u.created_at}  last sign-in ${u.last_login_at ?? '-'}`);
    db.close();
  });

  const token = program.command('token').description('API tokens');
  token
    .command('create')
    .requiredOption('--name <client>', 'who uses the token')
    .addOption(new Option('--scope <scope>', 'what it may do').choices(['lookup', 'export', 'admin']).default('lookup'))
    .option('--expires <iso-date>', 'expiry time (ISO 8601)')
    .action(async (opts, cmd) => {
      const cfg = config(cmd);
      const db = openDb(cfg.dataDir);
      const { createToken } = await import('./tokens.ts');
      if (opts.expires && !Number.isFinite(Date.parse(opts.expires))) throw new OutpostError('E_USAGE', '--expires must be an ISO 8601 date');
      const { token: t, row } = createToken(db, opts.name, opts.scope, { expiresAt: opts.expires ? new Date(opts.expires).toISOString() : undefined });
      db.close();
      process.stderr.write(`token ${row.id} "${row.name}" scope ${row.scope} — shown once, store it now:\n`);
      print(t);
    });
  token.command('list').option('--json').action(async (opts, cmd) => {
    const cfg = config(cmd);
    const db = openDb(cfg.dataDir);
    const { listTokens } = await import('./tokens.ts');
    for (const r of listTokens(db)) print(opts.json ? JSON.stringify(r) : `${r.id}  ${r.name}  ${r.scope}  created ${r.created_at}  last used ${r.last_used_at ?? '-'}  expires ${r.expires_at ?? '-'}${r.revoked_at ? '  REVOKED' : r.expires_at && Date.parse(r.expires_at) <= Date.now() ? '  EXPIRED' : ''}`);
    db.close();
  });
  token.command('revoke').argument('<id>').action(async (id: string, _o, cmd) => {
    const cfg = config(cmd);
    const db = openDb(cfg.dataDir);
    const { revokeToken } = await import('./tokens.ts');
    revokeToken(db, Number(id));
    db.close();
    print(`revoked token ${id}`);
  });

  const provider = program.command('provider').description('provider side: keys and signed packages');
  provider
    .command('keygen')
    .requiredOption('--out <dir>', 'directory for <name>.key (0600) and <name>.pub')
    .option('--name <name>', 'file base name (default "provider", or "root" with --root)')
    .option('--root', 'a root-of-trust key (signs root.json, kept offline); see docs/sync.md')
    .action(async (opts) => {
      const { generateKeyPair } = await import('../sync/keys.ts');
      const k = generateKeyPair(opts.out, opts.name ?? (opts.root ? 'root' : 'provider'));
      if (opts.root) {
        process.stderr.write(`root key id ${k.keyId}\nprivate key: ${k.privatePath} (keep it offline)\npublic key: ${k.publicPath}\nnext: outpost provider rotate --out <tree> --root-key ${k.privatePath} --add-signing-key <provider.pub>\n`);
      } else {
        process.stderr.write(`key id ${k.keyId}\nprivate key: ${k.privatePath} (keep it secret)\npublic key: ${k.publicPath} (give it to appliances: outpost trust add ${k.publicPath})\n`);
      }
      print(k.publicPath);
    });
  provider
    .command('build')
    .description('build a signed full package from source files (plain lists, CSV, STIX 2.x, MISP event, MISP warninglist)')
    .requiredOption('--feed <name>', 'feed name')
    .requiredOption('--key <private-key>', 'provider private key (.key)')
    .requiredOption('--out <dir>', 'output directory')
    .option('--base <previous-package>', 'also build a delta against this earlier package of the feed (prints the delta path last)')
    .addOption(new Option('--kind <kind>', 'block feed or allowlist').choices(['block', 'allow']).default('block'))
    .option('--category <c>', 'default category of the indicators')
    .option('--confidence <0-100>', 'default confidence', (v) => Number(v))
    .option('--version <n>', 'package version (default: creation time in ms)', (v) => Number(v))
    .option('--expires-days <n>', 'package expiry in days (default 30)', (v) => Number(v))
    .option('--tlp <marking>', 'TLP for indicators whose source gives none: CLEAR, GREEN, AMBER, AMBER+STRICT, RED (docs/context.md)')
    .argument('<source-file...>')
    .action(async (files: string[], opts) => {
      const { buildPackage } = await import('../sync/provider-build.ts');
      const r = await buildPackage({ feed: opts.feed, keyPath: opts.key, outDir: opts.out, files, kind: opts.kind, category: opts.category, confidence: opts.confidence, version: opts.version, expiresDays: opts.expiresDays, base: opts.base, tlp: opts.tlp });
      for (const s of r.reports) {
        process.stderr.write(`${s.file}: ${s.format}, ${s.lines} lines, ${s.accepted} accepted, ${s.malformed} malformed, ${s.duplicates} duplicates, ${s.skipped ?? 0} skipped\n`);
        for (const note of s.notes ?? []) process.stderr.write(`  note: ${note}\n`);
        for (const x of s.samples.slice(0, 5)) process.stderr.write(`  line ${x.line}: ${JSON.stringify(x.text)} — ${x.error}\n`);
      }
      process.stderr.write(`feed ${r.manifest.feed} version ${r.manifest.version}: ${r.manifest.counts.total} indicators, sha256 ${r.sha256}\n`);
      if (r.delta) {
        process.stderr.write(`full package: ${r.path}\ndelta from version ${r.delta.manifest.base_version}: ${r.delta.added} added or changed, ${r.delta.removed} removed, sha256 ${r.delta.sha256}\n`);
        print(r.delta.path);
      } else {
        print(r.path);
      }
    });
  // ---- context and exchange (sync/reference.ts, sync/share.ts, lookup/actors.ts; docs/context.md) ----
  provider
    .command('reference')
    .description('build a signed reference package (actors, families, techniques) from MISP galaxy JSON and STIX bundles')
    .requiredOption('--key <private-key>', 'provider private key (.key)')
    .requiredOption('--out <dir>', 'output directory')
    .option('--name <set>', 'reference set name (default "reference")')
    .option('--version <n>', 'package version (default: creation time in ms)', (v) => Number(v))
    .option('--expires-days <n>', 'package expiry in days (default 365)', (v) => Number(v))
    .argument('<source-file...>')
    .action(async (files: string[], opts) => {
      const { buildReferencePackage } = await import('../sync/reference.ts');
      const r = await buildReferencePackage({ name: opts.name, keyPath: opts.key, outDir: opts.out, files, version: opts.version, expiresDays: opts.expiresDays });
      for (const s of r.reports) process.stderr.write(`${s.file}: ${s.format}, ${s.lines} records, ${s.accepted} accepted, ${s.malformed} malformed, ${s.duplicates} duplicates, ${s.skipped ?? 0} skipped\n`);
      process.stderr.write(`reference set ${r.manifest.feed} version ${r.manifest.version}: ${r.counts.actor} actors, ${r.counts.family} families, ${r.counts.technique} techniques, sha256 ${r.sha256}\n`);
      print(r.path);
    });
  program
    .command('actor')
    .description('a threat actor or family by any alias, with its indicators here')
    .argument('<name-or-alias>')
    .option('--limit <n>', 'indicators listed (default 100)', (v) => Number(v))
    .option('--json', 'one JSON object')
    .action(async (name: string, opts, cmd) => {
      const cfg = config(cmd);
      const db = openDb(cfg.dataDir);
      try {
        const { actorReport } = await import('../lookup/actors.ts');
        const r = actorReport(db, name, { limit: opts.limit });
        if (opts.json) return print(JSON.stringify(r));
        const e = r.entity;
        print(`${e.kind} ${e.name}  (${e.source}, ${e.id})${e.country ? `  country ${e.country}` : ''}`);
        if (e.aliases.length) print(`aliases: ${e.aliases.join(', ')}`);
        for (const x of e.same_as_entities) print(`same as: ${x.name} (${x.source}, ${x.id})`);
        if (e.uses_names.length) print(`uses: ${e.uses_names.map((u) => `${u.name} (${u.kind})`).join(', ')}`);
        if (r.also.length) print(`the name also matches: ${r.also.map((x) => `${x.name} (${x.kind}, ${x.source})`).join(', ')}`);
        print(`indicators here: ${r.total}${r.total > r.indicators.length ? ` (first ${r.indicators.length} shown)` : ''}`);
        for (const i of r.indicators) print(`  ${i.type}\t${i.value}\t${i.feed}\t${i.via}`);
      } finally {
        db.close();
      }
    });
  const share = program.command('share').description("this site's findings for peers");
  share
    .command('build')
    .description('signed package (block feed share-<site>) of local block overrides and sightings, honouring TLP; prints its path last')
    .requiredOption('--key <site-key>', "this site's private key (.key); peers trust its .pub")
    .requiredOption('--out <dir>', 'output directory')
    .addOption(new Option('--tlp-max <level>', 'highest marking that may leave (RED never does)').choices(['green', 'amber']).default('green'))
    .option('--tlp-unmarked <marking>', 'marking of findings that matched nothing marked (default GREEN)')
    .option('--site <name>', 'feed name share-<name> (default: the key id)')
    .option('--min-hits <n>', 'sightings seen fewer times are not shared (default 3)', (v) => Number(v))
    .option('--with-reasons', 'include the reasons admins gave for overrides')
    .option('--expires-days <n>', 'package expiry in days (default 30)', (v) => Number(v))
    .action(async (opts, cmd) => {
      const cfg = config(cmd);
      const db = openDb(cfg.dataDir);
      try {
        const { buildShare } = await import('../sync/share.ts');
        const r = await buildShare(cfg, db, { keyPath: opts.key, outDir: opts.out, tlpMax: opts.tlpMax, tlpUnmarked: opts.tlpUnmarked, site: opts.site, minHits: opts.minHits, withReasons: Boolean(opts.withReasons), expiresDays: opts.expiresDays });
        const w = r.withheld;
        process.stderr.write(`feed ${r.feed} version ${r.manifest.version}: ${r.shared.total} indicators (${r.shared.overrides} overrides, ${r.shared.sightings} sightings); withheld: ${w.red} RED, ${w.tlp} over --tlp-max, ${w.not_malicious} no longer malicious, ${w.below_threshold} below --min-hits, ${w.false_positive} false positives, ${w.invalid} invalid; sha256 ${r.sha256}\n`);
        print(r.path);
      } finally {
        db.close();
      }
    });
  // ---- sync: publish, root of trust (sync/publish.ts, sync/root.ts; docs/sync.md) ----
  const collect = (v: string, prev: string[]) => [...prev, v];
  provider
    .command('publish')
    .description('lay packages out as a static HTTP tree (root.json, index.json, feeds/<feed>/latest.json, packages/<sha256>.tar)')
    .requiredOption('--from <dir>', 'directory of packages (.tar)')
    .requiredOption('--out <dir>', 'the tree to write (serve it with any static file server)')
    .option('--key <private-key>', 'signing key for index.json and latest.json (env OUTPOST_SIGNING_KEY)')
    .option('--root-key <root.key>', 'root key(s): create root version 1 when the tree has none (repeatable)', collect, [])
    .option('--threshold <n>', 'root signatures required (new root only)', (v) => Number(v))
    .option('--expires-days <n>', 'latest.json and index.json expire after n days (default 7); re-publish before', (v) => Number(v))
    .option('--max-deltas <n>', 'newest deltas listed per feed (default 30)', (v) => Number(v))
    .action(async (opts) => {
      const keyPath = opts.key ?? process.env.OUTPOST_SIGNING_KEY;
      if (!keyPath) throw new OutpostError('E_USAGE', 'give --key <private-key> (or OUTPOST_SIGNING_KEY): index.json and latest.json are signed');
      const { publishTree } = await import('../sync/publish.ts');
      const r = await publishTree({ from: opts.from, out: opts.out, keyPath, rootKeyPaths: opts.rootKey, threshold: opts.threshold, expiresDays: opts.expiresDays, maxDeltas: opts.maxDeltas });
      for (const s of r.skipped) process.stderr.write(`skipped ${s.file}: ${s.reason}\n`);
      for (const f of r.feeds) process.stderr.write(`feed ${f.feed} version ${f.version}: ${f.full}, ${f.deltas} delta(s)\n`);
      if (r.root === null) process.stderr.write('no root of trust in this tree: appliances need the signing key itself (outpost trust add); see docs/sync.md\n');
      print(JSON.stringify({ ok: true, out: opts.out, root_version: r.root, feeds: r.feeds }));
    });
  provider
    .command('rotate')
    .description('write the next root-of-trust version: add/revoke signing keys, change root keys or threshold (docs/sync.md)')
    .requiredOption('--out <dir>', 'the published tree')
    .option('--root-key <root.key>', 'a root private key present at this ceremony (repeatable)', collect, [])
    .option('--add-root-key <root.pub>', 'repeatable', collect, [])
    .option('--remove-root-key <key-id>', 'repeatable', collect, [])
    .option('--threshold <n>', 'root signatures required from now on', (v) => Number(v))
    .option('--add-signing-key <provider.pub>', 'repeatable', collect, [])
    .option('--revoke-signing-key <key-id>', 'repeatable', collect, [])
    .option('--signing-valid-days <n>', 'added signing keys lapse after n days', (v) => Number(v))
    .option('--expires-days <n>', 'root expiry (default 365)', (v) => Number(v))
    .option('--draft <file>', 'when signatures are missing, write the partly signed root here for the other key holders')
    .option('--sign <draft>', 'add the --root-key signatures to a draft; publishes it once the thresholds are met')
    .action(async (opts) => {
      const { rotateRoot } = await import('../sync/root.ts');
      const { loadPrivateKey } = await import('../sync/keys.ts');
      const r = rotateRoot({
        tree: opts.out, rootKeys: (opts.rootKey as string[]).map(loadPrivateKey), addRootKeys: opts.addRootKey, removeRootKeys: opts.removeRootKey,
        threshold: opts.threshold, addSigningKeys: opts.addSigningKey, revokeSigningKeys: opts.revokeSigningKey, signingValidDays: opts.signingValidDays,
        expiresDays: opts.expiresDays, draft: opts.draft, fromDraft: opts.sign,
      });
      if (r.draft) process.stderr.write(`root version ${r.version} needs ${r.missing.old} more signature(s) by previous root keys and ${r.missing.own} by its own; pass ${r.draft} on: outpost provider rotate --out ${opts.out} --sign ${r.draft} --root-key <root.key>\n`);
      else process.stderr.write(`published root version ${r.version}: ${r.root.root_keys.length} root key(s), threshold ${r.root.threshold}, ${r.root.signing_keys.length} signing key(s), ${r.root.revoked_keys.length} revoked\n`);
      print(JSON.stringify({ ok: true, version: r.version, published: r.path, draft: r.draft, missing: r.missing }));
    });

  // ---- upstreams and pulling (sync/upstreams.ts, sync/pull.ts; docs/sync.md) ----
  const upstream = program.command('upstream').description('providers the sync daemon pulls from');
  upstream
    .command('add')
    .argument('<name>')
    .argument('<base-url>', 'root of a tree written by provider publish (or a mirror)')
    .option('--schedule <cron>', 'when serve pulls it (default "*/30 * * * *")')
    .option('--root <root.json>', "pin the provider's root of trust from a file obtained out of band")
    .option('--trust-on-first-use', "pin whatever root.json the upstream serves now (weaker than --root)")
    .action(async (name: string, url: string, opts, cmd) => {
      const cfg = config(cmd);
      const db = openDb(cfg.dataDir);
      try {
        const { addUpstream } = await import('../sync/upstreams.ts');
        const { fetchLimitsOf } = await import('../sync/fetch.ts');
        const u = await addUpstream(db, name, url, { schedule: opts.schedule, rootFile: opts.root, trustOnFirstUse: opts.trustOnFirstUse, limits: fetchLimitsOf(cfg) });
        if (!u.root) process.stderr.write(`no root of trust pinned: packages from ${name} verify only with keys added by "outpost trust add"\n`);
        print(JSON.stringify({ ok: true, name: u.name, url: u.base_url, schedule: u.schedule, root_version: u.root_version, root_keys: u.root?.root_keys.map((k) => k.key_id) ?? [], signing_keys: u.root?.signing_keys.map((k) => k.key_id) ?? [] }));
      } finally {
        db.close();
      }
    });
  upstream.command('list').option('--json').action(async (opts, cmd) => {
    const cfg = config(cmd);
    const db = openDb(cfg.dataDir);
    const { listUpstreams } = await import('../sync/upstreams.ts');
    for (const u of listUpstreams(db)) {
      const { index_doc: _i, ...row } = u;
      print(opts.json ? JSON.stringify(row) : `${u.name}  ${u.base_url}  "${u.schedule}"  root v${u.root_version ?? '-'}  last ${u.last_attempt_at ?? 'never'} ${u.last_code ?? (u.last_success_at ? 'ok' : '')}${u.failures ? `  ${u.failures} failure(s), next attempt after ${u.next_attempt_at}` : ''}`);
    }
    db.close();
  });
  upstream.command('remove').argument('<name>').action(async (name: string, _o, cmd) => {
    const cfg = config(cmd);
    const db = openDb(cfg.dataDir);
    const { removeUpstream } = await import('../sync/upstreams.ts');
    removeUpstream(db, name);
    db.close();
    print(`removed upstream ${name}`);
  });
  program
    .command('sync')
    .description('pull now from one or all upstreams, verify, apply; exit 1 with a stable code on any rejection')
    .argument('[name]')
    .action(async (name: string | undefined, _o, cmd) => {
      const cfg = config(cmd);
      const db = openDb(cfg.dataDir);
      try {
        const { syncAll } = await import('../sync/pull.ts');
        const { fetchLimitsOf } = await import('../sync/fetch.ts');
        const results = await syncAll(cfg, db, name ? [name] : [], { limits: fetchLimitsOf(cfg), log: logger(cfg) });
        let failed: OutpostError | undefined;
        for (const r of results) {
          print(JSON.stringify(r));
          if (!r.ok && r.code) {
            failed ??= new OutpostError(r.code, r.message);
            process.stderr.write(`${r.code}: ${r.upstream}: ${r.message}\n`);
          }
        }
        if (failed) process.exitCode = failed.exitCode;
      } finally {
        db.close();
      }
    });

  // ---- sync part B: rollback, purge, per-feed freshness, offline inbox (sync/rollback.ts, sync/expiry.ts,
  // appliance/freshness.ts, sync/inbox.ts; docs/operations-sync.md) ----
  program
    .command('rollback')
    .description('return a feed to the version it had before its last applied package (re-verified); that version stays refused afterwards')
    .requiredOption('--feed <name>', 'feed name')
    .action(async (opts, cmd) => {
      const cfg = config(cmd);
      const db = openDb(cfg.dataDir);
      try {
        const { rollbackFeed } = await import('../sync/rollback.ts');
        const r = await rollbackFeed(cfg, db, opts.feed);
        process.stderr.write(`feed ${r.feed} rolled back from version ${r.from_version} to ${r.to_version}; versions up to ${r.floor_version} are refused from now on\n`);
        print(JSON.stringify({ ok: true, ...r }));
      } finally {
        db.close();
      }
    });
  program
    .command('purge')
    .description('take expired indicators (own expiry or the per-type default) out of the lookup store now; serve does it hourly')
    .option('--dry-run', 'count what would be purged, change nothing')
    .action(async (opts, cmd) => {
      const cfg = config(cmd);
      const db = openDb(cfg.dataDir);
      try {
        const { purgeExpired, expiryDaysOf } = await import('../sync/expiry.ts');
        const r = await purgeExpired(db, { days: expiryDaysOf(cfg), dryRun: Boolean(opts.dryRun) });
        print(JSON.stringify({ ok: true, dry_run: r.dryRun, purged: r.purged, total: r.total, generation: r.generation }));
      } finally {
        db.close();
      }
    });
  const feedCmd = program.command('feed').description('per-feed settings');
  feedCmd
    .command('set')
    .argument('<name>')
    .option('--stale-after <duration>', 'data-age limit of this feed: seconds or 90m, 6h, 2d, 1w; "default" = the appliance limit')
    .addOption(new Option('--fail <mode>', 'when stale: open = keep answering, closed = answer unknown with stale: true').choices(['open', 'closed']))
    .action(async (name: string, opts, cmd) => {
      const cfg = config(cmd);
      if (opts.staleAfter === undefined && opts.fail === undefined) throw new OutpostError('E_USAGE', 'give --stale-after and/or --fail');
      const db = openDb(cfg.dataDir);
      try {
        const { parseDuration, setFeedSettings } = await import('./freshness.ts');
        const staleAfterS = opts.staleAfter === undefined ? undefined : (parseDuration(opts.staleAfter) ?? null);
        const s = setFeedSettings(db, name, { staleAfterS, failMode: opts.fail });
        print(JSON.stringify({ ok: true, feed: name, settings: s }));
      } finally {
        db.close();
      }
    });
  program
    .command('inbox')
    .description('process the packages in <data dir>/inbox now, as serve does continuously (to accepted/ or rejected/ with a .result.json)')
    .action(async (_o, cmd) => {
      const cfg = config(cmd);
      const db = openDb(cfg.dataDir);
      try {
        const { processInboxOnce } = await import('../sync/inbox.ts');
        const results = await processInboxOnce(cfg, db, logger(cfg));
        for (const r of results) print(JSON.stringify(r));
        const bad = results.find((r) => !r.ok);
        if (bad?.code) process.exitCode = new OutpostError(bad.code as import('./errors.ts').ErrorCode, bad.message).exitCode;
      } finally {
        db.close();
      }
    });

  program
    .command('export')
    .description('write an export for a consumer: suricata-dataset, suricata-iprep, zeek-intel, rpz, csv, stix, misp-feed (a directory: --out <dir>)')
    .argument('<format>')
    .option('--out <file>', 'write to this file (atomically) instead of stdout; for misp-feed, the directory')
    .action(async (format: string, opts, cmd) => {
      const cfg = config(cmd);
      const db = openDb(cfg.dataDir);
      const { policyOptionsOf } = await import('./freshness.ts');
      const policy = policyOptionsOf(cfg); // the default lifetimes and stale limit lookups apply
      // ---- misp-feed is a directory layout (lookup/exports/misp-feed.ts) ----
      if (format === 'misp-feed') {
        try {
          if (!opts.out) throw new OutpostError('E_USAGE', 'misp-feed writes a directory: give --out <dir>');
          const { writeMispFeed } = await import('../lookup/exports/misp-feed.ts');
          const r = await writeMispFeed(db, opts.out, policy);
          process.stderr.write(`wrote ${r.events} event(s), ${r.attributes} attribute(s) to ${opts.out}\n`);
        } finally {
          db.close();
        }
        return;
      }
      // ---- end misp-feed ----
      const { exportFormat, writeAtomic } = await import('../lookup/exports/index.ts');
      const chunks = exportFormat(db, format, policy);
      if (opts.out) {
        await writeAtomic(opts.out, chunks);
        process.stderr.write(`wrote ${opts.out}\n`);
      } else {
        for (const chunk of chunks) {
          if (!process.stdout.write(chunk)) await new Promise((r) => process.stdout.once('drain', r));
        }
      }
      db.close();
    });

  // ---- backup / restore (appliance/backup.ts) ----
  program
    .command('backup')
    .description('online backup of the database (SQLite backup API) while the appliance keeps serving; file mode 0600')
    .argument('<file>', 'new backup file (refuses to overwrite)')
    .action(async (file: string, _o, cmd) => {
      const cfg = config(cmd);
      const { backupDatabase } = await import('./backup.ts');
      const r = await backupDatabase(cfg.dataDir, file);
      print(JSON.stringify({ ok: true, ...r }));
    });
  program
    .command('restore')
    .description('verify a backup (integrity_check, schema version, tables), then replace the database; stop `serve` first')
    .argument('<file>', 'backup file written by `outpost backup`')
    .action(async (file: string, _o, cmd) => {
      const cfg = config(cmd);
      const { restoreDatabase } = await import('./backup.ts');
      const r = restoreDatabase(cfg.dataDir, file);
      print(JSON.stringify({ ok: true, ...r }));
    });

  program
    .command('bench')
    .description('measure lookup speed against baselines in the same run')
    .option('--json', 'last line of stdout is one JSON object')
    .option('--size <n>', 'number of indicators', (v) => Number(v), 200_000)
    .option('--no-http', 'skip the HTTP figures (OUTPOST_HTTP_WORKERS sets the HTTP processes; default one per core)')
    .option('--keep', 'keep the store it built (printed at the end) to serve and load-test it yourself')
    .action(async (opts) => {
      const { runBench } = await import('../scripts/bench.ts');
      const { benchHttp } = await import('../scripts/bench-http.ts');
      await runBench({ size: opts.size, json: Boolean(opts.json), out: print, http: opts.http === false ? null : benchHttp, keep: Boolean(opts.keep) });
    });

  // ---- verdict tuning: overrides, hits, selftest (lookup/overrides.ts, lookup/sightings.ts, lookup/selftest.ts) ----
  const cliActor = () => {
    try {
      return `cli:${os.userInfo().username}`;
    } catch {
      return 'cli';
    }
  };
  const override = program.command('override').description('local allow/block decisions for a value, a network or a domain subtree (kept apart from feed data)');
  override
    .command('add')
    .argument('<action>', 'allow or block')
    .argument('<value>', 'IP, network, domain (covers its subdomains), URL, hash or email; defanged accepted')
    .requiredOption('--reason <text>', 'why (shown in every lookup result it decides)')
    .option('--expires <iso-date>', 'expiry time (ISO 8601)')
    .option('--days <n>', 'expire after n days', (v) => Number(v))
    .option('--json', 'print the override as JSON')
    .action(async (action: string, value: string, opts, cmd) => {
      const cfg = config(cmd);
      const db = openDb(cfg.dataDir);
      try {
        const { addOverride } = await import('../lookup/overrides.ts');
        const row = addOverride(db, { action, value, reason: opts.reason, createdBy: cliActor(), expiresAt: opts.expires ?? null, days: opts.days ?? null });
        print(opts.json ? JSON.stringify(row) : `override ${row.id}: ${row.action} ${row.type} ${row.value}${row.expires_at ? ` until ${row.expires_at}` : ''} — ${row.reason}`);
      } finally {
        db.close();
      }
    });
  override
    .command('list')
    .option('--all', 'include removed and expired overrides')
    .option('--json', 'one JSON object per line')
    .action(async (opts, cmd) => {
      const cfg = config(cmd);
      const db = openDb(cfg.dataDir);
      const { listOverrides } = await import('../lookup/overrides.ts');
      const rows = listOverrides(db, { all: Boolean(opts.all) });
      db.close();
      for (const r of rows) {
        print(opts.json ? JSON.stringify(r) : `${r.id}  ${r.action}  ${r.type}  ${r.value}  by ${r.created_by} at ${r.created_at}  expires ${r.expires_at ?? 'never'}${r.revoked_at ? `  REMOVED ${r.revoked_at}` : ''}  — ${r.reason}`);
      }
    });
  override
    .command('remove')
    .argument('<id>')
    .action(async (id: string, _o, cmd) => {
      const cfg = config(cmd);
      const db = openDb(cfg.dataDir);
      try {
        const { removeOverride } = await import('../lookup/overrides.ts');
        const row = removeOverride(db, Number(id), cliActor());
        print(`removed override ${row.id} (${row.action} ${row.value})`);
      } finally {
        db.close();
      }
    });

  const hits = program
    .command('hits')
    .description('local sightings: values that matched in lookups, most seen first')
    .option('--since <time>', 'only sightings since an ISO time or a duration (24h, 7d)')
    .option('--top <n>', 'how many values', (v) => Number(v), 50)
    .option('--json', 'one JSON object per line')
    .action(async (opts, cmd) => {
      const cfg = config(cmd);
      const db = openDb(cfg.dataDir);
      const { listHits, parseSince } = await import('../lookup/sightings.ts');
      try {
        const rows = listHits(db, { since: opts.since ? parseSince(opts.since) : undefined, top: opts.top });
        if (!rows.length && !opts.json) process.stderr.write(`no hits recorded${opts.since ? ` since ${opts.since}` : ''} (API lookups that match anything are recorded while serve runs; CLI lookups are not)\n`);
        for (const h of rows) {
          print(opts.json ? JSON.stringify(h) : `${String(h.hits).padStart(7)}  ${h.type}  ${h.value}  ${h.last_verdict ?? '-'}  feeds ${h.feeds.join(',') || '-'}  clients ${h.clients.join(',')}  first ${h.first_seen}  last ${h.last_seen}${h.false_positive_at ? '  FALSE POSITIVE' : ''}`);
        }
      } finally {
        db.close();
      }
    });
  hits
    .command('fp')
    .description('mark a sighted value as a false positive: adds a local allow override for it')
    .argument('<value>')
    .requiredOption('--reason <text>', 'why it is not malicious here')
    .action(async (value: string, opts, cmd) => {
      const cfg = config(cmd);
      const db = openDb(cfg.dataDir);
      try {
        const { markFalsePositive } = await import('../lookup/sightings.ts');
        const r = markFalsePositive(db, value, opts.reason, cliActor());
        print(`marked ${r.value} as a false positive: allow override ${r.override.id}`);
      } finally {
        db.close();
      }
    });

  program
    .command('selftest')
    .description('false positives of current block data against allowlists, and recall on its own listed values')
    .option('--json', 'one JSON object')
    .option('--sample <n>', 'values sampled per block feed and type (0 = all)', (v) => Number(v), 200)
    .action(async (opts, cmd) => {
      const cfg = config(cmd);
      const db = openDb(cfg.dataDir);
      const { LookupEngine } = await import('../lookup/engine.ts');
      const { policyFrom } = await import('../lookup/verdict.ts');
      const { runSelftest, formatSelftest } = await import('../lookup/selftest.ts');
      const engine = new LookupEngine(db, { fpRate: cfg.filterFpRate, verdict: policyFrom(cfg) });
      await engine.reload();
      const report = runSelftest(db, engine, { sample: opts.sample });
      db.close();
      if (opts.json) print(JSON.stringify(report));
      else for (const line of formatSelftest(report)) print(line);
      if (!report.ok) process.exitCode = 1;
    });
  // ---- end verdict tuning ----

  return program;
}

function printBanner(app: { url: string; db: import('./db.ts').DB; demo: { token: string; feeds: { feed: string; total: number }[] } | null }, cfg: Config): void {
  const lines = [
    '',
    `Outpost is serving on ${app.url}  (data: ${cfg.dataDir})`,
    `  health:  curl -s ${app.url}/healthz`,
  ];
  if (app.demo) {
    lines.push(
      `  demo data imported through the signed-package path: ${app.demo.feeds.map((f) => `${f.feed} (${f.total})`).join(', ')}`,
      `  API token (shown once): ${app.demo.token}`,
      `  a listed value:   curl -s -H 'Authorization: Bearer ${app.demo.token}' '${app.url}/api/v1/lookup?value=77.90.185.20'`,
      `  an unlisted one:  curl -s -H 'Authorization: Bearer ${app.demo.token}' '${app.url}/api/v1/lookup?value=9.9.9.9'`,
    );
  } else {
    lines.push(`  API token: create one with  npx outpost token create --name <client>`);
  }
  // Console: where to sign in, and on a fresh data dir how to create the first admin.
  lines.push(`  console: ${app.url}/login`);
  if (countUsers(app.db) === 0) {
    const dirFlag = cfg.dataDir !== path.resolve('var') && !process.env.OUTPOST_DATA_DIR ? ` --data-dir '${cfg.dataDir}'` : '';
    lines.push(`  no console users yet; create the first admin (password read from stdin):  npx outpost${dirFlag} user add admin --role admin`);
  }
  process.stderr.write(lines.join('\n') + '\n\n');
}

export async function main(argv: string[]): Promise<void> {
  const program = buildCli();
  try {
    await program.parseAsync(argv);
  } catch (e) {
    if (e instanceof CommanderError) {
      if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version' || e.exitCode === 0) process.exit(0);
      process.exit(2);
    }
    const err = asOutpostError(e);
    process.stderr.write(`${err.toString()}\n`);
    process.exit(err.code === 'E_USAGE' ? 2 : err.exitCode);
  }
}
