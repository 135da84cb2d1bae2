// Sync events for the platform push (lookup/push.ts): packages applied and refused, read from the audit
// log. Whoever imports — `serve` (inbox, pulls, console, rollback) or an `outpost import` run from a shell
// in another process — writes its `package.apply` / `package.reject` audit row in the store; the follower
// here, run by `serve`, turns audit rows past a cursor into events and hands them to the push sinks in the
// same transaction that advances the cursor (meta `push.audit_cursor`). So every event is queued exactly
// once, whichever process produced it, and none is lost across restarts: rows written while serve was
// down are picked up at its next start. With no cursor yet (push configured for the first time) the
// follower starts at the newest audit row: history is not replayed.
import type { AuditRow, DB } from '../appliance/db.ts';
import { getMeta, setMeta } from '../appliance/db.ts';
import type { Logger } from '../appliance/log.ts';

export type SyncEventKind = 'package.applied' | 'package.rejected';

export interface SyncEvent {
  event: SyncEventKind;
  /** When the audit row was written. */
  time: string;
  /** The audit row's id: stable per event, lets a receiver drop the duplicates at-least-once delivery can bring. */
  audit_id: number;
  feed: string | null;
  version: number | null;
  type: string | null;
  source: string | null;
  actor: string;
  /** Stable E_* code for refusals. */
  code?: string;
  message?: string;
  added?: number;
  removed?: number;
  generation?: number;
}

export const AUDIT_CURSOR_KEY = 'push.audit_cursor';

/** Audit actions that are sync events, and the event each becomes. */
const ACTIONS: Record<string, SyncEventKind> = { 'package.apply': 'package.applied', 'package.reject': 'package.rejected' };

const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);
const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);

/** One audit row as a sync event (null for other actions). */
export function auditToEvent(row: AuditRow): SyncEvent | null {
  const kind = ACTIONS[row.action];
  if (!kind) return null;
  let d: Record<string, unknown> = {};
  try {
    d = row.detail ? (JSON.parse(row.detail) as Record<string, unknown>) : {};
  } catch {
    /* a damaged detail still yields the event */
  }
  // package.apply: subject "<feed>@<version>"; package.reject: feed/version/type in detail when the
  // manifest was read, else the subject is the file name.
  const at = row.subject?.lastIndexOf('@') ?? -1;
  const fromSubject = kind === 'package.applied' && row.subject && at > 0 ? { feed: row.subject.slice(0, at), version: Number(row.subject.slice(at + 1)) } : null;
  const e: SyncEvent = {
    event: kind,
    time: row.ts,
    audit_id: row.id,
    feed: fromSubject?.feed ?? str(d.feed) ?? null,
    version: num(fromSubject?.version) ?? num(d.version) ?? null,
    type: str(d.type) ?? null,
    source: str(d.source) ?? null,
    actor: row.actor,
  };
  if (kind === 'package.rejected') {
    e.code = row.code ?? 'E_INTERNAL';
    if (str(d.message)) e.message = str(d.message);
  } else {
    for (const k of ['added', 'removed', 'generation'] as const) if (num(d[k]) !== undefined) e[k] = num(d[k]);
  }
  return e;
}

export interface FollowerOptions {
  /** Poll interval, ms (default 1000). */
  intervalMs?: number;
  /** Most audit rows turned into events per transaction (default 1000). */
  batch?: number;
  log?: Logger;
}

/**
 * Follows the audit table. `deliver` runs inside the transaction that advances the cursor, so it must
 * only write (PushQueue.insert) and must not wait; `after` runs once that transaction committed.
 * Use a connection with busy_timeout 0: while an apply holds the write lock, a poll is skipped, never waited for.
 */
export class SyncEventFollower {
  private cursor: number;
  private timer: NodeJS.Timeout | null = null;
  private readonly batch: number;

  constructor(
    private readonly db: DB,
    private readonly deliver: (events: SyncEvent[]) => void,
    private readonly after: () => void = () => undefined,
    private readonly opts: FollowerOptions = {},
  ) {
    this.batch = opts.batch ?? 1000;
    const saved = getMeta(db, AUDIT_CURSOR_KEY);
    if (saved !== undefined) this.cursor = Number(saved);
    else {
      this.cursor = this.maxId();
      try {
        setMeta(db, AUDIT_CURSOR_KEY, String(this.cursor));
      } catch {
        /* written with the first events */
      }
    }
  }

  start(): this {
    this.poll();
    this.timer = setInterval(() => this.poll(), this.opts.intervalMs ?? 1000);
    this.timer.unref();
    return this;
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /** One round: queues the events of new audit rows. Returns how many events were queued. */
  poll(): number {
    let queued = 0;
    try {
      for (;;) {
        if (this.maxId() <= this.cursor) break; // cheap read first: the write lock is only taken for new rows
        const { events, cursor } = this.db.transaction(() => {
          const max = this.maxId(); // stable inside the transaction: no writer can add rows meanwhile
          const rows = this.db
            .prepare(`SELECT id, ts, actor, action, code, subject, detail FROM audit WHERE id > ? AND id <= ? AND action IN (${Object.keys(ACTIONS).map(() => '?').join(',')}) ORDER BY id LIMIT ?`)
            .all(this.cursor, max, ...Object.keys(ACTIONS), this.batch) as AuditRow[];
          const next = rows.length === this.batch ? rows[rows.length - 1].id : max;
          const evs = rows.map(auditToEvent).filter((e): e is SyncEvent => e !== null);
          if (evs.length) this.deliver(evs);
          setMeta(this.db, AUDIT_CURSOR_KEY, String(next));
          return { events: evs, cursor: next };
        }).immediate();
        this.cursor = cursor;
        queued += events.length;
      }
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code !== 'SQLITE_BUSY' && code !== 'SQLITE_LOCKED') this.opts.log?.warn({ err: (err as Error).message }, 'push: could not read sync events from the audit log');
    }
    if (queued) this.after();
    return queued;
  }

  private maxId(): number {
    return (this.db.prepare('SELECT coalesce(max(id), 0) AS m FROM audit').get() as { m: number }).m;
  }
}
