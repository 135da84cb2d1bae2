// STIX 2.0/2.1 bundles: `indicator` objects whose pattern is one equality comparison, or comparisons
// joined by OR (inside one `[...]` or across several), on an object path we can store:
// ipv4-addr/ipv6-addr/domain-name/url/email-addr `:value` and `file:hashes.<MD5|SHA-1|SHA-256>`.
// Anything else (AND, !=, MATCHES, LIKE, IN, qualifiers, x509-certificate, …) is one malformed record
// "unsupported STIX pattern: …", never fatal. Other object types are skipped (counted); a bundle with
// no indicator objects (an ATT&CK bundle) yields nothing and a note.
// Records: each value taken from a pattern, each refused indicator and each skipped object is one
// "line"; the sample line number is the object's 1-based position in `objects`.
import type { IndicatorType, SourceReport } from '../../appliance/types.ts';
import type { RawEntry } from './index.ts';
import { addMalformed, addNote, addSkipped } from './report.ts';
import { stixTlpResolver } from '../context.ts';

const PATH_HINTS: Record<string, IndicatorType> = {
  'ipv4-addr:value': 'ipv4',
  'ipv6-addr:value': 'ipv6',
  'domain-name:value': 'domain',
  'url:value': 'url',
  'email-addr:value': 'email',
};
/** STIX hash algorithm names (vocabulary `hash-algorithm-ov`, plus the 2.0 spellings) → our types. */
const HASH_HINTS: Record<string, IndicatorType> = {
  md5: 'md5', 'sha-1': 'sha1', sha1: 'sha1', 'sha-256': 'sha256', sha256: 'sha256',
};

export interface PatternTerm {
  hint: IndicatorType;
  value: string;
}

/** Parses a simple STIX pattern into its terms; throws Error with the reason when unsupported. */
export function parseStixPattern(pattern: string): PatternTerm[] {
  const terms: PatternTerm[] = [];
  let i = 0;
  const s = pattern;
  const ws = () => {
    while (i < s.length && /\s/.test(s[i])) i++;
  };
  const expect = (tok: string) => {
    ws();
    if (s.slice(i, i + tok.length) !== tok) throw new Error(`expected "${tok}" at offset ${i}`);
    i += tok.length;
  };
  const keywordOr = (): boolean => {
    ws();
    if (/^OR\b/.test(s.slice(i))) {
      i += 2;
      return true;
    }
    return false;
  };
  const comparison = () => {
    ws();
    const m = /^([a-z0-9-]+):((?:[a-z0-9_-]+|'[^']*')(?:\.(?:[a-z0-9_-]+|'[^']*'))*)/i.exec(s.slice(i));
    if (!m) throw new Error(`expected an object path at offset ${i}`);
    i += m[0].length;
    const objectType = m[1].toLowerCase();
    const prop = m[2];
    let hint: IndicatorType | undefined;
    const hashes = /^hashes\.(?:'([^']+)'|([a-z0-9_-]+))$/i.exec(prop);
    if (objectType === 'file' && hashes) hint = HASH_HINTS[(hashes[1] ?? hashes[2]).toLowerCase()];
    else hint = PATH_HINTS[`${objectType}:${prop}`];
    if (!hint) throw new Error(`object path ${m[0]} is not an indicator we store`);
    ws();
    if (s[i] !== '=') throw new Error(`operator other than "=" at offset ${i}`);
    i++;
    ws();
    if (s[i] !== "'") throw new Error(`expected a quoted string at offset ${i}`);
    i++;
    let value = '';
    for (;;) {
      if (i >= s.length) throw new Error('unterminated string');
      const c = s[i];
      if (c === '\\') {
        const n = s[i + 1];
        if (n !== "'" && n !== '\\') throw new Error(`bad escape at offset ${i}`);
        value += n;
        i += 2;
      } else if (c === "'") {
        i++;
        break;
      } else {
        value += c;
        i++;
      }
    }
    terms.push({ hint, value });
  };
  const observation = () => {
    expect('[');
    comparison();
    while (keywordOr()) comparison();
    expect(']');
  };
  observation();
  while (keywordOr()) observation();
  ws();
  if (i !== s.length) {
    const rest = s.slice(i).trim();
    throw new Error(/^AND\b/i.test(rest) ? 'AND is not supported' : /^(WITHIN|REPEATS|START|FOLLOWEDBY)\b/i.test(rest) ? `qualifier/operator "${rest.split(/\s/)[0]}" is not supported` : `unexpected text at offset ${i}`);
  }
  return terms;
}

