// Turns the matches of one lookup into a verdict, a 0–100 confidence, the name of the rule that decided
// and human-readable reasons. Every rule is documented with examples in docs/verdicts.md; the rule names
// below are what a result's `rule` field shows.
//
// Order of the rules:
//  1. local overrides (feed "local-override") are the site's own decisions and beat feed data: the most
//     specific one decides (newest on a tie)             → benign "override:allow" / malicious "override:block"
//  2. allowlist vs blocklist by specificity: an allow match at least as specific as every block match
//     → benign "allowlist". A block match more specific than every allow match:
//       - URL-level block (listed URL or URL prefix) under a host-level allow: the allowlist says nothing
//         about paths on a shared host (URLhaus lists URLs on github.com) → judged as a block "conflict:url-beats-host-allow"
//       - an address inside an allowed network, a listed subdomain under an allowed domain: contested
//         → at most suspicious "conflict:narrower-block"
//  3. block evidence: per match confidence × match-kind weight × age decay; the best match of each feed
//     combined across feeds (damped noisy-OR); ≥ 70 over uncapped matches → malicious "block:<kind>"
//     (or "block:corroborated" when only the agreement of feeds reaches 70); otherwise suspicious:
//     "cidr:broad-or-reserved" (only broad/reserved networks), "block:decayed" (fresh it would have been
//     malicious), "block:low-confidence".
//  4. no match → unknown, confidence 0, "none".
// A listed network wider than the configured prefix (/16 IPv4, /32 IPv6 by default) or overlapping
// private/reserved space (any ipaddr.js range other than 'unicast') never makes a value malicious by
// itself: real lists (FireHOL level1) carry 10.0.0.0/8 and the like.
import ipaddr from 'ipaddr.js';
import type { LookupType, Match, Verdict } from '../appliance/types.ts';
import { urlHost } from './normalize.ts';

/** Feed name under which local overrides appear as matches. */
export const OVERRIDE_FEED = 'local-override';

export const MALICIOUS_MIN_CONFIDENCE = 70;

/** Confidence of a listing whose row and feed both leave it unset (lookups and exports alike). */
export const DEFAULT_CONFIDENCE = 50;

/** Evidence classes with their own age decay: IPs fade fastest (reassigned, rented), hashes slowest. */
export type DecayClass = 'ip' | 'url' | 'domain' | 'email' | 'hash';

export interface DecayRule {
  /** No decay while the evidence is younger than this. */
  graceDays: number;
  /** After the grace period the weight halves every this many days… */
  halfLifeDays: number;
  /** …but never drops below this factor: a listed, unexpired value stays at least suspicious. */
  floor: number;
}

export interface VerdictPolicy {
  maliciousMin: number;
  /** Listed IPv4 networks wider than this prefix cannot make a value malicious by themselves. */
  maxBlockPrefixV4: number;
  maxBlockPrefixV6: number;
  decay: Record<DecayClass, DecayRule>;
}

export const DEFAULT_POLICY: VerdictPolicy = {
  maliciousMin: MALICIOUS_MIN_CONFIDENCE,
  maxBlockPrefixV4: 16,
  maxBlockPrefixV6: 32,
  decay: {
    // 21 days is the IP expiry peers use (CIF); an 80-confidence IP turns suspicious after ~7 days unseen.
    ip: { graceDays: 3, halfLifeDays: 21, floor: 0.25 },
    url: { graceDays: 7, halfLifeDays: 45, floor: 0.3 },
    domain: { graceDays: 14, halfLifeDays: 120, floor: 0.3 },
    email: { graceDays: 30, halfLifeDays: 180, floor: 0.3 },
    // A malware sample stays malware: hashes barely fade (80 stays ≥ 70 forever).
    hash: { graceDays: 180, halfLifeDays: 730, floor: 0.9 },
  },
};

