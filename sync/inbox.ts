// Offline inbox: packages dropped into <data dir>/inbox/ (from removable media, scp, a data diode) are
// verified and applied exactly like `outpost import`, then moved to inbox/accepted/ or inbox/rejected/
// next to a `<name>.result.json` sidecar holding the stable code and message.
//
// - Discovery: fs.watch on the folder plus a periodic scan (watch events are lost on some filesystems
//   and network mounts). Only regular `*.tar` files directly in the folder; dot-files are ignored.
// - A file is taken once its size and mtime stayed unchanged for `stableMs` (copies from slow media).
// - Taking = copying into inbox/.processing/ (0700, a new inode no outside writer holds open) and then
//   removing the original, so what is verified is what gets applied and kept. A file left in .processing
//   by a crash is processed again at start; if that exact package was applied before the crash it is
//   reported as accepted rather than refused as a replay.
// - One package at a time; each decision writes an audit row (inbox.accept / inbox.reject) and a pino line.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { Config } from '../appliance/config.ts';
import type { DB } from '../appliance/db.ts';
import { audit, layout } from '../appliance/db.ts';
import { OutpostError, asOutpostError } from '../appliance/errors.ts';
import type { Logger } from '../appliance/log.ts';
import { importPackage, type ImportResult } from './import.ts';

export interface InboxResult {
  file: string;
  ok: boolean;
  code: string | null;
  message: string;
  feed?: string;
  version?: number;
  type?: 'full' | 'delta';
  generation?: number;
  sha256?: string;
  /** Where the package was moved. */
  moved_to: string;
  at: string;
}

export interface InboxOptions {
  scanMs?: number;
  stableMs?: number;
  /** Called after each decision (tests, console). */
  onResult?: (r: InboxResult) => void;
}

export function inboxPaths(dataDir: string) {
  const inbox = layout(dataDir).inbox;
  return { inbox, accepted: path.join(inbox, 'accepted'), rejected: path.join(inbox, 'rejected'), processing: path.join(inbox, '.processing') };
}

function sha256File(file: string): string {
  const h = crypto.createHash('sha256');
  const fd = fs.openSync(file, 'r');
  try {
    const buf = Buffer.allocUnsafe(1 << 20);
    for (let n; (n = fs.readSync(fd, buf, 0, buf.length, null)) > 0; ) h.update(buf.subarray(0, n));
  } finally {
    fs.closeSync(fd);
  }
  return h.digest('hex');
}

/** `dir/name`, or `dir/<stem>-<n>.tar` when a file of that name is already there (never overwrites). */
function freeName(dir: string, name: string): string {
  let dest = path.join(dir, name);
  for (let i = 1; fs.existsSync(dest) || fs.existsSync(`${dest}.result.json`); i++) {
    dest = path.join(dir, `${name.replace(/\.tar$/, '')}-${i}.tar`);
  }
  return dest;
}

export class InboxWatcher {
  private readonly paths: ReturnType<typeof inboxPaths>;
  private readonly scanMs: number;
  private readonly stableMs: number;
  private watcher: fs.FSWatcher | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly seen = new Map<string, { size: number; mtimeMs: number; since: number }>();
  private chain: Promise<void> = Promise.resolve();
  private busy = false;
  private stopped = false;

  constructor(private readonly cfg: Config, private readonly db: DB, private readonly log: Logger, private readonly opts: InboxOptions = {}) {
    this.paths = inboxPaths(cfg.dataDir);
    this.scanMs = opts.scanMs ?? cfg.inboxScanMs ?? 2000;
    this.stableMs = opts.stableMs ?? cfg.inboxStableMs ?? 1000;
  }

  start(): void {
    for (const d of [this.paths.inbox, this.paths.accepted, this.paths.rejected]) fs.mkdirSync(d, { recursive: true, mode: 0o750 });
    fs.mkdirSync(this.paths.processing, { recursive: true, mode: 0o700 });
    // Left over from a crash: processed first, before anything new.
    for (const name of fs.readdirSync(this.paths.processing).sort()) {
      if (name.endsWith('.tar')) this.enqueue(path.join(this.paths.processing, name), name, true);
      else fs.rmSync(path.join(this.paths.processing, name), { force: true, recursive: true });
    }
    try {
      this.watcher = fs.watch(this.paths.inbox, { persistent: false }, () => this.scan());
      this.watcher.on('error', (err) => this.log.warn({ err }, 'inbox watch failed; periodic scan continues'));
    } catch (err) {
      this.log.warn({ err }, 'inbox cannot be watched; periodic scan only');
    }
    this.timer = setInterval(() => this.scan(), this.scanMs);
    this.timer.unref();
    this.scan();
    this.log.info({ inbox: this.paths.inbox, scan_ms: this.scanMs, stable_ms: this.stableMs }, 'inbox watching');
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.watcher?.close();
    if (this.timer) clearInterval(this.timer);
    await this.chain;
  }

  /** Finishes whatever is queued (tests). */
  idle(): Promise<void> {
    return this.chain;
  }

