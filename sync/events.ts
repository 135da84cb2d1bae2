// Sync events for the platform push: importPackage (the main-thread side of every import, whatever the
// source: CLI, inbox, pull, rollback) announces packages applied and refused here. Listeners run after the
// outcome is decided and recorded; a listener's failure is swallowed so it can never change an import.
// In-process only: an `outpost import` run from a shell reaches listeners of that shell process, not serve.
import { EventEmitter } from 'node:events';

export interface SyncEvent {
  event: 'package.applied' | 'package.rejected';
  time: string;
  feed: string | null;
  version: number | null;
  type: string | null;
  source: string;
  actor: string;
  /** Stable E_* code for refusals. */
  code?: string;
  message?: string;
  added?: number;
  removed?: number;
  generation?: number;
}

export const syncEvents = new EventEmitter();
syncEvents.setMaxListeners(50);

export function emitSyncEvent(e: Omit<SyncEvent, 'time'>): void {
  try {
    syncEvents.emit('event', { time: new Date().toISOString(), ...e } satisfies SyncEvent);
  } catch {
    /* a push problem never reaches the import */
  }
}
