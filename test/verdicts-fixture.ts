// Shared setup of the verdict tests: real signed packages built with the provider tooling from
// ../shared/data (block feeds from IPsum, Maltrail, URLhaus, FireHOL, signature-base; the MISP
// warninglists as an allow feed), imported through the normal verify-and-apply path into a fresh data dir.
import fs from 'node:fs';
import path from 'node:path';
import { loadConfig, type Config } from '../appliance/config.ts';
import { openDb, type DB } from '../appliance/db.ts';
import { importPackage } from '../sync/import.ts';
import { generateKeyPair } from '../sync/keys.ts';
import { buildPackage } from '../sync/provider-build.ts';
import { trustAdd } from '../sync/trust.ts';
import { DATA, tmpDir } from './helpers.ts';

export interface FeedSpec {
  feed: string;
  kind: 'block' | 'allow';
  files: string[];
  confidence?: number;
  category?: string;
}

export const WARNINGLISTS = fs.readdirSync(path.join(DATA, 'known-benign/warninglists')).filter((f) => f.endsWith('.json')).sort().map((f) => `known-benign/warninglists/${f}`);

/** Every real list the issue names; `small` swaps full IPsum for its level-3 subset to stay quick. */
export function realFeeds(opts: { small?: boolean } = {}): FeedSpec[] {
  return [
    { feed: 'ipsum', kind: 'block', files: [opts.small ? 'ipsum/levels/3.txt' : 'ipsum/ipsum.txt'], category: 'attacker' },
    { feed: 'maltrail', kind: 'block', files: ['maltrail/malware/lummac2.txt', 'maltrail/malware/apt_lazarus.txt', ...(opts.small ? [] : ['maltrail/malware/emotet.txt', 'maltrail/malware/cobaltstrike.txt'])], category: 'malware' },
    { feed: 'urlhaus', kind: 'block', files: ['urlhaus/urls.csv'], category: 'malware-download' },
    { feed: 'firehol', kind: 'block', files: ['firehol/firehol_level1.netset'], category: 'attacks', confidence: 95 },
    { feed: 'sigbase', kind: 'block', files: ['signature-base/c2-iocs.txt', 'signature-base/hash-iocs.txt'], category: 'c2' },
    { feed: 'warninglists', kind: 'allow', files: WARNINGLISTS, category: 'known-benign' },
  ];
}

export interface Prepared {
  work: string;
  dataDir: string;
  cfg: Config;
  keyPath: string;
  /** Builds and imports one more package (e.g. a newer version of a feed). */
  add(spec: FeedSpec, db?: DB): Promise<void>;
}

export async function prepare(feeds: FeedSpec[], prefix = 'outpost-verdicts-'): Promise<Prepared> {
  const work = tmpDir(prefix);
  const dataDir = path.join(work, 'data');
  const cfg = loadConfig({ dataDir, noDemo: true, logLevel: 'silent' }, {});
  const keys = generateKeyPair(work, 'provider');
  const db = openDb(dataDir);
  trustAdd(db, keys.publicPath, { label: 'test provider', actor: 'test' });
  const add = async (f: FeedSpec, into?: DB) => {
    const built = await buildPackage({
      feed: f.feed, keyPath: keys.privatePath, outDir: path.join(work, 'packages'), kind: f.kind,
      files: f.files.map((x) => path.join(DATA, x)), confidence: f.confidence, category: f.category,
    });
    await importPackage(cfg, into ?? db, built.path, { actor: 'test' });
  };
  try {
    for (const f of feeds) await add(f);
  } finally {
    db.close();
  }
  return { work, dataDir, cfg, keyPath: keys.privatePath, add };
}

/** Values of a warninglist file as published. */
export function warninglistValues(file: string): string[] {
  return (JSON.parse(fs.readFileSync(path.join(DATA, file), 'utf8')) as { list: unknown[] }).list.filter((v): v is string => typeof v === 'string');
}
