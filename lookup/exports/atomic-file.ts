// Export files are replaced whole: written to a temp file in the same dir, synced, renamed into place, so a
// consumer never reads half a file. Temp names carry `.tmp-<pid>-<hex>` (index.ts removes a stopped run's).
//
// The writes are synchronous: exports are written by a worker thread of their own (worker.ts), pinned to
// one core at the idle scheduling class, and a synchronous write does its copy in that thread. An
// asynchronous one would hand it to libuv's thread pool, which runs at the normal class on any core, and
// leave the export thread idle while it waits (17 % of a 1M-indicator export's time).
import fs from 'node:fs';
import { randomBytes } from 'node:crypto';

/** An AtomicFile's temp name: `<file>.tmp-<pid>-<8 hex>`. */
function tempName(file: string): string {
  return `${file}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
}

/** Whether a file name is an AtomicFile's temp file (a run under way, or one stopped before its rename). */
export function isTempFile(name: string): boolean {
  return /\.tmp-\d+-[0-9a-f]{8}$/.test(name);
}

/** Bytes buffered before a write (as UTF-16 code units; the file gets them as UTF-8). */
const BUFFER = 32 * 1024;

/**
 * A file written through a temp file in the same dir and renamed into place by `commit`, so readers never
 * see half a file; `write` buffers ~32 KiB per system call (larger buffers cost more: 64 KiB +5 %, 256 KiB +20 % CPU over all the sets of a 1M-indicator store, in string building and collection). `abort` removes the temp file.
 */
export class AtomicFile {
  private buf = '';
  private fd: number | null;
  readonly tmp: string;

  constructor(readonly file: string) {
    this.tmp = tempName(file);
    this.fd = fs.openSync(this.tmp, 'w', 0o644);
  }

  write(s: string): void {
    this.buf += s;
    if (this.buf.length >= BUFFER) this.flush();
  }

  private flush(): void {
    if (!this.buf) return;
    const b = Buffer.from(this.buf, 'utf8');
    this.buf = '';
    let off = 0;
    while (off < b.length) off += fs.writeSync(this.fd!, b, off);
  }

  commit(): void {
    this.flush();
    fs.fsyncSync(this.fd!);
    fs.closeSync(this.fd!);
    this.fd = null;
    fs.renameSync(this.tmp, this.file);
  }

  abort(): void {
    if (this.fd !== null) {
      try {
        fs.closeSync(this.fd);
      } catch {
        /* already closed */
      }
      this.fd = null;
    }
    fs.rmSync(this.tmp, { force: true });
  }
}

/**
 * Writes chunks to `file` via a temp file in the same dir and a rename, so readers never see half a file.
 * Between chunks of an asynchronous source the event loop runs on.
 */
export async function writeAtomic(file: string, chunks: Iterable<string> | AsyncIterable<string>): Promise<void> {
  const out = new AtomicFile(file);
  try {
    for await (const chunk of chunks) out.write(chunk);
    out.commit();
  } catch (e) {
    out.abort();
    throw e;
  }
}
