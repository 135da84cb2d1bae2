#!/usr/bin/env bash
# Installs the real consumers that the integration tests drive: Suricata 7 (from bookworm-backports),
# unbound, dig and rsyslog (the SIEM push receiver in test/push.test.ts). Idempotent and noninteractive; returns at once when everything is already present.
set -euo pipefail

have_suricata7() { command -v suricata >/dev/null 2>&1 && suricata -V 2>/dev/null | grep -Eq 'version ([7-9]|[1-9][0-9])\.'; }
have_unbound() { command -v unbound >/dev/null 2>&1 || [ -x /usr/sbin/unbound ]; }
have_dig() { command -v dig >/dev/null 2>&1; }
have_rsyslog() { command -v rsyslogd >/dev/null 2>&1 || [ -x /usr/sbin/rsyslogd ]; }

if have_suricata7 && have_unbound && have_dig && have_rsyslog; then
  echo "install-consumers: suricata 7, unbound, dig and rsyslog already installed"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
    echo "install-consumers: need root (or sudo) to apt-get install suricata unbound dnsutils" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive

# Suricata 7 is only in bookworm-backports on Debian 12; add that source once.
BACKPORTS=/etc/apt/sources.list.d/bookworm-backports.sources
if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  $SUDO tee "$BACKPORTS" >/dev/null <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi

# Package scripts must not start system-wide daemons (port 53, /var/log/suricata) on a CI machine:
# a policy-rc.d that denies service starts, removed again when we leave (only if we created it).
POLICY=/usr/sbin/policy-rc.d
if [ ! -e "$POLICY" ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
  $SUDO chmod 755 "$POLICY"
  trap '$SUDO rm -f "$POLICY"' EXIT
fi

APT_OPTS=(-y -q --no-install-recommends -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
$SUDO apt-get update -q
if ! have_suricata7; then
  $SUDO apt-get install "${APT_OPTS[@]}" -t bookworm-backports suricata
fi
pkgs=()
have_unbound || pkgs+=(unbound)
have_dig || pkgs+=(dnsutils)
have_rsyslog || pkgs+=(rsyslog)
if [ "${#pkgs[@]}" -gt 0 ]; then
  $SUDO apt-get install "${APT_OPTS[@]}" "${pkgs[@]}"
fi

# The Debian packages enable their services; the tests start their own instances on loopback.
for svc in suricata unbound rsyslog; do
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || true
  fi
done

have_suricata7 || { echo "install-consumers: suricata 7 not found after install" >&2; exit 1; }
have_unbound || { echo "install-consumers: unbound not found after install" >&2; exit 1; }
have_dig || { echo "install-consumers: dig not found after install" >&2; exit 1; }
have_rsyslog || { echo "install-consumers: rsyslogd not found after install" >&2; exit 1; }
echo "install-consumers: $(suricata -V 2>/dev/null | head -1); $(/usr/sbin/unbound -V 2>/dev/null | head -1)"
