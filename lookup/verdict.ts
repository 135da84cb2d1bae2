// Turns the matches of one lookup into a verdict. Deliberately simple and stated in one place; the
// weighting of feeds and conflicts is to be refined later without changing the result shape.
//
// Rule, in order:
//  1. any match from an allow-kind feed              → benign      (rule "allowlist"; confidence = max allow confidence)
//  2. a block match of kind exact/url/subdomain, or a "narrow public" cidr match, with confidence ≥ 70
//                                                    → malicious   (rule "block:<kind>"; confidence = that max)
//  3. any other block match                          → suspicious  (rule "block:low-confidence" or "cidr:broad-or-reserved";
//                                                                   confidence = max block confidence, capped at 69)
//  4. no match                                       → unknown, confidence 0 (rule "none")
// A cidr match is capped at suspicious when its network is broader than /16 (IPv4) or /32 (IPv6), or
// overlaps private/reserved space (any ipaddr.js range other than 'unicast'): real lists (FireHOL level1)
// carry 10.0.0.0/8 and the like, which must not turn internal traffic malicious.
import ipaddr from 'ipaddr.js';
import type { Match, Verdict } from '../appliance/types.ts';

export const MALICIOUS_MIN_CONFIDENCE = 70;
const SUSPICIOUS_MAX_CONFIDENCE = MALICIOUS_MIN_CONFIDENCE - 1;

export interface Decision {
  verdict: Verdict;
  confidence: number;
  rule: string;
}

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
const cidrCapCache = new Map<string, boolean>();

/** True when a listed network `net/prefix` may only make an address suspicious (see the header). */
export function cidrIsCapped(network: string): boolean {
  const cached = cidrCapCache.get(network);
  if (cached !== undefined) return cached;
  let capped = true; // unparsable → treat as the weakest evidence
  try {
    const [addr, prefix] = ipaddr.parseCIDR(network);
    const v4 = addr.kind() === 'ipv4';
    if (prefix >= (v4 ? 16 : 32)) {
      capped = false;
      for (const [range, bits] of v4 ? SPECIAL4 : SPECIAL6) {
        if (range.kind() !== addr.kind()) continue;
        // Overlap: the network lies inside a special range, or contains one.
        if (addr.match(range, bits) || range.match(addr, prefix)) {
          capped = true;
          break;
        }
      }
    }
  } catch {
    capped = true;
  }
  if (cidrCapCache.size > 100_000) cidrCapCache.clear();
  cidrCapCache.set(network, capped);
  return capped;
}

export function decide(matches: readonly Match[]): Decision {
  if (matches.length === 0) return { verdict: 'unknown', confidence: 0, rule: 'none' };
  let allowConf = -1;
  let strongConf = -1;
  let strongKind = '';
  let weakConf = -1;
  let weakCidr = false;
  for (const m of matches) {
    if (m.feed_kind === 'allow') {
      allowConf = Math.max(allowConf, m.confidence);
      continue;
    }
    const capped = m.kind === 'cidr' && cidrIsCapped(m.indicator);
    if (!capped && m.confidence >= MALICIOUS_MIN_CONFIDENCE) {
      if (m.confidence > strongConf) {
        strongConf = m.confidence;
        strongKind = m.kind;
      }
    } else {
      if (m.confidence >= weakConf) weakCidr = capped;
      weakConf = Math.max(weakConf, m.confidence);
    }
  }
  if (allowConf >= 0) return { verdict: 'benign', confidence: allowConf, rule: 'allowlist' };
  if (strongConf >= 0) return { verdict: 'malicious', confidence: strongConf, rule: `block:${strongKind}` };
  return {
    verdict: 'suspicious',
    confidence: Math.min(weakConf, SUSPICIOUS_MAX_CONFIDENCE),
    rule: weakCidr ? 'cidr:broad-or-reserved' : 'block:low-confidence',
  };
}
