#!/bin/sh
# Installs the Debian packages lockproxy needs to build, test and run, when any is missing.
# Uses sudo when not root. Extra package names may be passed as arguments (make bench does).
set -eu
# tcl: tclsh runs Redis's own test suite (make conformance).
pkgs="cmake make gcc libc6-dev libuv1-dev libhiredis-dev libmicrohttpd-dev libjansson-dev zlib1g-dev pkg-config redis-server redis-tools perl python3-redis redis-sentinel haproxy tcl $*"
missing=""
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "lockproxy: installing:$missing" >&2
if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends $missing >/dev/null
