// `outpost rollback --feed <name>`: return a feed to the version it had before its last applied package.
//
// Nothing is rebuilt from local rows: the kept package of the previous version (sync/kept.ts: every accepted
// package under <data dir>/packages/<feed>/<version>-<type>-<sha16>.tar, and retention never deletes the
// chains of the current and the previous version) goes through the same
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
import path from 'node:path';
import type { Config } from '../appliance/config.ts';
import type { DB } from '../appliance/db.ts';
import { audit } from '../appliance/db.ts';
import { OutpostError, asOutpostError } from '../appliance/errors.ts';
import { getFeed } from './apply.ts';
import { importPackage, type ImportResult } from './import.ts';
import { keptChain } from './kept.ts';

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
    const steps = await keptChain(cfg, feedName, feed.prev_package);
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
