// Structured context of an indicator (`Indicator.ctx`): the documented vocabulary (docs/context.md),
// validation and normalization of its fields, and the provider-side pass that fills what a source
// carries — TLP from tags and STIX markings, ATT&CK technique ids, threat types, malware families
// from AV detection names, and sample entries that tie the md5/sha1/sha256 of one file together.
// Source-specific keys the parsers already set (event, comment, filename, detection …) are kept as the
// source gave them; the structured fields are added next to them, never instead of them.
import type { IndicatorType } from '../appliance/types.ts';
import type { RawEntry } from './sources/index.ts';

// ---------------------------------------------------------------- TLP

/** FIRST TLP 2.0 labels, least to most restrictive. */
export const TLP_LEVELS = ['CLEAR', 'GREEN', 'AMBER', 'AMBER+STRICT', 'RED'] as const;
export type Tlp = (typeof TLP_LEVELS)[number];

export function tlpRank(t: Tlp): number {
  return TLP_LEVELS.indexOf(t);
}

/** The more restrictive of two markings (undefined counts as "no marking"). */
export function stricterTlp(a: Tlp | undefined, b: Tlp | undefined): Tlp | undefined {
  if (!a) return b;
  if (!b) return a;
  return tlpRank(a) >= tlpRank(b) ? a : b;
}

/**
 * Reads a TLP marking from the spellings in use: `TLP:AMBER+STRICT`, `tlp:amber`, `amber`, `AMBER STRICT`,
 * and TLP 1.0 `WHITE` (= CLEAR in TLP 2.0). Anything else → undefined.
 */
