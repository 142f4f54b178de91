#!/bin/sh
# deps.sh PKG...: installs the Debian packages that are missing (apt-get, with sudo when not
# root). A no-op that takes a few tens of milliseconds when everything is there.
missing=$(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' "$@" 2>/dev/null |
          awk '$2 == "ii" { ok[$1] = 1 } END { for (p in ok) print p }' |
          sort | comm -13 - "$(printf '%s\n' "$@" | sort -u > /tmp/nnlab-deps.$$ && echo /tmp/nnlab-deps.$$)")
rm -f /tmp/nnlab-deps.$$
[ -z "$missing" ] && exit 0
echo "deps: installing missing Debian packages:" $missing
SUDO=
[ "$(id -u)" -ne 0 ] && SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
# Refresh the package lists when they are missing or older than a day.
if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mtime -1 2>/dev/null | head -n 1)" ]; then
    $SUDO apt-get update -q || exit 1
fi
$SUDO apt-get install -y -q --no-install-recommends $missing || {
    echo "deps: apt-get install failed; install these by hand:" $missing >&2; exit 1; }