/** Builds a policy from configuration values (appliance/config.ts: OUTPOST_MAX_BLOCK_PREFIX_V4/_V6). */
export function policyFrom(opts: { maxBlockPrefixV4?: number; maxBlockPrefixV6?: number } = {}): VerdictPolicy {
  return {
    ...DEFAULT_POLICY,
    maxBlockPrefixV4: opts.maxBlockPrefixV4 ?? DEFAULT_POLICY.maxBlockPrefixV4,
    maxBlockPrefixV6: opts.maxBlockPrefixV6 ?? DEFAULT_POLICY.maxBlockPrefixV6,
  };
}

export interface VerdictContext {
  /** Unix seconds; without it no age decay is applied. */
  now?: number;
  /** Creation time (unix s) of a feed's applied package: the age of rows that carry no dates. */
  feedCreated?: (feed: string) => number | undefined;
  /** The looked-up value's type and normalized form (tells a URL's own host from its parents). */
  type?: LookupType;
  normalized?: string;
  policy?: VerdictPolicy;
}

export interface Decision {
  verdict: Verdict;
  confidence: number;
  rule: string;
  reasons: string[];
}

// ------------------------------------------------------------------------------------------ networks

type Ranges = Record<string, [ipaddr.IPv4 | ipaddr.IPv6, number] | [ipaddr.IPv4 | ipaddr.IPv6, number][]>;

function specialRanges(addr: ipaddr.IPv4 | ipaddr.IPv6): [ipaddr.IPv4 | ipaddr.IPv6, number][] {
  const out: [ipaddr.IPv4 | ipaddr.IPv6, number][] = [];
  const table = (addr as unknown as { SpecialRanges: Ranges }).SpecialRanges;
  for (const [name, entry] of Object.entries(table)) {
    if (name === 'unicast') continue;
    const list = Array.isArray(entry[0]) ? (entry as [ipaddr.IPv4 | ipaddr.IPv6, number][]) : [entry as [ipaddr.IPv4 | ipaddr.IPv6, number]];
    out.push(...list);
  }
  return out;
}

const SPECIAL4 = specialRanges(ipaddr.parse('1.1.1.1'));
const SPECIAL6 = specialRanges(ipaddr.parse('2001:db8::1'));

export type CidrCap = 'broad' | 'reserved' | null;
interface CidrInfo {
  /** Why the network is capped: too broad first, else reserved space; null = may decide alone. */
  cap: CidrCap;
  reserved: boolean;
  prefix: number;
  v4: boolean;
}
const cidrCache = new Map<string, CidrInfo>();

/** Prefix, family and why (if at all) a listed network may only make an address suspicious. */
export function cidrInfo(network: string, policy: VerdictPolicy = DEFAULT_POLICY): CidrInfo {
  const key = `${policy.maxBlockPrefixV4}|${policy.maxBlockPrefixV6}|${network}`;
  const cached = cidrCache.get(key);
  if (cached) return cached;
  let info: CidrInfo = { cap: 'broad', reserved: false, prefix: 0, v4: !network.includes(':') }; // unparsable → weakest evidence
  try {
    const [addr, prefix] = ipaddr.parseCIDR(network);
    const v4 = addr.kind() === 'ipv4';
    info = { cap: null, reserved: false, prefix, v4 };
    for (const [range, bits] of v4 ? SPECIAL4 : SPECIAL6) {
      if (range.kind() !== addr.kind()) continue;
      // Overlap: the network lies inside a special range, or contains one.
      if (addr.match(range, bits) || range.match(addr, prefix)) {
        info.reserved = true;
        break;
      }
    }
    if (prefix < (v4 ? policy.maxBlockPrefixV4 : policy.maxBlockPrefixV6)) info.cap = 'broad';
    else if (info.reserved) info.cap = 'reserved';
  } catch {
    /* keep the weakest reading */
  }
  if (cidrCache.size > 100_000) cidrCache.clear();
  cidrCache.set(key, info);
  return info;
}

/** True when a listed network may only make an address suspicious (broad or private/reserved). */
export function cidrIsCapped(network: string, policy: VerdictPolicy = DEFAULT_POLICY): boolean {
  return cidrInfo(network, policy).cap !== null;
}

