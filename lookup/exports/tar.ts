// Minimal ustar writer for the Suricata file set, streamed as string chunks. A tar header needs
// each member's size up front, so members are first written to a private temp dir, then streamed.
// Every member is ASCII (base64, hex, addresses, escaped rules), so a string chunk is its bytes.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { OutpostError } from '../../appliance/errors.ts';

export interface TarMember {
  name: string;
  chunks: () => Iterable<string>;
}

function octal(n: number, width: number): string {
  return n.toString(8).padStart(width - 1, '0') + '\0';
}

export function tarHeader(name: string, size: number, mtime: number): string {
  if (name.length > 100 || /[^\x21-\x7e]/.test(name)) throw new OutpostError('E_INTERNAL', `bad tar member name ${name}`);
  const fields = [
    name.padEnd(100, '\0'),
    octal(0o644, 8),
    octal(0, 8),
    octal(0, 8),
    octal(size, 12),
    octal(Math.floor(mtime), 12),
    '        ', // checksum placeholder: eight spaces while summing
    '0',
    ''.padEnd(100, '\0'),
    'ustar\0',
    '00',
    'outpost'.padEnd(32, '\0'),
    'outpost'.padEnd(32, '\0'),
    ''.padEnd(8, '\0'),
    ''.padEnd(8, '\0'),
    ''.padEnd(155, '\0'),
    ''.padEnd(12, '\0'),
  ];
  let header = fields.join('');
  let sum = 0;
  for (let i = 0; i < header.length; i++) sum += header.charCodeAt(i);
  header = header.slice(0, 148) + sum.toString(8).padStart(6, '0') + '\0 ' + header.slice(156);
  return header;
}

export function* tarStream(members: TarMember[], mtime: number): Generator<string> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'outpost-export-'));
  try {
    for (const m of members) {
      const fd = fs.openSync(path.join(dir, m.name), 'w', 0o600);
      try {
        for (const chunk of m.chunks()) fs.writeSync(fd, chunk);
      } finally {
        fs.closeSync(fd);
      }
    }
    const buf = Buffer.alloc(65_536);
    for (const m of members) {
      const file = path.join(dir, m.name);
      const size = fs.statSync(file).size;
      yield tarHeader(m.name, size, mtime);
      const fd = fs.openSync(file, 'r');
      try {
        let n: number;
        while ((n = fs.readSync(fd, buf, 0, buf.length, null)) > 0) {
          const part = buf.subarray(0, n);
          if (part.some((b) => b > 0x7f)) throw new OutpostError('E_INTERNAL', `non-ASCII byte in ${m.name}`);
          yield part.toString('latin1');
        }
      } finally {
        fs.closeSync(fd);
      }
      if (size % 512) yield '\0'.repeat(512 - (size % 512));
    }
    yield '\0'.repeat(1024);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
