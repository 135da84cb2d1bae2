// Share-back: this site's own findings as a signed package for peers — an ordinary block feed named
// `share-<site>` in the normal package format, so a peer imports it like any provider's feed after
// `outpost trust add <site>.pub`, with the same verification (an untrusted site key is E_UNKNOWN_KEY).
// Findings: active local block overrides (lookup/overrides.ts) and sightings seen at least --min-hits
// times whose value still looks up malicious or suspicious here (lookup/sightings.ts), each with the
// context of what it matched (families, actors, threat types, ATT&CK ids, sample hashes).
// TLP decides what leaves: the marking of a finding is the strictest marking among the indicators it
// matched, else --tlp-unmarked (GREEN: the site's own finding, shared within the community). RED never
// leaves; AMBER and AMBER+STRICT only with --tlp-max amber; CLEAR and GREEN by default. The filter runs
// once more over the final lines, so no code path can put a RED line into a package.
import path from 'node:path';
import type { Config } from '../appliance/config.ts';
import type { DB } from '../appliance/db.ts';
import { audit } from '../appliance/db.ts';
import { OutpostError } from '../appliance/errors.ts';
import type { Indicator, IndicatorType, LookupResult, Manifest } from '../appliance/types.ts';
import { LookupEngine } from '../lookup/engine.ts';
import { normalize } from '../lookup/normalize.ts';
import { namesOf, parseTlp, stricterTlp, tlpAllowed, TLP_LEVELS, type Tlp } from './context.ts';
import { keyIdOf, loadPrivateKey } from './keys.ts';
import { FEED_NAME } from './package-reader.ts';
import { writePackage } from './package-writer.ts';
import { canonicalIndicator, compareIndicators } from './records.ts';

export interface ShareOptions {
  keyPath: string;
  outDir: string;
  /** Highest marking that may leave: green (CLEAR, GREEN) or amber (also AMBER, AMBER+STRICT). Default green. */
  tlpMax?: 'green' | 'amber';
  /** Marking of findings that matched nothing marked. Default GREEN. */
  tlpUnmarked?: string;
  /** Feed name is `share-<site>`; default the key id, so each site key has its own feed. */
  site?: string;
  /** Sightings seen fewer times than this are not findings. Default 3. */
  minHits?: number;
  /** Include override reasons (free text an admin wrote; may name internal hosts). Default no. */
  withReasons?: boolean;
  expiresDays?: number;
  now?: Date;
  actor?: string;
}

export interface ShareResult {
  path: string;
  sha256: string;
  manifest: Manifest;
  feed: string;
  shared: { overrides: number; sightings: number; total: number };
  /** Findings kept back, by reason. */
  withheld: { red: number; tlp: number; not_malicious: number; below_threshold: number; false_positive: number; invalid: number };
}

const OVERRIDE_FEED = 'local-override';
const MAX_CTX_LIST = 20;

function hasTable(db: DB, name: string): boolean {
  return !!db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?").get(name);
}

