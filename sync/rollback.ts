// `outpost rollback --feed <name>`: return a feed to the version it had before its last applied package.
//
// Nothing is rebuilt from local rows: the kept package of the previous version (import.ts keeps every
// accepted package under <data dir>/packages/<feed>/<version>-<type>-<sha16>.tar) goes through the same
// stage → verify → apply path as any import, with the rollback override that lets an older version in.
// Its signature, file hashes, expiry and, at the end, its signed content state are all checked again.
//
// When the previous package was a delta, its base is rebuilt from the kept chain: the newest kept full
// package it descends from, then each kept delta in order (every step verified, each delta applying only
// to its exact base version and state). The steps are separate transactions; a crash between them leaves
// the feed at an intermediate, signed version of itself, never at a mix.
//
// Version floor: the apply transaction of a rollback records the rolled-back-from version in
// feeds.floor_version; a package at or below it is refused (E_ROLLBACK) until the provider publishes a
// newer version, so the next scheduled pull does not silently undo the rollback. One step back is kept: a
// second rollback right after one is refused (E_CONFLICT).
import fs from 'node:fs';
import path from 'node:path';
import type { Config } from '../appliance/config.ts';
import type { DB } from '../appliance/db.ts';
import { audit, layout } from '../appliance/db.ts';
import { OutpostError, asOutpostError } from '../appliance/errors.ts';
import type { Manifest } from '../appliance/types.ts';
import { getFeed } from './apply.ts';
import { importPackage, type ImportResult } from './import.ts';
import { stagePackage } from './package-reader.ts';
import { limitsOf } from './import.ts';

export interface RollbackResult {
  feed: string;
  from_version: number;
  to_version: number;
  /** Kept packages applied, oldest first (one unless the previous package was a delta). */
  steps: string[];
  generation: number;
  total: number;
  floor_version: number;
}

const KEPT = /^(\d+)-(full|delta)-[0-9a-f]{16}\.tar$/;

/** Reads only the (unverified) manifest of a kept package, to plan the chain; import verifies it again. */
async function keptManifest(cfg: Config, file: string): Promise<Manifest> {
  const staged = await stagePackage(file, layout(cfg.dataDir).staging, limitsOf(cfg));
  try {
    return staged.manifest;
  } finally {
    staged.cleanup();
  }
}

/** The kept packages needed to reach `target` (a kept package path), oldest first. */
export async function rollbackChain(cfg: Config, feed: string, target: string): Promise<string[]> {
  const dir = path.join(layout(cfg.dataDir).packages, feed.replace(/[^A-Za-z0-9._-]/g, '_'));
  const kept = fs.existsSync(dir) ? fs.readdirSync(dir).filter((f) => KEPT.test(f)) : [];
  const chain: string[] = [];
  let file = target;
  for (let hops = 0; hops < 10_000; hops++) {
    if (!fs.existsSync(file)) throw new OutpostError('E_NOT_FOUND', `kept package ${file} is missing; cannot roll feed "${feed}" back`);
    const m = await keptManifest(cfg, file);
    if (m.feed !== feed) throw new OutpostError('E_CONFLICT', `kept package ${path.basename(file)} belongs to feed "${m.feed}", not "${feed}"`);
    chain.unshift(file);
    if (m.type === 'full') return chain;
    // A delta: its base version, preferring a full package of that version over another delta.
    const candidates = kept
      .map((f) => ({ f, x: KEPT.exec(f)! }))
      .filter(({ x }) => Number(x[1]) === m.base_version)
      .sort((a, b) => (a.x[2] === b.x[2] ? 0 : a.x[2] === 'full' ? -1 : 1));
    if (!candidates.length) {
      throw new OutpostError('E_NOT_FOUND', `version ${m.version} of feed "${feed}" was a delta on version ${m.base_version}, and no package of version ${m.base_version} is kept; import a full package instead`);
    }
    file = path.join(dir, candidates[0].f);
  }
  throw new OutpostError('E_INTERNAL', 'delta chain does not end');
}

export async function rollbackFeed(cfg: Config, db: DB, feedName: string, opts: { actor?: string; now?: Date } = {}): Promise<RollbackResult> {
  const actor = opts.actor ?? 'cli';
  const feed = getFeed(db, feedName);
  try {
    if (!feed) throw new OutpostError('E_NOT_FOUND', `no feed "${feedName}" on this appliance`);
    if (feed.prev_version == null || !feed.prev_package) {
      throw new OutpostError('E_NOT_FOUND', `feed "${feedName}" has no previous version kept (only one package was ever applied)`);
    }
    if (feed.floor_version != null && feed.prev_version <= feed.floor_version) {
      throw new OutpostError('E_CONFLICT', `feed "${feedName}" was already rolled back from version ${feed.floor_version} to ${feed.version}; one step back is kept — import an older full package if you need to go further`);
    }
    const steps = await rollbackChain(cfg, feedName, feed.prev_package);
    let last: ImportResult | undefined;
    for (const step of steps) {
      last = await importPackage(cfg, db, step, { allowOlder: true, actor, source: `rollback:${step}`, now: opts.now });
    }
    const after = getFeed(db, feedName)!;
    const result: RollbackResult = {
      feed: feedName,
      from_version: feed.version,
      to_version: after.version,
      steps,
      generation: last?.generation ?? 0,
      total: after.count,
      floor_version: after.floor_version ?? feed.version,
    };
    audit(db, actor, 'feed.rollback', { subject: `${feedName}@${after.version}`, detail: { from: feed.version, to: after.version, floor: result.floor_version, steps: steps.map((s) => path.basename(s)) } });
    return result;
  } catch (e) {
    const err = asOutpostError(e);
    try {
      audit(db, actor, 'feed.rollback', { code: err.code, subject: feedName, detail: { message: err.message } });
    } catch {
      /* recording must never mask the refusal */
    }
    throw err;
  }
}
