// First-start demo: a provider key inside the data dir, signed packages built from the attributed real
// samples in scripts/demo-data, imported through the same verify-and-apply path as any package.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Config } from '../appliance/config.ts';
import { layout, type DB } from '../appliance/db.ts';
import type { Logger } from '../appliance/log.ts';
import { createToken } from '../appliance/tokens.ts';
import { importPackage } from '../sync/import.ts';
import { generateKeyPair } from '../sync/keys.ts';
import { buildPackage } from '../sync/provider-build.ts';
import { trustAdd } from '../sync/trust.ts';

export const DEMO_DATA = path.join(path.dirname(fileURLToPath(import.meta.url)), 'demo-data');

export interface DemoInfo {
  token: string;
  feeds: { feed: string; version: number; total: number }[];
}

function sourceFiles(dir: string): string[] {
  return fs
    .readdirSync(dir, { withFileTypes: true })
    .filter((e) => e.isFile() && !e.name.endsWith('.md'))
    .map((e) => path.join(dir, e.name))
    .sort();
}

/** Seeds an empty appliance; returns null when the data dir already holds feeds. */
export async function ensureDemo(cfg: Config, db: DB, log: Logger): Promise<DemoInfo | null> {
  const feeds = (db.prepare('SELECT count(*) AS n FROM feeds').get() as { n: number }).n;
  if (feeds > 0) return null;
  const dir = layout(cfg.dataDir).demo;
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const keyPath = path.join(dir, 'demo-provider.key');
  if (!fs.existsSync(keyPath)) generateKeyPair(dir, 'demo-provider');
  trustAdd(db, path.join(dir, 'demo-provider.pub'), { label: 'demo provider (generated on first start)', actor: 'demo' });

  const out = path.join(dir, 'packages');
  const builds = [
    { feed: 'demo-threats', kind: 'block' as const, files: sourceFiles(DEMO_DATA), category: 'malware', confidence: 80 },
    { feed: 'demo-known-benign', kind: 'allow' as const, files: sourceFiles(path.join(DEMO_DATA, 'allow')), category: 'known-benign', confidence: 100 },
  ];
  const result: DemoInfo['feeds'] = [];
  for (const b of builds) {
    log.info({ feed: b.feed, files: b.files.length }, 'building demo package');
    const built = await buildPackage({ feed: b.feed, keyPath, outDir: out, files: b.files, kind: b.kind, category: b.category, confidence: b.confidence, expiresDays: 365 });
    const imported = await importPackage(cfg, db, built.path, { actor: 'demo', source: `demo:${path.basename(built.path)}` });
    result.push({ feed: b.feed, version: imported.version, total: imported.total ?? 0 });
    log.info({ feed: b.feed, version: imported.version, indicators: imported.total }, 'demo package imported');
  }
  const { token } = createToken(db, 'demo', 'lookup', { actor: 'demo' });
  return { token, feeds: result };
}