// ------------------------------------------------------------------------------------------ weights

/**
 * How much a match of this kind says about the looked-up value: exact 1.0 > URL prefix 0.96 >
 * subdomain 0.92 > network 0.8–0.9 (by prefix); networks wider than the cap fall off fast (a /8 ≈ 0.08)
 * and reserved-space networks count half.
 */
export function kindWeight(m: Match, policy: VerdictPolicy = DEFAULT_POLICY): number {
  switch (m.kind) {
    case 'exact':
      return 1;
    case 'url':
      return 0.96;
    case 'subdomain':
      return 0.92;
    case 'cidr': {
      const c = cidrInfo(m.indicator, policy);
      const lo = c.v4 ? policy.maxBlockPrefixV4 : policy.maxBlockPrefixV6;
      const hi = Math.max(lo, c.v4 ? 24 : 64);
      if (c.cap === 'broad') return 0.8 * Math.pow(0.75, Math.max(0, lo - c.prefix));
      const narrow = hi === lo ? 0.9 : 0.8 + 0.1 * Math.min(1, Math.max(0, (c.prefix - lo) / (hi - lo)));
      return c.cap === 'reserved' ? narrow / 2 : narrow;
    }
  }
}

const HEX = /^[0-9a-f]+$/;

/** Which decay applies to a match, from the listed indicator's form. */
export function decayClass(m: Match): DecayClass {
  const v = m.indicator;
  if (m.kind === 'cidr') return 'ip';
  if (v.includes('://')) return 'url';
  if (v.includes('@')) return 'email';
  if ((v.length === 32 || v.length === 40 || v.length === 64) && HEX.test(v)) return 'hash';
  if (v.includes(':') || /^\d+\.\d+\.\d+\.\d+$/.test(v)) return 'ip';
  return 'domain';
}

const DAY = 86_400;

/** Age in seconds of the evidence: last seen, else first seen, else the feed package's creation. */
function evidenceTime(m: Match, ctx: VerdictContext): { t: number; from: string } | null {
  for (const [s, from] of [[m.last_seen, 'last seen'], [m.first_seen, 'first seen']] as const) {
    if (s) {
      const t = Date.parse(s);
      if (Number.isFinite(t)) return { t: t / 1000, from };
    }
  }
  const c = ctx.feedCreated?.(m.feed);
  return c === undefined ? null : { t: c, from: 'package created' };
}

/** Decay factor (0–1] for a match, and the age in days it was computed from (null: no date known). */
export function decayFactor(m: Match, ctx: VerdictContext): { factor: number; ageDays: number | null; from?: string } {
  if (ctx.now === undefined || m.feed === OVERRIDE_FEED) return { factor: 1, ageDays: null };
  const e = evidenceTime(m, ctx);
  if (!e) return { factor: 1, ageDays: null };
  const ageDays = Math.max(0, (ctx.now - e.t) / DAY);
  const rule = (ctx.policy ?? DEFAULT_POLICY).decay[decayClass(m)];
  if (ageDays <= rule.graceDays) return { factor: 1, ageDays, from: e.from };
  const f = Math.pow(0.5, (ageDays - rule.graceDays) / rule.halfLifeDays);
  return { factor: Math.max(rule.floor, f), ageDays, from: e.from };
}

/**
 * How specific a match is, comparable within one lookup: URL exact 3.9 > URL prefix 3.x > the value
 * itself (exact, or a URL's own host) 2 > a covering parent domain or network 1.x (deeper/longer = more
 * specific). An allow match wins a conflict when it is at least as specific as every block match.
 */
export function specificity(m: Match, ctx: VerdictContext = {}): number {
  if (m.indicator.includes('://')) return m.kind === 'exact' ? 3.9 : 3 + Math.min(m.indicator.length, 8000) / 10_000;
  if (m.kind === 'exact') return 2;
  if (m.kind === 'subdomain') {
    if (ctx.type === 'url' && ctx.normalized && urlHost(ctx.normalized) === m.indicator) return 2;
    return 1 + m.indicator.split('.').length / 100;
  }
  if (m.kind === 'cidr') return 1 + cidrInfo(m.indicator, ctx.policy).prefix / 1000;
  return 1;
}

