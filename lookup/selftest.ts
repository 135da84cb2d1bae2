// `outpost selftest`: checks the current data the way an analyst would. (1) False positives: every value
// of every allow feed is looked up against the block data (a network by its first and last address);
// none should come out `malicious`. (2) Recall: a deterministic sample of each block feed's unexpired
// values is looked up as listed and in the forms clients really send — defanged, uppercase, with a
// trailing dot, as a subdomain, as a URL on the domain, with a port, under a listed URL prefix, and as
// addresses inside a listed network; each must find its own feed row. Exact recall below 100% fails
// (exit 1).
import ipaddr from 'ipaddr.js';
import type { DB } from '../appliance/db.ts';
import type { LookupResult, Verdict } from '../appliance/types.ts';
import type { LookupEngine } from './engine.ts';
import { defang, urlMatchKeys } from './normalize.ts';

export interface SelftestOptions {
  /** Values sampled per block feed and type (0 = all). Default 200. */
  sample?: number;
  /** Most example values listed per finding. Default 10. */
  examples?: number;
}

export interface RecallFigure {
  tested: number;
  found: number;
  /** `feed value → variant` of misses (at most `examples`). */
  missed: string[];
}

export interface SelftestReport {
  generation: number;
  false_positives: {
    allow_feeds: string[];
    values: number;
    lookups: number;
    malicious: number;
    by_verdict: Record<Verdict, number>;
    /** Allow values that block feeds also match (resolved by the conflict rules). */
    conflicts: number;
    examples: { value: string; verdict: Verdict; rule: string | undefined; feeds: string[] }[];
  };
  recall: {
    block_feeds: string[];
    exact: RecallFigure;
    variants: Record<string, RecallFigure>;
    /** Verdicts of the exact lookups of sampled block values (benign = an allowlist conflict). */
    by_verdict: Record<Verdict, number>;
  };
  /** Exact recall is 100%. */
  ok: boolean;
}

const zero = (): Record<Verdict, number> => ({ malicious: 0, suspicious: 0, benign: 0, unknown: 0 });

export function runSelftest(db: DB, engine: LookupEngine, opts: SelftestOptions = {}): SelftestReport {
  const sample = opts.sample ?? 200;
  const maxEx = opts.examples ?? 10;
  const nowS = Date.now() / 1000;

  // ---- (1) allow values against block data
  const allowFeeds = (db.prepare("SELECT name FROM feeds WHERE kind = 'allow' ORDER BY name").all() as { name: string }[]).map((r) => r.name);
  const fp: SelftestReport['false_positives'] = { allow_feeds: allowFeeds, values: 0, lookups: 0, malicious: 0, by_verdict: zero(), conflicts: 0, examples: [] };
  const allowRows = db.prepare("SELECT type, value FROM indicators WHERE feed = ? AND (expires_at IS NULL OR expires_at >= ?)");
  for (const feed of allowFeeds) {
    for (const row of allowRows.iterate(feed, nowS) as Iterable<{ type: string; value: string }>) {
      fp.values++;
      const probes = row.type === 'ipv4-cidr' || row.type === 'ipv6-cidr' ? networkEnds(row.value) : [row.value];
      for (const v of probes) {
        const r = engine.lookup(v);
        fp.lookups++;
        fp.by_verdict[r.verdict]++;
        if (r.matches.some((m) => m.feed_kind !== 'allow')) fp.conflicts++;
        if (r.verdict === 'malicious') {
          fp.malicious++;
          if (fp.examples.length < maxEx) fp.examples.push({ value: v, verdict: r.verdict, rule: r.rule, feeds: [...new Set(r.matches.map((m) => m.feed))] });
        }
      }
    }
  }

  // ---- (2) recall on sampled block values and their variants
  const blockFeeds = (db.prepare("SELECT name FROM feeds WHERE kind = 'block' ORDER BY name").all() as { name: string }[]).map((r) => r.name);
  const exact: RecallFigure = { tested: 0, found: 0, missed: [] };
  const variants: Record<string, RecallFigure> = {};
  const byVerdict = zero();
  const check = (fig: RecallFigure, feed: string, listed: string, probe: string, label: string): LookupResult => {
    const r = engine.lookup(probe);
    fig.tested++;
    if (r.matches.some((m) => m.feed === feed && m.indicator === listed)) fig.found++;
    else if (fig.missed.length < maxEx) fig.missed.push(`${feed} ${listed} → ${label} ${JSON.stringify(probe)}`);
    return r;
  };
  const variant = (name: string) => (variants[name] ??= { tested: 0, found: 0, missed: [] });

  const counts = db.prepare('SELECT type, count(*) AS n FROM indicators WHERE feed = ? AND (expires_at IS NULL OR expires_at >= ?) GROUP BY type');
  const rows = db.prepare('SELECT value FROM indicators WHERE feed = ? AND type = ? AND (expires_at IS NULL OR expires_at >= ?)');
  for (const feed of blockFeeds) {
    for (const { type, n } of counts.all(feed, nowS) as { type: string; n: number }[]) {
      const stride = sample > 0 ? Math.max(1, Math.floor(n / sample)) : 1;
      let i = 0;
      let taken = 0;
      for (const { value } of rows.iterate(feed, type, nowS) as Iterable<{ value: string }>) {
        if (i++ % stride !== 0 || (sample > 0 && taken >= sample)) continue;
        taken++;
        for (const [name, probe] of variantsOf(type, value)) {
          if (name === 'exact') byVerdict[check(exact, feed, value, probe, name).verdict]++;
          else check(variant(name), feed, value, probe, name);
        }
      }
    }
  }

  return {
    generation: engine.generation,
    false_positives: fp,
    recall: { block_feeds: blockFeeds, exact, variants, by_verdict: byVerdict },
    // The exit status follows exact recall; false positives are printed for the analyst to judge
    // (a local block override may make an allowlisted value malicious on purpose).
    ok: exact.found === exact.tested,
  };
}

