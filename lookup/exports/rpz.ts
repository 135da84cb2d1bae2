// DNS Response Policy Zone: listed names (and their subdomains) rewritten to NXDOMAIN or a
// walled-garden CNAME; allowlisted names published as rpz-passthru so they beat any wildcard above
// them (and any later RPZ zone). Optional IP triggers rewrite answers that point at listed addresses.
import { domainToASCII } from 'node:url';
import ipaddr from 'ipaddr.js';
import { OutpostError } from '../../appliance/errors.ts';
import { allowedValues, chunked, skip, type SourceContext } from './source.ts';
import type { RowFile } from './pass.ts';

export type RpzPolicy = 'nxdomain' | { cname: string };

/** Longest listed name accepted: `*.` + name + `.` + a zone name of up to 60 octets stays ≤ 255 on the wire. */
export const MAX_RPZ_NAME = 190;
const LABEL = /^[a-z0-9_-]{1,63}$/;

/**
 * A zone-file-safe owner name or null. DNS (RFC 2181) allows any octet in a label; we accept the
 * LDH set plus `_` (real names use it; a leading/trailing hyphen occurs in real data too), after
 * IDN → punycode, so nothing needs escaping and every consumer parses it.
 */
export function rpzName(value: string): string | null {
  let name = value.toLowerCase().replace(/\.$/, '');
  if (/[^\x00-\x7f]/.test(name)) name = domainToASCII(name);
  if (!name || name.length > MAX_RPZ_NAME) return null;
  return name.split('.').every((l) => LABEL.test(l)) ? name : null;
}

export function policyTarget(policy: RpzPolicy | undefined): string {
  if (!policy || policy === 'nxdomain') return '.';
  const name = rpzName(policy.cname ?? '');
  if (!name || !name.includes('.')) throw new OutpostError('E_INPUT', `walled-garden CNAME target is not a valid DNS name: ${policy.cname}`);
  return name + '.';
}

/** RPZ IP trigger owner: prefix then the address reversed (IPv6 as 16-bit groups, longest zero run as `zz`). */
export function rpzIpOwner(value: string): string | null {
  try {
    const [addr, prefix] = value.includes('/') ? ipaddr.parseCIDR(value) : [ipaddr.parse(value), value.includes(':') ? 128 : 32];
    if (addr.kind() === 'ipv4') return `${prefix}.${(addr as ipaddr.IPv4).octets.slice().reverse().join('.')}.rpz-ip`;
    const groups = (addr as ipaddr.IPv6).parts.map((p) => p.toString(16));
    let best = { at: -1, len: 0 };
    for (let i = 0; i < 8; ) {
      if (groups[i] !== '0') { i++; continue; }
      let j = i;
      while (j < 8 && groups[j] === '0') j++;
      if (j - i > best.len && j - i >= 2) best = { at: i, len: j - i };
      i = j;
    }
    const labels = best.at >= 0 ? [...groups.slice(0, best.at), 'zz', ...groups.slice(best.at + best.len)] : groups;
    return `${prefix}.${labels.reverse().join('.')}.rpz-ip`;
  } catch {
    return null;
  }
}

export interface RpzOptions {
  now: number;
  policy?: RpzPolicy;
  ipTriggers?: boolean;
}

const IP_TYPES = ['ipv4', 'ipv6', 'ipv4-cidr', 'ipv6-cidr'] as const;

/**
 * The zone: SOA and NS, a name and a wildcard record per listed domain, with IP triggers a record per
 * listed address or network (before the names, in the rows' type order), then passthru records for the
 * allowlisted names, which `ctx` is read for at the end.
 */
export function rpzFile(ctx: SourceContext, opts: RpzOptions): RowFile {
  const target = policyTarget(opts.policy);
  const serial = Math.max(1, Math.floor(opts.now) >>> 0);
  return {
    name: 'outpost.rpz',
    types: opts.ipTriggers ? ['domain', ...IP_TYPES] : ['domain'],
    head: `$TTL 300\n@ 3600 IN SOA localhost. hostmaster.localhost. ${serial} 3600 600 86400 300\n@ 3600 IN NS localhost.\n` +
      `; Outpost response policy zone; policy ${target === '.' ? 'NXDOMAIN' : `CNAME ${target}`}` +
      `${opts.ipTriggers ? '; response IP triggers for listed addresses and networks' : ''}\n`,
    line(r, stats) {
      if (r.type !== 'domain') {
        const owner = rpzIpOwner(r.value);
        if (owner) return `${owner} CNAME ${target}\n`;
        skip(stats, 'rpz-invalid-ip');
        return null;
      }
      const name = rpzName(r.value);
      if (name) return `${name} CNAME ${target}\n*.${name} CNAME ${target}\n`;
      skip(stats, 'rpz-invalid-name');
      return null;
    },
    *tail(stats) {
      function* passthru() {
        yield '; allowlisted names: passthru wins over wildcards above them\n';
        for (const value of allowedValues(ctx, 'domain')) {
          const name = rpzName(value);
          if (!name) {
            skip(stats, 'rpz-invalid-name');
            continue;
          }
          yield `${name} CNAME rpz-passthru.\n*.${name} CNAME rpz-passthru.\n`;
        }
      }
      yield* chunked(passthru());
      yield `; skipped invalid names: ${stats.skipped['rpz-invalid-name'] ?? 0}\n`;
    },
  };
}