// ------------------------------------------------------------------------------------------ decide

const pct = (x: number) => Math.round(x);

function describe(m: Match): string {
  const what = m.feed === OVERRIDE_FEED ? `local ${m.feed_kind} override` : `${m.feed_kind === 'allow' ? 'allowlisted' : 'listed'} by ${m.feed}`;
  const cat = m.category ? `, category ${m.category}` : '';
  return `${what} as ${m.indicator} (${m.kind} match${cat}, confidence ${m.confidence})`;
}

/** Damped noisy-OR: the strongest score counts fully, each further feed at half (feeds copy each other). */
function combine(scores: number[]): number {
  if (!scores.length) return 0;
  const s = [...scores].sort((a, b) => b - a);
  let miss = 1 - s[0] / 100;
  for (let i = 1; i < s.length; i++) miss *= 1 - s[i] / 200;
  return 100 * (1 - miss);
}

interface Scored {
  m: Match;
  score: number;
  fresh: number;
  capped: CidrCap;
}

/** Of the local-override matches of one lookup, the one that decides: the most specific, newest on a tie. */
export function decidingOverride(local: readonly Match[], ctx: VerdictContext = {}): Match | null {
  let best: Match | null = null;
  for (const m of local) {
    if (!best) {
      best = m;
      continue;
    }
    const d = specificity(m, ctx) - specificity(best, ctx);
    if (d > 0 || (d === 0 && (m.first_seen ?? '') > (best.first_seen ?? ''))) best = m;
  }
  return best;
}

export function decide(matches: readonly Match[], ctx: VerdictContext = {}): Decision {
  const policy = ctx.policy ?? DEFAULT_POLICY;
  if (matches.length === 0) return { verdict: 'unknown', confidence: 0, rule: 'none', reasons: ['no feed or local override lists this value'] };
  const reasons: string[] = [];

  // 1. Local overrides: the site's own decision.
  const local = matches.filter((m) => m.feed === OVERRIDE_FEED);
  if (local.length) {
    const best = decidingOverride(local, ctx)!;
    const others = matches.length - local.length;
    const reason = typeof best.context?.reason === 'string' ? `: ${best.context.reason}` : '';
    reasons.push(`${describe(best)}${reason}`);
    if (others) reasons.push(`local overrides take precedence over the ${others} feed match${others === 1 ? '' : 'es'} shown`);
    return best.feed_kind === 'allow'
      ? { verdict: 'benign', confidence: 100, rule: 'override:allow', reasons }
      : { verdict: 'malicious', confidence: 100, rule: 'override:block', reasons };
  }

  const allows = matches.filter((m) => m.feed_kind === 'allow');
  const blocks = matches.filter((m) => m.feed_kind !== 'allow');

  // 3 (computed first: conflicts need it). Block evidence per match.
  const scored: Scored[] = blocks.map((m) => {
    const w = kindWeight(m, policy);
    const d = decayFactor(m, ctx);
    const capped = m.kind === 'cidr' ? cidrInfo(m.indicator, policy).cap : null;
    return { m, score: m.confidence * w * d.factor, fresh: m.confidence * w, capped };
  });

  // 2. Allowlist vs blocklist.
  if (allows.length) {
    const bestAllow = allows.reduce((a, b) => (specificity(b, ctx) > specificity(a, ctx) ? b : a));
    const allowSpec = specificity(bestAllow, ctx);
    const allowConf = Math.max(...allows.map((m) => m.confidence));
    const narrower = blocks.filter((m) => specificity(m, ctx) > allowSpec);
    reasons.push(describe(bestAllow));
    if (!narrower.length) {
      if (blocks.length) reasons.push(`the allowlist entry is at least as specific as the ${blocks.length} block match${blocks.length === 1 ? '' : 'es'} shown, so it wins`);
      return { verdict: 'benign', confidence: allowConf, rule: 'allowlist', reasons };
    }
    const urlLevel = narrower.filter((m) => m.indicator.includes('://'));
    if (urlLevel.length && !bestAllow.indicator.includes('://')) {
      reasons.push(`an allowlisted host does not clear a listed URL on it (${urlLevel[0].indicator}): URL-level evidence is judged on its own`);
      const d = blockDecision(scored.filter((s) => s.m.indicator.includes('://')), policy, reasons);
      return { ...d, rule: 'conflict:url-beats-host-allow' };
    }
    reasons.push(`a more specific block match (${narrower[0].indicator}, ${narrower[0].kind}) lies inside the allowlisted ${bestAllow.kind === 'cidr' ? 'network' : 'domain'}: contested, at most suspicious`);
    const d = blockDecision(scored, policy, reasons);
    return { verdict: 'suspicious', confidence: Math.min(d.confidence, policy.maliciousMin - 1), rule: 'conflict:narrower-block', reasons: d.reasons };
  }

  return blockDecision(scored, policy, reasons);
}