/** The forms a listed value is probed in; `exact` is the value as listed (absent for networks). */
export function variantsOf(type: string, value: string): [string, string][] {
  const out: [string, string][] = [];
  switch (type) {
    case 'ipv4':
      out.push(['exact', value], ['defanged', defang(value)], ['with-port', `${value}:8080`]);
      break;
    case 'ipv6':
      out.push(['exact', value], ['uppercase', value.toUpperCase()], ['with-port', `[${value}]:8080`]);
      break;
    case 'ipv4-cidr':
    case 'ipv6-cidr':
      for (const a of networkEnds(value)) out.push(['inside-network', a]);
      break;
    case 'domain':
      out.push(['exact', value], ['defanged', defang(value)], ['uppercase', value.toUpperCase()], ['trailing-dot', `${value}.`]);
      if (value.length < 230) out.push(['subdomain', `outpost-selftest.${value}`]);
      out.push(['url-on-domain', `http://${value}/outpost-selftest`]);
      break;
    case 'url': {
      out.push(['exact', value], ['defanged', defang(value)]);
      const sep = value.indexOf('://');
      const pathStart = value.indexOf('/', sep + 3);
      if (sep > 0 && pathStart > 0) {
        const base = value.slice(0, pathStart);
        out.push(['uppercase', base.toUpperCase() + value.slice(pathStart)]);
        const host = base.slice(sep + 3);
        if (/[a-z]$/.test(host)) out.push(['trailing-dot', `${base}.${value.slice(pathStart)}`]);
        // Only prefixes the matcher probes (Safe Browsing: up to 4 path prefixes, see urlMatchKeys).
        const under = `${value}outpost-selftest`;
        if (value.endsWith('/') && !value.includes('?') && urlMatchKeys(under).includes(value)) out.push(['under-url-prefix', under]);
      }
      break;
    }
    case 'md5':
    case 'sha1':
    case 'sha256':
    case 'email':
      out.push(['exact', value], ['uppercase', value.toUpperCase()]);
      break;
    default:
      out.push(['exact', value]);
  }
  return out;
}

/** First and last address of a network (a /32 or /128 is the address itself). */
export function networkEnds(cidr: string): string[] {
  try {
    const v4 = ipaddr.parseCIDR(cidr)[0].kind() === 'ipv4';
    const first = (v4 ? ipaddr.IPv4.networkAddressFromCIDR(cidr) : ipaddr.IPv6.networkAddressFromCIDR(cidr)).toString();
    const last = (v4 ? ipaddr.IPv4.broadcastAddressFromCIDR(cidr) : ipaddr.IPv6.broadcastAddressFromCIDR(cidr)).toString();
    return first === last ? [first] : [first, last];
  } catch {
    return [];
  }
}

/** Text report for the CLI. */
export function formatSelftest(r: SelftestReport): string[] {
  const pctOf = (f: RecallFigure) => (f.tested ? ((100 * f.found) / f.tested).toFixed(f.found === f.tested ? 0 : 2) : '-');
  const fp = r.false_positives;
  const lines = [
    `generation ${r.generation}`,
    `false positives: ${fp.malicious} of ${fp.lookups} lookups of ${fp.values} allowlist values (${fp.allow_feeds.join(', ') || 'no allow feeds'}) would be reported malicious`,
    `  verdicts: benign ${fp.by_verdict.benign}, suspicious ${fp.by_verdict.suspicious}, malicious ${fp.by_verdict.malicious}, unknown ${fp.by_verdict.unknown}; ${fp.conflicts} also match block data`,
  ];
  for (const e of fp.examples) lines.push(`  MALICIOUS ${e.value} (rule ${e.rule}; ${e.feeds.join(', ')})`);
  const rc = r.recall;
  lines.push(`recall on sampled block values (${rc.block_feeds.join(', ') || 'no block feeds'}):`);
  lines.push(`  exact: ${rc.exact.found}/${rc.exact.tested} (${pctOf(rc.exact)}%)  verdicts: malicious ${rc.by_verdict.malicious}, suspicious ${rc.by_verdict.suspicious}, benign ${rc.by_verdict.benign}`);
  for (const [name, f] of Object.entries(rc.variants).sort()) lines.push(`  ${name}: ${f.found}/${f.tested} (${pctOf(f)}%)`);
  for (const f of [rc.exact, ...Object.values(rc.variants)]) for (const m of f.missed) lines.push(`  MISSED ${m}`);
  lines.push(r.ok ? 'selftest ok' : 'selftest FAILED');
  return lines;
}
