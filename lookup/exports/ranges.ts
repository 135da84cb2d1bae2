// IP ranges for exports: allowlisted networks and special-use space, as sorted merged intervals,
// so "is this address/network inside an allowed network" and "does it touch internal space" are
// binary searches rather than scans.
import ipaddr from 'ipaddr.js';
import { parseV4Prefix } from '../filters.ts';
import { parseV4 } from '../normalize.ts';

export interface IpRange {
  family: 4 | 6;
  start: bigint;
  end: bigint;
}

/** Parses an address or `net/prefix` into its inclusive range; null when unparsable. */
export function ipRange(value: string): IpRange | null {
  // The store's own form (strict dotted quad, decimal prefix) without ipaddr.js: every export reads every
  // stored address, and parsing them was a quarter of an export's CPU. Anything else takes the general path.
  const slash = value.indexOf('/');
  const n = parseV4(value, 0, slash < 0 ? value.length : slash);
  if (n >= 0) {
    const prefix = slash < 0 ? 32 : parseV4Prefix(value, slash + 1);
    if (prefix >= 0) {
      const host = 2 ** (32 - prefix);
      const start = n - (n % host);
      return { family: 4, start: BigInt(start), end: BigInt(start + host - 1) };
    }
  }
  try {
    let addr: ipaddr.IPv4 | ipaddr.IPv6;
    let prefix: number;
    if (value.includes('/')) {
      [addr, prefix] = ipaddr.parseCIDR(value);
    } else {
      addr = ipaddr.parse(value);
      prefix = addr.kind() === 'ipv4' ? 32 : 128;
    }
    const bits = addr.kind() === 'ipv4' ? 32 : 128;
    let n = 0n;
    for (const b of addr.toByteArray()) n = (n << 8n) | BigInt(b);
    const hostBits = BigInt(bits - prefix);
    const start = (n >> hostBits) << hostBits;
    const end = start | ((1n << hostBits) - 1n);
    return { family: bits === 32 ? 4 : 6, start, end };
  } catch {
    return null;
  }
}

/** A set of ranges, merged so that adjacent or overlapping networks act as one. */
export class RangeSet {
  private readonly sorted: Record<4 | 6, Array<[bigint, bigint]>> = { 4: [], 6: [] };
  private dirty = false;
  private pending: IpRange[] = [];

  add(r: IpRange): void {
    this.pending.push(r);
    this.dirty = true;
  }

  get size(): number {
    this.compact();
    return this.sorted[4].length + this.sorted[6].length;
  }

  private compact(): void {
    if (!this.dirty) return;
    for (const fam of [4, 6] as const) {
      const all = this.sorted[fam].concat(this.pending.filter((r) => r.family === fam).map((r) => [r.start, r.end] as [bigint, bigint]));
      all.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
      const merged: Array<[bigint, bigint]> = [];
      for (const [s, e] of all) {
        const last = merged[merged.length - 1];
        if (last && s <= last[1] + 1n) {
          if (e > last[1]) last[1] = e;
        } else merged.push([s, e]);
      }
      this.sorted[fam] = merged;
    }
    this.pending = [];
    this.dirty = false;
  }

  /** The merged interval with the greatest start ≤ x, if any. */
  private floor(fam: 4 | 6, x: bigint): [bigint, bigint] | undefined {
    this.compact();
    const arr = this.sorted[fam];
    let lo = 0;
    let hi = arr.length - 1;
    let found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (arr[mid][0] <= x) {
        found = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    return found >= 0 ? arr[found] : undefined;
  }

  /** True when the whole range lies inside the set. */
  contains(r: IpRange): boolean {
    const iv = this.floor(r.family, r.start);
    return !!iv && iv[1] >= r.end;
  }

  /** True when any part of the range lies inside the set (intervals are disjoint, so one probe suffices). */
  overlaps(r: IpRange): boolean {
    const iv = this.floor(r.family, r.end);
    return !!iv && iv[1] >= r.start;
  }
}

/**
 * Internal and non-routable space (RFC 6890 and friends). A feed that lists 10.0.0.0/8 (FireHOL
 * level1 does) would make every internal flow "malicious" in an IDS or resolver, so exports leave
 * such entries out and count them. Documentation ranges (TEST-NET) are deliberately not here.
 */
const SPECIAL_USE = [
  '0.0.0.0/8', '10.0.0.0/8', '100.64.0.0/10', '127.0.0.0/8', '169.254.0.0/16', '172.16.0.0/12',
  '192.0.0.0/24', '192.168.0.0/16', '198.18.0.0/15', '224.0.0.0/4', '240.0.0.0/4',
  '::/127', '::ffff:0:0/96', 'fc00::/7', 'fe80::/10', 'ff00::/8',
];

export const specialUse: RangeSet = (() => {
  const set = new RangeSet();
  for (const net of SPECIAL_USE) set.add(ipRange(net)!);
  return set;
})();
