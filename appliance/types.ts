// Data types shared by sync/ (packages, apply) and lookup/ (normalization, verdicts, API).

/** Types an indicator can be stored as. Networks are their own types so filters and exports can tell them apart. */
export type IndicatorType =
  | 'ipv4'
  | 'ipv6'
  | 'ipv4-cidr'
  | 'ipv6-cidr'
  | 'domain'
  | 'url'
  | 'md5'
  | 'sha1'
  | 'sha256'
  | 'email';

export const INDICATOR_TYPES: readonly IndicatorType[] = [
  'ipv4', 'ipv6', 'ipv4-cidr', 'ipv6-cidr', 'domain', 'url', 'md5', 'sha1', 'sha256', 'email',
];

/**
 * The export file sets serve keeps current in <data dir>/exports after each new generation
 * (lookup/exports/index.ts writeExportFiles; config OUTPOST_EXPORT_FILES): `suricata` is the directory of
 * datasets, rules and IP reputation, `misp-feed` a directory, the others one file each.
 */
export const EXPORT_FILE_SETS = ['suricata', 'zeek-intel', 'rpz', 'csv', 'stix', 'misp-feed'] as const;
export type ExportFileSet = (typeof EXPORT_FILE_SETS)[number];

/** Types a looked-up value can have (contract: a network is not a lookup value). */
export type LookupType = 'ipv4' | 'ipv6' | 'domain' | 'url' | 'md5' | 'sha1' | 'sha256' | 'email' | 'invalid';

/** Result of normalizing one raw value (a list line, an API value, a STIX pattern value). */
export type NormalizeResult =
  | {
      ok: true;
      type: IndicatorType;
      /** Canonical form: the key used in packages, the store and the filters. */
      value: string;
      /** Port from an `ip:port` / `host:port` form, kept as context. */
      port?: number;
      /** Prefix length for `*-cidr` types. */
      prefix?: number;
    }
  | { ok: false; error: string };

export type FeedKind = 'block' | 'allow';

/** One indicator as carried in a package (one NDJSON line) — short keys keep packages small. */
export interface Indicator {
  v: string; // normalized value
  t: IndicatorType;
  cat?: string; // category, e.g. malware, c2, scanner, phishing
  conf?: number; // 0-100
  fs?: string; // first seen, ISO 8601
  ls?: string; // last seen, ISO 8601
  exp?: string; // expires at, ISO 8601
  ports?: number[];
  tags?: string[];
  /** Structured context (families, actors, TLP, sample fields…), carried through unchanged. */
  ctx?: Record<string, unknown>;
}

export interface ManifestFile {
  name: string; // flat file name inside the tar
  /** `reference`: actor/family reference lines of a `kind: "reference"` package (sync/reference.ts). */
  role: 'indicators' | 'add' | 'remove' | 'reference';
  sha256: string; // of the bytes as stored in the tar (compressed)
  size: number; // stored bytes
  uncompressed_size: number;
  count: number; // NDJSON lines
}

export interface SourceReport {
  file: string;
  format: string;
  lines: number;
  accepted: number;
  malformed: number;
  duplicates: number;
  /** Lines/records deliberately not read as indicators: comments, blanks, headers, non-indicator objects/attributes.
   *  Invariant: lines = accepted + malformed + duplicates + skipped. For JSON sources a "line" is a record. */
  skipped?: number;
  /** File-level remarks, e.g. "STIX bundle has no indicator objects". */
  notes?: string[];
  /** A few malformed lines with their reasons, so a provider sees what was refused. */
  samples: { line: number; text: string; error: string }[];
}

export interface Manifest {
  format: 'outpost-package/1';
  feed: string;
  kind: FeedKind;
  type: 'full' | 'delta';
  version: number;
  created: string;
  expires: string;
  key_id: string;
  /** sha256 over the canonical content state of the feed after this package is applied. */
  state: string;
  base_version?: number;
  base_state?: string;
  defaults: { category?: string; confidence?: number };
  files: ManifestFile[];
  counts: { total: number; by_type: Partial<Record<IndicatorType, number>>; added?: number; removed?: number };
  sources?: SourceReport[];
}

export type MatchKind = 'exact' | 'cidr' | 'subdomain' | 'url';

export interface Match {
  feed: string;
  feed_kind?: FeedKind;
  indicator: string;
  kind: MatchKind;
  category: string | null;
  confidence: number;
  first_seen: string | null;
  last_seen: string | null;
  expires_at: string | null;
  ports?: number[];
  tags?: string[];
  context?: Record<string, unknown>;
}

export type Verdict = 'malicious' | 'suspicious' | 'benign' | 'unknown';

export interface LookupResult {
  value: string;
  type: LookupType;
  normalized?: string;
  error?: string;
  verdict: Verdict;
  confidence: number;
  matches: Match[];
  rule?: string;
  /** Human-readable explanation of the verdict (lookup/verdict.ts, docs/verdicts.md). */
  reasons?: string[];
  /** Threat actors / malware families the matched indicators link to (lookup/actors.ts, docs/context.md). */
  actors?: LinkedEntity[];
  families?: LinkedEntity[];
  generation: number;
  data_age_s: number | null;
}

/** An actor or family named by an indicator's context, resolved through the reference alias index when possible. */
export interface LinkedEntity {
  /** Reference entity id (STIX id or galaxy cluster uuid); null when the name is not in the reference data. */
  id: string | null;
  name: string;
  aliases: string[];
  source?: string;
}