const iso = (s: number) => new Date(s * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');

/** Context of a lookup result worth sharing, and the strictest TLP among the matched indicators. */
function contextOf(r: LookupResult): { ctx: Record<string, unknown>; tlp: Tlp | undefined } {
  let tlp: Tlp | undefined;
  const ctx: Record<string, unknown> = {};
  const lists: Record<string, Set<string>> = { threat_types: new Set(), attack: new Set() };
  for (const m of r.matches) {
    if (m.feed === OVERRIDE_FEED || m.feed_kind === 'allow') continue;
    const c = m.context ?? {};
    tlp = stricterTlp(tlp, parseTlp(c.tlp));
    for (const k of Object.keys(lists)) for (const x of namesOf(c[k])) lists[k].add(x);
    if (c.sample && typeof c.sample === 'object' && m.kind === 'exact' && !ctx.sample) ctx.sample = c.sample;
  }
  for (const [k, set] of Object.entries(lists)) if (set.size) ctx[k] = [...set].sort().slice(0, MAX_CTX_LIST);
  const fam = (r.families ?? []).map((f) => f.name);
  const act = (r.actors ?? []).map((a) => a.name);
  if (fam.length) ctx.family = fam.length === 1 ? fam[0] : fam.slice(0, MAX_CTX_LIST);
  if (act.length) ctx.actor = act.length === 1 ? act[0] : act.slice(0, MAX_CTX_LIST);
  return { ctx, tlp };
}

/**
 * Builds the share package from this data dir's overrides and sightings. Never writes a RED line;
 * throws E_USAGE for bad options, E_KEY for an unusable key. An empty package (nothing shareable) is
 * still written, so a peer's copy of the feed can be emptied too.
 */
export async function buildShare(cfg: Config, db: DB, opts: ShareOptions): Promise<ShareResult> {
  const tlpMax = opts.tlpMax ?? 'green';
  if (tlpMax !== 'green' && tlpMax !== 'amber') throw new OutpostError('E_USAGE', '--tlp-max must be green or amber (RED never leaves the site)');
  const unmarked = parseTlp(opts.tlpUnmarked ?? 'GREEN');
  if (!unmarked) throw new OutpostError('E_USAGE', `--tlp-unmarked must be one of ${TLP_LEVELS.join(', ')}`);
  const minHits = opts.minHits ?? 3;
  if (!Number.isInteger(minHits) || minHits < 1) throw new OutpostError('E_USAGE', '--min-hits must be a positive integer');
  const key = loadPrivateKey(opts.keyPath);
  const site = (opts.site ?? keyIdOf(key)).toLowerCase();
  const feed = `share-${site}`;
  if (!FEED_NAME.test(feed)) throw new OutpostError('E_USAGE', `--site "${opts.site}" gives feed name "${feed}", which must match ${FEED_NAME}`);
  const now = opts.now ?? new Date();

  const withheld: ShareResult['withheld'] = { red: 0, tlp: 0, not_malicious: 0, below_threshold: 0, false_positive: 0, invalid: 0 };
  const byKey = new Map<string, Indicator>();
  const shared = { overrides: 0, sightings: 0, total: 0 };
  const engine = new LookupEngine(db, { fpRate: cfg.filterFpRate, worker: false, filterDir: null });
  const admit = (ind: Indicator, tlp: Tlp): boolean => {
    if (tlp === 'RED') {
      withheld.red++;
      return false;
    }
    if (!tlpAllowed(tlp, tlpMax)) {
      withheld.tlp++;
      return false;
    }
    ind.ctx = { ...(ind.ctx ?? {}), tlp };
    const k = `${ind.t}\0${ind.v}`;
    const prev = byKey.get(k);
    if (prev) {
      // An override and a sighting of one value: one line, the override's claim with both sources.
      prev.ctx = { ...ind.ctx, ...prev.ctx, source: [...new Set([...namesOf(prev.ctx?.source), ...namesOf(ind.ctx.source)])] };
      return false;
    }
    byKey.set(k, ind);
    return true;
  };

  // 1. Local block overrides (active: not revoked, not expired).
  if (hasTable(db, 'overrides')) {
    const rows = db
      .prepare("SELECT type, value, reason, created_at FROM overrides WHERE action = 'block' AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?) ORDER BY id")
      .all(now.toISOString().replace(/\.\d{3}Z$/, 'Z')) as { type: IndicatorType; value: string; reason: string; created_at: string }[];
    for (const o of rows) {
      const n = normalize(o.value, o.type);
      if (!n.ok || n.value !== o.value) {
        withheld.invalid++;
        continue;
      }
      // A single value inherits the marking of what it matches here; a network or subtree has only its own.
      const r = o.type.endsWith('-cidr') ? undefined : engine.lookup(o.value);
      const { ctx, tlp } = r ? contextOf(r) : { ctx: {}, tlp: undefined };
      const ind: Indicator = { t: o.type, v: o.value, conf: 90, fs: o.created_at, ctx: { ...ctx, source: 'local-override' } };
      if (opts.withReasons && o.reason) ind.ctx!.description = o.reason;
      if (admit(ind, tlp ?? unmarked)) shared.overrides++;
    }
  }

  // 2. Sightings at or above the threshold that still look up malicious or suspicious.
  if (hasTable(db, 'sightings')) {
    const rows = db.prepare('SELECT type, value, count, first_seen, last_seen, false_positive_at FROM sightings ORDER BY type, value').all() as {
      type: string; value: string; count: number; first_seen: number; last_seen: number; false_positive_at: string | null;
    }[];
    for (const s of rows) {
      if (s.false_positive_at) {
        withheld.false_positive++;
        continue;
      }
      if (s.count < minHits) {
        withheld.below_threshold++;
        continue;
      }
      const n = normalize(s.value, s.type as IndicatorType);
      if (!n.ok || n.value !== s.value || n.type !== s.type) {
        withheld.invalid++;
        continue;
      }
      const r = engine.lookup(s.value);
      if (r.verdict !== 'malicious' && r.verdict !== 'suspicious') {
        withheld.not_malicious++;
        continue;
      }
      const { ctx, tlp } = contextOf(r);
      const ind: Indicator = {
        t: n.type, v: n.value, conf: r.confidence, fs: iso(s.first_seen), ls: iso(s.last_seen),
        ctx: { ...ctx, source: 'local-sighting', sightings: s.count, verdict: r.verdict },
      };
      if (admit(ind, tlp ?? unmarked)) shared.sightings++;
    }
  }

  const lines = [...byKey.values()].map(canonicalIndicator).sort(compareIndicators);
  // Belt and braces: whatever happened above, nothing RED and nothing over --tlp-max is written.
  for (const l of lines) {
    const t = parseTlp(l.ctx?.tlp);
    if (!t || !tlpAllowed(t, tlpMax)) throw new OutpostError('E_INTERNAL', `share: ${l.t} ${l.v} has marking ${String(l.ctx?.tlp)}, refusing to write it`);
  }
  shared.total = lines.length;
  const created = new Date(Math.floor(now.getTime() / 1000) * 1000);
  const res = await writePackage({
    outDir: path.resolve(opts.outDir),
    privateKey: key,
    manifest: {
      feed,
      kind: 'block',
      type: 'full',
      version: created.getTime(),
      created: created.toISOString(),
      expires: new Date(created.getTime() + (opts.expiresDays ?? 30) * 86400_000).toISOString(),
      defaults: { category: 'local-finding', confidence: 70 },
    },
    files: [{ role: 'indicators', indicators: lines }],
  });
  audit(db, opts.actor ?? 'cli', 'share.build', { subject: `${feed}@${res.manifest.version}`, detail: { shared, withheld, tlp_max: tlpMax, sha256: res.sha256 } });
  return { ...res, feed, shared, withheld };
}