function blockDecision(scored: Scored[], policy: VerdictPolicy, reasons: string[]): Decision {
  const min = policy.maliciousMin;
  const bestPerFeed = (list: Scored[], key: 'score' | 'fresh') => {
    const by = new Map<string, number>();
    for (const s of list) by.set(s.m.feed, Math.max(by.get(s.m.feed) ?? 0, s[key]));
    return [...by.values()];
  };
  const uncapped = scored.filter((s) => !s.capped);
  const combinedAll = combine(bestPerFeed(scored, 'score'));
  const combined = combine(bestPerFeed(uncapped, 'score'));
  const combinedFresh = combine(bestPerFeed(uncapped, 'fresh'));
  const best = uncapped.reduce<Scored | null>((a, b) => (!a || b.score > a.score ? b : a), null);

  for (const s of [...scored].sort((a, b) => b.score - a.score).slice(0, 5)) {
    let line = describe(s.m);
    const w = s.fresh / Math.max(1, s.m.confidence);
    if (w < 0.999) line += `; ${s.m.kind} weight ${w.toFixed(2)}`;
    if (s.score < s.fresh - 0.5) line += `; aged evidence ×${(s.score / s.fresh).toFixed(2)}`;
    reasons.push(line);
    if (s.capped === 'broad') reasons.push(`network ${s.m.indicator} is wider than /${s.m.indicator.includes(':') ? policy.maxBlockPrefixV6 : policy.maxBlockPrefixV4}: it cannot make a value malicious by itself`);
    if (s.capped && cidrInfo(s.m.indicator, policy).reserved) reasons.push(`network ${s.m.indicator} overlaps private/reserved address space: it cannot make a value malicious by itself`);
  }
  const feeds = new Set(scored.map((s) => s.m.feed)).size;
  if (feeds > 1) reasons.push(`${feeds} block feeds list it; combined evidence ${pct(combinedAll)}`);

  if (best && combined >= min) {
    const single = best.score >= min;
    return { verdict: 'malicious', confidence: Math.min(100, pct(combined)), rule: single ? `block:${best.m.kind}` : 'block:corroborated', reasons };
  }
  const confidence = Math.max(1, Math.min(min - 1, pct(combinedAll)));
  if (!uncapped.length) return { verdict: 'suspicious', confidence, rule: 'cidr:broad-or-reserved', reasons };
  if (combinedFresh >= min) {
    reasons.push(`fresh, this evidence would reach ${pct(combinedFresh)}; its age brings it below ${min}`);
    return { verdict: 'suspicious', confidence, rule: 'block:decayed', reasons };
  }
  reasons.push(`block evidence ${pct(combined)} is below the malicious threshold ${min}`);
  return { verdict: 'suspicious', confidence, rule: 'block:low-confidence', reasons };
}
