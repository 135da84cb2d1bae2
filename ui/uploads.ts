// Packages uploaded through the console wait here between the dry run and the admin's confirmation:
// a private file (0600) in the data dir's staging folder, bound to the session that uploaded it.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as NodeWebStream } from 'node:stream/web';
import type { Manifest } from '../appliance/types.ts';

export interface PendingUpload {
  id: string;
  path: string;
  /** The name the browser sent — display only, never used as a path. */
  filename: string;
  size: number;
  sessionId: string;
  at: number;
  manifest: Manifest;
  sha256: string;
}

export class UploadStore {
  private pending = new Map<string, PendingUpload>();

  constructor(
    private readonly dir: string,
    private readonly ttlMs = 30 * 60_000,
  ) {}

  /** Writes the upload to a fresh private file; the caller verifies it and then calls `hold` or `remove`. */
  async save(file: File): Promise<{ id: string; path: string }> {
    fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    const id = crypto.randomBytes(16).toString('hex');
    const dest = path.join(this.dir, `console-upload-${id}.tar`);
    try {
      await pipeline(Readable.fromWeb(file.stream() as unknown as NodeWebStream), fs.createWriteStream(dest, { flags: 'wx', mode: 0o600 }));
    } catch (e) {
      fs.rmSync(dest, { force: true });
      throw e;
    }
    return { id, path: dest };
  }

  /** Keeps a verified upload for confirmation; a session holds at most one (a new upload replaces it). */
  hold(upload: PendingUpload): void {
    this.sweep();
    for (const p of this.pending.values()) if (p.sessionId === upload.sessionId) this.discard(p.id);
    this.pending.set(upload.id, upload);
  }

  /** The upload if it exists, is fresh and belongs to this session. */
  get(id: string, sessionId: string): PendingUpload | null {
    this.sweep();
    const p = this.pending.get(id);
    return p && p.sessionId === sessionId ? p : null;
  }

  /** Removes the upload from the pending set and hands it over; the caller deletes its file when done. */
  take(id: string, sessionId: string): PendingUpload | null {
    const p = this.get(id, sessionId);
    if (p) this.pending.delete(id);
    return p;
  }

  discard(id: string): void {
    const p = this.pending.get(id);
    this.pending.delete(id);
    if (p) fs.rmSync(p.path, { force: true });
  }

  remove(filePath: string): void {
    fs.rmSync(filePath, { force: true });
  }

  private sweep(now = Date.now()): void {
    for (const p of this.pending.values()) if (now - p.at > this.ttlMs) this.discard(p.id);
  }
}