function refine(e: Error, pattern: string): string {
  // Name the offending operator when it is inside the brackets, which is the common case (AND, MATCHES …).
  const op = /\b(AND|MATCHES|LIKE|IN|ISSUBSET|ISSUPERSET|FOLLOWEDBY|WITHIN|REPEATS)\b|!=|<=|>=|<|>/.exec(pattern.replace(/'(?:[^'\\]|\\.)*'/g, "''"));
  const why = op && !/object path/.test(e.message) ? `operator ${op[0]} is not supported` : e.message;
  return `unsupported STIX pattern: ${why}`;
}

type StixObject = Record<string, unknown>;

const str = (v: unknown): string | undefined => (typeof v === 'string' && v.trim() ? v : undefined);
const strings = (v: unknown): string[] => (Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string' && x.trim() !== '') : []);

export function* readStix(bundle: StixObject, report: SourceReport): Generator<RawEntry> {
  const objects = Array.isArray(bundle.objects) ? (bundle.objects as unknown[]) : [];
  const tlpOf = stixTlpResolver(objects); // TLP from object_marking_refs (sync/context.ts)
  let indicators = 0;
  for (let n = 0; n < objects.length; n++) {
    const o = objects[n] as StixObject;
    const lineNo = n + 1;
    if (!o || typeof o !== 'object' || o.type !== 'indicator') {
      report.lines++;
      addSkipped(report);
      continue;
    }
    indicators++;
    const pattern = typeof o.pattern === 'string' ? o.pattern : '';
    const patternType = o.pattern_type ?? 'stix'; // 2.0 has no pattern_type: always STIX patterning
    if (o.revoked === true) {
      report.lines++;
      addSkipped(report);
      addNote(report, `revoked indicator ${String(o.id)} skipped`);
      continue;
    }
    if (patternType !== 'stix' || !pattern) {
      report.lines++;
      addMalformed(report, lineNo, pattern || String(o.id), patternType !== 'stix' ? `unsupported pattern_type "${String(patternType)}"` : 'indicator without a pattern');
      continue;
    }
    let terms: PatternTerm[];
    try {
      terms = parseStixPattern(pattern);
    } catch (e) {
      report.lines++;
      addMalformed(report, lineNo, pattern, refine(e as Error, pattern));
      continue;
    }
    const ctx: NonNullable<RawEntry['ctx']> = {};
    if (str(o.id)) ctx.stix_id = o.id;
    if (str(o.name)) ctx.name = o.name;
    if (str(o.description)) ctx.description = o.description;
    if (str(o.valid_from)) ctx.first_seen = o.valid_from as string;
    if (str(o.valid_until)) ctx.expires = o.valid_until as string;
    if (typeof o.confidence === 'number' && o.confidence >= 0 && o.confidence <= 100) ctx.confidence = o.confidence;
    const tags = [...strings(o.labels), ...strings(o.indicator_types)];
    if (tags.length) ctx.tags = tags;
    const phases = Array.isArray(o.kill_chain_phases)
      ? (o.kill_chain_phases as StixObject[]).filter((p) => p && str(p.phase_name)).map((p) => `${String(p.kill_chain_name ?? '')}:${String(p.phase_name)}`)
      : [];
    if (phases.length) ctx.kill_chain = phases;
    const tlp = tlpOf(o.object_marking_refs);
    if (tlp) ctx.tlp = tlp;
    for (const t of terms) {
      report.lines++;
      yield { raw: t.value, hint: t.hint, line: lineNo, ctx: { ...ctx } };
    }
  }
  if (indicators === 0) addNote(report, `STIX bundle has no indicator objects (${objects.length} other objects skipped)`);
}