export function parseTlp(x: unknown): Tlp | undefined {
  if (typeof x !== 'string') return undefined;
  const s = x.trim().toUpperCase().replace(/^TLP\s*[:=\s]\s*/, '').replace(/"/g, '').replace(/\s*[+\s]\s*/g, '+');
  if (s === 'WHITE') return 'CLEAR';
  return (TLP_LEVELS as readonly string[]).includes(s) ? (s as Tlp) : undefined;
}

/** The TLP named by a tag such as `tlp:green` (MISP) — only tags that say "tlp" count. */
export function tlpFromTags(tags: readonly unknown[] | undefined): Tlp | undefined {
  let out: Tlp | undefined;
  for (const t of tags ?? []) {
    if (typeof t === 'string' && /^\s*tlp\s*[:=]/i.test(t)) out = stricterTlp(out, parseTlp(t));
  }
  return out;
}

/** Published STIX marking-definition ids: TLP 1.0 (STIX 2.x spec) and TLP 2.0 (OASIS extension). */
export const STIX_TLP_MARKINGS: Readonly<Record<string, Tlp>> = {
  'marking-definition--613f2e26-407d-48c7-9eca-b8e91df99dc9': 'CLEAR', // TLP:WHITE
  'marking-definition--34098fce-860f-48ae-8e50-ebd3cc5e41da': 'GREEN',
  'marking-definition--f88d31f6-486f-44da-b317-01333bde0b82': 'AMBER',
  'marking-definition--5e57c739-391a-4eb3-b6be-7d15ca92d5ed': 'RED',
  'marking-definition--94868c89-83c2-464b-929b-a1a8aa3c8487': 'CLEAR',
  'marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb': 'GREEN',
  'marking-definition--55d920b0-5e8b-4f79-9ee9-91f868d9b421': 'AMBER',
  'marking-definition--939a9414-2ddd-4d32-a0cd-375ea402b003': 'AMBER+STRICT',
  'marking-definition--e828b379-4e03-4974-9ac4-e53a884c97c1': 'RED',
};

/**
 * Resolver for `object_marking_refs` of a STIX bundle: the published ids above, plus the bundle's own
 * marking-definition objects of definition_type "tlp" (`definition.tlp`) or named `TLP:…`. Several
 * markings → the most restrictive; statement markings (copyright) are not TLP and are ignored.
 */
export function stixTlpResolver(objects: readonly unknown[]): (refs: unknown) => Tlp | undefined {
  const local = new Map<string, Tlp>();
  for (const o of objects) {
    if (!o || typeof o !== 'object') continue;
    const m = o as Record<string, unknown>;
    if (m.type !== 'marking-definition' || typeof m.id !== 'string') continue;
    const def = m.definition && typeof m.definition === 'object' ? (m.definition as Record<string, unknown>) : {};
    const tlp = m.definition_type === 'tlp' ? parseTlp(def.tlp) : undefined;
    const byName = typeof m.name === 'string' && /^TLP:/i.test(m.name) ? parseTlp(m.name) : undefined;
    const got = tlp ?? byName;
    if (got) local.set(m.id, got);
  }
  return (refs) => {
    if (!Array.isArray(refs)) return undefined;
    let out: Tlp | undefined;
    for (const r of refs) if (typeof r === 'string') out = stricterTlp(out, local.get(r) ?? STIX_TLP_MARKINGS[r]);
    return out;
  };
}

/** May an item with this marking leave the site under `--tlp-max`? RED never does; unmarked is decided by the caller. */
export function tlpAllowed(tlp: Tlp, max: 'green' | 'amber'): boolean {
  if (tlp === 'RED') return false;
  return tlpRank(tlp) <= tlpRank(max === 'amber' ? 'AMBER+STRICT' : 'GREEN');
}

// ---------------------------------------------------------------- vocabularies

/** The fixed threat-type vocabulary (docs/context.md). Keys are the only values `ctx.threat_types` may hold. */
export const THREAT_TYPES = {
  malware: 'hosts, delivers or is a malicious file',
  c2: 'command-and-control server or domain',
  botnet: 'member or infrastructure of a botnet',
  ransomware: 'ransomware infrastructure or sample',
  stealer: 'information stealer infrastructure or sample',
  rat: 'remote access trojan infrastructure or sample',
  loader: 'loader / downloader / dropper',
  phishing: 'phishing site, sender or lure',
  spam: 'spam source',
  scanner: 'mass scanning or probing',
  bruteforce: 'password guessing against services',
  exploit: 'exploitation attempts or exploit kits',
  ddos: 'denial-of-service source or booter',
  miner: 'cryptocurrency mining abuse',
  proxy: 'anonymizing proxy or VPN exit used for abuse',
  tor: 'Tor exit or relay',
  apt: 'attributed to a targeted (state-level) actor',
  sinkhole: 'sinkhole operated by researchers (not malicious itself)',
  benign: 'known benign (allowlists)',
} as const;
export type ThreatType = keyof typeof THREAT_TYPES;

/** Words seen in categories, tags, STIX indicator types and file names → the vocabulary. */
const THREAT_WORDS: Record<string, ThreatType> = {
  malware: 'malware', malware_download: 'malware', payload: 'malware', 'payload-delivery': 'malware', trojan: 'malware', virus: 'malware', worm: 'malware',
  c2: 'c2', cc: 'c2', cnc: 'c2', 'c&c': 'c2', botnet_cc: 'c2', 'command-and-control': 'c2',
  botnet: 'botnet', bot: 'botnet',
  ransomware: 'ransomware', filecoder: 'ransomware',
  stealer: 'stealer', infostealer: 'stealer',
  rat: 'rat', backdoor: 'rat',
  loader: 'loader', downloader: 'loader', dropper: 'loader',
  phishing: 'phishing', phish: 'phishing',
  spam: 'spam', spammer: 'spam',
  scanner: 'scanner', scanning: 'scanner', mass_scanner: 'scanner',
  bruteforce: 'bruteforce', 'brute-force': 'bruteforce',
  exploit: 'exploit', 'exploit-kit': 'exploit',
  ddos: 'ddos', booter: 'ddos',
  miner: 'miner', coinminer: 'miner', cryptominer: 'miner',
  proxy: 'proxy', tor: 'tor', apt: 'apt', sinkhole: 'sinkhole',
  benign: 'benign', 'known-benign': 'benign',
};

/** Threat types named by a list of words (categories, tags…); each word is also split on `_ - / space`. */
export function threatTypesFrom(words: readonly unknown[]): ThreatType[] {
  const out = new Set<ThreatType>();
  for (const w of words) {
    if (typeof w !== 'string') continue;
    const s = w.trim().toLowerCase();
    if (THREAT_WORDS[s]) out.add(THREAT_WORDS[s]);
    for (const part of s.split(/[\s_/:-]+/)) if (THREAT_WORDS[part]) out.add(THREAT_WORDS[part]);
  }
  return [...out].sort();
}

export const SEVERITIES = ['low', 'medium', 'high', 'critical'] as const;
export type Severity = (typeof SEVERITIES)[number];

/** ATT&CK technique or sub-technique id (Enterprise T1059.004, ICS T0803). */
export const ATTACK_ID = /^T\d{4}(?:\.\d{3})?$/;

/** Technique ids found in texts such as MISP galaxy names "Unix Shell - T1059.004". */
export function attackIdsFrom(texts: readonly unknown[]): string[] {
  const out = new Set<string>();
  for (const t of texts) {
    if (typeof t !== 'string') continue;
    for (const m of t.matchAll(/\bT\d{4}(?:\.\d{3})?\b/g)) out.add(m[0]);
  }
  return [...out].sort();
}

/** Type words at the front of AV detection names (ESET, Microsoft style): not a family. */
const DETECTION_TYPES = new Set([
  'trojan', 'trojandownloader', 'trojandropper', 'trojanspy', 'trojanproxy', 'trojanclicker', 'spy', 'backdoor', 'exploit',
  'worm', 'virus', 'riskware', 'psw', 'hacktool', 'filecoder', 'adware', 'downloader', 'dropper', 'rootkit', 'ransom', 'kryptik',
]);
const GENERIC_FAMILIES = new Set(['agent', 'generic', 'genkryptik', 'kryptik', 'injector', 'small', 'tiny', 'packed', 'suspicious', 'malware', 'variant']);

/**
 * The malware family in an AV detection name `Platform/[Type.]Family.Variant` (ESET: `Linux/Mozi.D`,
 * `Win32/Nightclub.B`), or undefined for generic names (`WinGo/Agent.ET`, `Win64/Exploit.CVE-2021-1732.A`).
 */
export function familyFromDetection(name: string): string | undefined {
  const body = name.includes('/') ? name.slice(name.lastIndexOf('/') + 1) : name;
  const parts = body.split('.').filter(Boolean);
  if (parts.length > 1 && /^[A-Z]{1,3}$/.test(parts[parts.length - 1])) parts.pop();
  while (parts.length && DETECTION_TYPES.has(parts[0].toLowerCase())) parts.shift();
  const fam = parts[0];
  if (!fam || /^CVE-/i.test(fam) || GENERIC_FAMILIES.has(fam.toLowerCase()) || !/^[A-Za-z][A-Za-z0-9_-]{1,40}$/.test(fam)) return undefined;
  return fam;
}

// ---------------------------------------------------------------- sample fields

export const HASH_TYPES = ['md5', 'sha1', 'sha256'] as const;
export type HashType = (typeof HASH_TYPES)[number];

/** One file: its hashes together (each hash indicator carries the same object), name, size, type, family. */
export interface SampleContext {
  md5?: string;
  sha1?: string;
  sha256?: string;
  file_name?: string;
  size?: number;
  file_type?: string;
  family?: string;
}

/** md5/sha1/sha256 by the length of a hex string, else undefined (used before normalization). */
export function hashTypeOf(raw: string, hint?: IndicatorType): HashType | undefined {
  if (hint === 'md5' || hint === 'sha1' || hint === 'sha256') return hint;
  if (hint) return undefined;
  const v = raw.trim();
  if (!/^[0-9a-fA-F]+$/.test(v)) return undefined;
  return v.length === 32 ? 'md5' : v.length === 40 ? 'sha1' : v.length === 64 ? 'sha256' : undefined;
}

// ---------------------------------------------------------------- validation

type Ctx = Record<string, unknown>;
const isStr = (x: unknown): x is string => typeof x === 'string' && x.trim() !== '';
const strList = (x: unknown): string[] => (Array.isArray(x) ? x.filter(isStr) : isStr(x) ? [x] : []);

/** Names in a family/actor field: a string or a list of strings. */
export function namesOf(x: unknown): string[] {
  return [...new Set(strList(x).map((s) => s.trim()))];
}

/**
 * Checks the structured fields of a ctx against the documented vocabulary. Returns the problems found
 * (empty = valid); fields outside the vocabulary are not checked (sources keep their own keys).
 */
export function checkContext(ctx: unknown): string[] {
  const errs: string[] = [];
  if (ctx === undefined) return errs;
  if (!ctx || typeof ctx !== 'object' || Array.isArray(ctx)) return ['ctx must be an object'];
  const c = ctx as Ctx;
  if (c.tlp !== undefined && !(TLP_LEVELS as readonly unknown[]).includes(c.tlp)) errs.push(`tlp must be one of ${TLP_LEVELS.join(', ')}`);
  if (c.severity !== undefined && !(SEVERITIES as readonly unknown[]).includes(c.severity)) errs.push(`severity must be one of ${SEVERITIES.join(', ')}`);
  if (c.threat_types !== undefined && !(Array.isArray(c.threat_types) && c.threat_types.every((t) => typeof t === 'string' && t in THREAT_TYPES))) {
    errs.push(`threat_types must be a list from: ${Object.keys(THREAT_TYPES).join(', ')}`);
  }
  if (c.attack !== undefined && !(Array.isArray(c.attack) && c.attack.every((t) => typeof t === 'string' && ATTACK_ID.test(t)))) errs.push('attack must be a list of ATT&CK ids like T1059.004');
  if (c.asn !== undefined && !(Number.isInteger(c.asn) && (c.asn as number) >= 0 && (c.asn as number) <= 4294967295)) errs.push('asn must be an integer 0-4294967295');
  if (c.country !== undefined && !(typeof c.country === 'string' && /^[A-Z]{2}$/.test(c.country))) errs.push('country must be an ISO 3166-1 alpha-2 code like DE');
  if (c.resolves_to !== undefined && !(Array.isArray(c.resolves_to) && c.resolves_to.every(isStr))) errs.push('resolves_to must be a list of addresses');
  for (const k of ['family', 'actor'] as const) {
    if (c[k] !== undefined && !(isStr(c[k]) || (Array.isArray(c[k]) && (c[k] as unknown[]).every(isStr)))) errs.push(`${k} must be a name or a list of names`);
  }
  if (c.sample !== undefined) {
    const s = c.sample as Ctx;
    if (!s || typeof s !== 'object' || Array.isArray(s)) errs.push('sample must be an object');
    else {
      const hex: Record<HashType, number> = { md5: 32, sha1: 40, sha256: 64 };
      for (const h of HASH_TYPES) {
        if (s[h] !== undefined && !(typeof s[h] === 'string' && new RegExp(`^[0-9a-f]{${hex[h]}}$`).test(s[h] as string))) errs.push(`sample.${h} must be ${hex[h]} lowercase hex chars`);
      }
      if (s.size !== undefined && !(Number.isSafeInteger(s.size) && (s.size as number) >= 0)) errs.push('sample.size must be a non-negative integer');
      for (const k of ['file_name', 'file_type', 'family']) if (s[k] !== undefined && !isStr(s[k])) errs.push(`sample.${k} must be a non-empty string`);
    }
  }
  return errs;
}

// ---------------------------------------------------------------- provider-side structuring

/**
 * Adds the structured fields a raw entry's context implies (never removes source keys):
 * tlp (explicit, else from tags), threat_types (from category, tags, family file names, MISP category),
 * attack ids, family from AV detections when the source named none, and for hashes a `sample` object.
 */
export function structureContext(ctx: Ctx, raw: string, hint?: IndicatorType): Ctx {
  const out: Ctx = { ...ctx };
  const tags = Array.isArray(ctx.tags) ? ctx.tags : [];
  const tlp = parseTlp(ctx.tlp) ?? tlpFromTags(tags);
  if (tlp) out.tlp = tlp;
  else delete out.tlp;
  const families = namesOf(ctx.family);
  const types = threatTypesFrom([
    ...(Array.isArray(ctx.threat_types) ? ctx.threat_types : []), ctx.category, ...tags, ...families, ...strList(ctx.indicator_types),
    ctx.misp_category === 'Payload delivery' || ctx.misp_category === 'Payload installation' ? 'malware' : undefined,
  ]);
  if (types.length) out.threat_types = types;
  const attack = [...new Set([...attackIdsFrom(strList(ctx.attack)), ...attackIdsFrom(strList(ctx.kill_chain).filter((k) => /mitre/i.test(k)))])].sort();
  if (attack.length) out.attack = attack;
  else delete out.attack;
  if (!families.length) {
    const fromDetections = [...new Set(strList(ctx.detection).map(familyFromDetection).filter(isStr))];
    if (fromDetections.length) out.family = fromDetections.length === 1 ? fromDetections[0] : fromDetections;
  }
  const hash = hashTypeOf(raw, hint);
  if (hash) {
    const sample: SampleContext = { ...((ctx.sample as SampleContext) ?? {}) };
    sample[hash] = raw.trim().toLowerCase();
    const name = ctx.filename ?? ctx.file_name;
    if (isStr(name) && !sample.file_name) sample.file_name = name.trim();
    if (Number.isSafeInteger(ctx.size) && sample.size === undefined) sample.size = ctx.size as number;
    if (isStr(ctx.file_type) && !sample.file_type) sample.file_type = ctx.file_type;
    const fam = namesOf(out.family)[0];
    if (fam && !sample.family) sample.family = fam;
    out.sample = sample;
  }
  return out;
}

/** LOKI comments of one sample's three lines differ only in the hash name ("… - MD5 hash - x"). */
function sampleComment(text: unknown): string | undefined {
  if (!isStr(text)) return undefined;
  return text.replace(/\b(md5|sha-?1|sha-?256)\b(\s+hash(es)?)?/gi, ' ').replace(/\s+/g, ' ').trim().toLowerCase();
}

/**
 * Provider-side pass over one source file's raw entries (between the parser and collect's normalize):
 * structures each entry's context and links the hashes of one file into one sample entry —
 *  - MISP: the hash attributes of one object (same ctx.object_uuid; the parser yields them together);
 *  - LOKI lists (signature-base): three consecutive lines holding one md5, one sha1 and one sha256
 *    whose comments are equal once the hash names are removed ("Bronze Union IOC - MD5 hash - ZxShell
 *    installer"). Nothing else is linked: separate hash lists do not say which lines belong together.
 * Every hash of a linked group gets the same `sample` object with all its hashes.
 */
export async function* contextualize(entries: AsyncIterable<RawEntry> | Iterable<RawEntry>): AsyncGenerator<RawEntry> {
  let group: RawEntry[] = [];
  let groupKey: string | undefined;
  const window: RawEntry[] = [];

  const finish = (items: RawEntry[]): RawEntry[] => {
    const hashed = items.filter((e) => hashTypeOf(e.raw, e.hint));
    if (hashed.length > 1) {
      const sample: SampleContext = {};
      for (const e of hashed) {
        const h = hashTypeOf(e.raw, e.hint)!;
        sample[h] ??= e.raw.trim().toLowerCase();
      }
      for (const e of hashed) {
        const s = (e.ctx?.sample as SampleContext | undefined) ?? {};
        const merged: SampleContext = { ...s, ...sample };
        for (const other of hashed) {
          const o = other.ctx?.sample as SampleContext | undefined;
          if (o?.file_name && !merged.file_name) merged.file_name = o.file_name;
          if (o?.family && !merged.family) merged.family = o.family;
          if (o?.size !== undefined && merged.size === undefined) merged.size = o.size;
          if (o?.file_type && !merged.file_type) merged.file_type = o.file_type;
        }
        e.ctx = { ...e.ctx, sample: merged };
      }
    }
    return items;
  };

  const isTriple = (w: RawEntry[]): boolean => {
    if (w.length !== 3) return false;
    const types = w.map((e) => hashTypeOf(e.raw, e.hint));
    if (new Set(types).size !== 3 || types.some((t) => !t)) return false;
    if (w[0].line === undefined || w[1].line !== w[0].line + 1 || w[2].line !== w[0].line + 2) return false;
    const c = w.map((e) => sampleComment(e.ctx?.description));
    return !!c[0] && c[0] === c[1] && c[1] === c[2];
  };

  for await (const entry of entries) {
    const e: RawEntry = { ...entry, ctx: structureContext(entry.ctx ?? {}, entry.raw, entry.hint) };
    const key = isStr(e.ctx!.object_uuid) ? (e.ctx!.object_uuid as string) : undefined;
    if (group.length && key !== groupKey) {
      yield* finish(group);
      group = [];
    }
    if (key) {
      // MISP objects: grouped by uuid; LOKI windows do not apply.
      while (window.length) yield window.shift()!;
      groupKey = key;
      group.push(e);
      continue;
    }
    groupKey = undefined;
    window.push(e);
    if (window.length === 3) {
      if (isTriple(window)) yield* finish(window.splice(0, 3));
      else yield window.shift()!;
    }
  }
  yield* finish(group);
  while (window.length) yield window.shift()!;
}

/** Sets `ctx.tlp` on every indicator that has none (provider build --tlp). */
export function defaultTlp<T extends { ctx?: Ctx }>(items: T[], tlp: Tlp | undefined): T[] {
  if (!tlp) return items;
  for (const i of items) if (!parseTlp(i.ctx?.tlp)) i.ctx = { ...(i.ctx ?? {}), tlp };
  return items;
}
