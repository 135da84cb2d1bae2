// Test fixture for the export tests: a real SQLite store (openDb in a temp dir) filled with a few
// hundred real values per type from ../shared/data, normalized by the real normalizer, plus real
// allowlists (tranco top domains, Google Cloud ranges, public DNS resolvers).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { openDb, type DB } from '../appliance/db.ts';
import type { IndicatorType } from '../appliance/types.ts';
import { normalize } from '../lookup/normalize.ts';

const here = path.dirname(fileURLToPath(import.meta.url));
export const DATA = path.resolve(here, '..', '../shared/data');
export const NOW = 1_790_000_000; // fixed export time (2026-09-20), so expiry is deterministic
export const DAY = 86_400;

export function readLines(rel: string): string[] {
  return fs.readFileSync(path.join(DATA, rel), 'utf8').split(/\r?\n/).map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
}

export function warninglist(rel: string): string[] {
  return (JSON.parse(fs.readFileSync(path.join(DATA, rel), 'utf8')) as { list: string[] }).list;
}

/** URLhaus CSV: `tags,url,status` with a quoted tags column; the URL is the second-to-last field. */
export function urlhausUrls(limit: number): string[] {
  const out: string[] = [];
  for (const line of readLines('urlhaus/urls.csv').slice(1)) {
    const fields = line.split(',');
    if (fields.length >= 3) out.push(fields[fields.length - 2]);
    if (out.length >= limit) break;
  }
  return out;
}

export interface Fixture {
  dir: string;
  db: DB;
  /** Normalized values inserted per feed. */
  inserted: Map<string, Array<{ type: IndicatorType; value: string }>>;
  malformed: number;
  close(): void;
}

export function addFeed(db: DB, name: string, kind: 'block' | 'allow', category: string | null, confidence: number | null): void {
  db.prepare(
    `INSERT INTO feeds(name, kind, version, state, package_sha256, key_id, created, expires, applied_at, generation, count, category, confidence)
     VALUES (?, ?, 1, 'active', ?, 'test-key', '2026-09-01T00:00:00Z', '2026-12-01T00:00:00Z', '2026-09-01T00:00:00Z', 1, 0, ?, ?)`,
  ).run(name, kind, 'ab'.repeat(32), category, confidence);
}

export interface RowOpts {
  category?: string | null;
  confidence?: number | null;
  first_seen?: number | null;
  last_seen?: number | null;
  expires_at?: number | null;
  extra?: unknown;
}

export function addRow(db: DB, feed: string, kind: 'block' | 'allow', type: IndicatorType, value: string, o: RowOpts = {}): void {
  db.prepare(
    `INSERT OR REPLACE INTO indicators(type, value, feed, kind, category, confidence, first_seen, last_seen, expires_at, extra)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
  ).run(
    type, value, feed, kind, o.category ?? null, o.confidence === undefined ? null : o.confidence,
    o.first_seen === undefined ? NOW - 20 * DAY : o.first_seen,
    o.last_seen === undefined ? NOW - 2 * DAY : o.last_seen,
    o.expires_at === undefined ? NOW + 30 * DAY : o.expires_at,
    o.extra === undefined ? null : JSON.stringify(o.extra),
  );
}

export function freshDb(): { dir: string; db: DB; close(): void } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'outpost-exports-'));
  const db = openDb(dir);
  return { dir, db, close: () => { db.close(); fs.rmSync(dir, { recursive: true, force: true }); } };
}

export function buildFixture(): Fixture {
  const { dir, db, close } = freshDb();
  const inserted = new Map<string, Array<{ type: IndicatorType; value: string }>>();
  let malformed = 0;
  const load = (feed: string, kind: 'block' | 'allow', raws: string[], o: RowOpts = {}, only?: IndicatorType[]) => {
    const list: Array<{ type: IndicatorType; value: string }> = [];
    db.transaction(() => {
      for (const raw of raws) {
        const n = normalize(raw.split(/[\s;]/)[0]);
        if (!n.ok) { malformed++; continue; }
        if (only && !only.includes(n.type)) continue;
        addRow(db, feed, kind, n.type, n.value, { ...o, extra: n.port ? { ports: [n.port] } : o.extra });
        list.push({ type: n.type, value: n.value });
      }
    })();
    inserted.set(feed, list);
  };
  addFeed(db, 'ipsum', 'block', 'scanner', 40);
  addFeed(db, 'threatfox', 'block', 'c2', 80);
  addFeed(db, 'firehol', 'block', 'malware', 70);
  addFeed(db, 'lummac2', 'block', 'malware', 75);
  addFeed(db, 'c2-iocs', 'block', 'c2', 85);
  addFeed(db, 'urlhaus', 'block', 'malware_download', 90);
  addFeed(db, 'hashes', 'block', 'malware', 95);
  addFeed(db, 'tranco', 'allow', null, null);
  addFeed(db, 'gcp', 'allow', null, null);
  addFeed(db, 'public-dns', 'allow', null, null);

  load('ipsum', 'block', readLines('ipsum/ipsum.txt').slice(0, 300));
  load('threatfox', 'block', readLines('threatfox/ips.txt').slice(0, 300), { confidence: 85, extra: { tags: ['threatfox'] } });
  load('firehol', 'block', readLines('firehol/firehol_level1.netset').slice(0, 400));
  load('lummac2', 'block', readLines('maltrail/malware/lummac2.txt').slice(0, 600));
  load('c2-iocs', 'block', readLines('signature-base/c2-iocs.txt'), {}, ['domain', 'ipv4']);
  load('urlhaus', 'block', urlhausUrls(400));
  load('hashes', 'block', [...readLines('signature-base/hash-iocs.txt').slice(0, 600), ...readLines('eset/nukesped_lazarus/samples.sha256').slice(0, 200), ...readLines('eset/nukesped_lazarus/samples.sha1').slice(0, 200)]);
  load('tranco', 'allow', warninglist('known-benign/warninglists/tranco10k.json'));
  load('gcp', 'allow', warninglist('known-benign/warninglists/google-gcp.json'));
  load('public-dns', 'allow', warninglist('known-benign/warninglists/public-dns-v4.json').slice(0, 3000));
  return { dir, db, inserted, malformed, close };
}

/** Reads a whole export into one string (tests only: exports themselves stream). */
export function collect(chunks: Iterable<string>): string {
  let s = '';
  for (const c of chunks) s += c;
  return s;
}