  /** Notes sizes; files unchanged for stableMs are taken. A re-check timer covers files still being written. */
  scan(): void {
    if (this.stopped) return;
    let names: string[];
    try {
      names = fs.readdirSync(this.paths.inbox);
    } catch (err) {
      this.log.warn({ err }, 'inbox unreadable');
      return;
    }
    const now = Date.now();
    const present = new Set<string>();
    let waiting = false;
    for (const name of names) {
      if (name.startsWith('.') || !name.endsWith('.tar')) continue;
      const file = path.join(this.paths.inbox, name);
      let st: fs.Stats;
      try {
        st = fs.lstatSync(file);
      } catch {
        continue; // gone meanwhile
      }
      present.add(name);
      const prev = this.seen.get(name);
      if (!prev || prev.size !== st.size || prev.mtimeMs !== st.mtimeMs) {
        this.seen.set(name, { size: st.size, mtimeMs: st.mtimeMs, since: now });
        waiting = true;
        continue;
      }
      if (prev.since < 0) continue; // queued already
      if (now - prev.since < this.stableMs) {
        waiting = true;
        continue;
      }
      prev.since = -1;
      this.enqueue(file, name, false);
    }
    for (const name of this.seen.keys()) if (!present.has(name)) this.seen.delete(name);
    if (waiting) setTimeout(() => this.scan(), Math.max(100, Math.floor(this.stableMs / 2))).unref();
  }

  private enqueue(file: string, name: string, recovered: boolean): void {
    this.chain = this.chain.then(() => this.processFile(file, name, recovered)).catch((err: unknown) => this.log.error({ err, file }, 'inbox processing failed'));
  }

  /** Takes one file (from the inbox, or `recovered` from .processing), applies it and files it away. */
  async processFile(file: string, name: string, recovered: boolean): Promise<void> {
    if (this.stopped && !recovered) return;
    let work = file;
    let result: InboxResult;
    try {
      if (!recovered) {
        const st = fs.lstatSync(file);
        work = freeName(this.paths.processing, name);
        if (!st.isFile()) {
          // A symlink or device is never followed: it is moved aside as it is and refused.
          fs.renameSync(file, work);
          throw new OutpostError('E_FORMAT', `${name} is not a regular file`);
        }
        fs.copyFileSync(file, work, fs.constants.COPYFILE_EXCL);
        fs.chmodSync(work, 0o600);
        fs.rmSync(file, { force: true });
        this.seen.delete(name);
      }
      result = await this.apply(work, name, recovered);
    } catch (e) {
      const err = asOutpostError(e);
      result = { file: name, ok: false, code: err.code, message: err.message, moved_to: '', at: new Date().toISOString() };
    }
    this.finish(work, name, result);
  }

  private async apply(work: string, name: string, recovered: boolean): Promise<InboxResult> {
    const at = () => new Date().toISOString();
    if (recovered) {
      // Crash after COMMIT but before the move: the package is in the store already.
      const sha = sha256File(work);
      const row = this.db.prepare("SELECT feed, version, type FROM packages WHERE sha256 = ? AND status = 'accepted' ORDER BY id DESC LIMIT 1").get(sha) as { feed: string; version: number; type: 'full' | 'delta' } | undefined;
      if (row) return { file: name, ok: true, code: null, message: 'applied before a restart', feed: row.feed, version: row.version, type: row.type, sha256: sha, moved_to: '', at: at() };
    }
    try {
      const r: ImportResult = await importPackage(this.cfg, this.db, work, { source: `inbox:${name}`, actor: 'inbox' });
      return { file: name, ok: true, code: null, message: `applied as generation ${r.generation}`, feed: r.feed, version: r.version, type: r.type, generation: r.generation, sha256: r.sha256, moved_to: '', at: at() };
    } catch (e) {
      const err = asOutpostError(e);
      return { file: name, ok: false, code: err.code, message: err.message, moved_to: '', at: at() };
    }
  }

  /** Moves the package out of .processing with its sidecar, then audits and logs the decision. */
  private finish(work: string, name: string, result: InboxResult): void {
    const dir = result.ok ? this.paths.accepted : this.paths.rejected;
    try {
      const dest = freeName(dir, name);
      result.moved_to = path.relative(this.paths.inbox, dest);
      // Sidecar first: a package in accepted/ or rejected/ always has its reason beside it.
      fs.writeFileSync(`${dest}.result.json`, JSON.stringify(result, null, 2) + '\n', { mode: 0o640 });
      if (fs.lstatSync(work, { throwIfNoEntry: false })) fs.renameSync(work, dest);
    } catch (err) {
      this.log.error({ err, file: name }, 'inbox could not move a processed package');
    }
    try {
      audit(this.db, 'inbox', result.ok ? 'inbox.accept' : 'inbox.reject', {
        code: result.code, subject: result.feed ? `${result.feed}@${result.version}` : name,
        detail: { file: name, moved_to: result.moved_to, message: result.message, sha256: result.sha256 },
      });
    } catch (err) {
      this.log.error({ err }, 'inbox audit failed');
    }
    const line = { file: name, code: result.code, feed: result.feed, version: result.version, moved_to: result.moved_to };
    if (result.ok) this.log.info(line, 'inbox package accepted');
    else this.log.warn({ ...line, reason: result.message }, 'inbox package rejected');
    this.opts.onResult?.(result);
  }
}

/** `outpost inbox` without serve: processes what is in the inbox now (no stability wait) and returns. */
export async function processInboxOnce(cfg: Config, db: DB, log: Logger): Promise<InboxResult[]> {
  const results: InboxResult[] = [];
  const w = new InboxWatcher(cfg, db, log, { stableMs: 0, scanMs: 3_600_000, onResult: (r) => results.push(r) });
  const p = inboxPaths(cfg.dataDir);
  for (const d of [p.inbox, p.accepted, p.rejected]) fs.mkdirSync(d, { recursive: true, mode: 0o750 });
  fs.mkdirSync(p.processing, { recursive: true, mode: 0o700 });
  const names = fs.readdirSync(p.processing).filter((n) => n.endsWith('.tar')).sort();
  for (const n of names) await w.processFile(path.join(p.processing, n), n, true);
  for (const n of fs.readdirSync(p.inbox).filter((x) => !x.startsWith('.') && x.endsWith('.tar')).sort()) {
    await w.processFile(path.join(p.inbox, n), n, false);
  }
  return results;
}
