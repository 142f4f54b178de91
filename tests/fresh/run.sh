#!/bin/sh
# run.sh: the README's two commands on a fresh machine. Builds a minimal Debian 12 with debootstrap
# in a temporary folder, puts a clean copy of HEAD (git archive) at work/main and a copy of
# ../shared beside it, then runs `make test` and `make run EPOCHS=1` inside it (chroot), each once,
# as a new user would: as root, in a clean environment (no DISPLAY, no locale, a HOME without
# history, /tmp on tmpfs). Prints each command's exit status and time; exits non-zero when either
# fails. Needs root, debootstrap and Debian's archive; not part of `make test` (10-20 minutes).
# The new system has no sudo (root needs none, and the deps step must not ask for it), no python3
# and no locale until the deps step installs what the project needs.
#   sh tests/fresh/run.sh            MIRROR=URL overrides the archive (default: this machine's)
#   KEEP=1 sh tests/fresh/run.sh     keeps the folder for a look afterwards (mounts are undone)
set -u
cd "$(dirname "$0")/../.." || exit 1
repo=$(pwd)
suite=bookworm

fail() { echo "fresh: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || fail "needs root (debootstrap and chroot)"
command -v debootstrap >/dev/null || fail "needs debootstrap (apt-get install debootstrap)"
git rev-parse --verify -q HEAD >/dev/null || fail "$repo is not a git checkout with a commit"
[ -d ../shared ] || echo "fresh: no ../shared beside the checkout; the copy will have none"

# The archive this machine's apt uses (deb822 or one-line sources), else debootstrap's default.
if [ -z "${MIRROR:-}" ]; then
    MIRROR=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null |
             awk '/^URIs:/ && $2 !~ /security/ { print $2; exit }')
    [ -n "$MIRROR" ] || MIRROR=$(awk '$1 == "deb" && $2 !~ /security/ && $3 == "'$suite'" { print $2; exit }' \
                                 /etc/apt/sources.list 2>/dev/null)
fi

root=$(mktemp -d "${FRESH_DIR:-/var/tmp}/nnlab-fresh.XXXXXX") || fail "cannot create a temporary folder"
# Undoes every mount under $root (ours, and any that an interrupted debootstrap left), deepest
# first, then deletes the folder; runs on every exit path.
cleanup() {
    trap - EXIT INT TERM HUP
    for m in $(awk -v r="$root/" 'index($2, r) == 1 { print $2 }' /proc/self/mounts | sort -r); do
        umount -R "$m" 2>/dev/null || umount -R -l "$m" 2>/dev/null || echo "fresh: cannot unmount $m" >&2
    done
    rm -f "$root.debootstrap.log"
    # Never delete through a mount that is still there.
    if awk -v r="$root/" 'index($2, r) == 1 { found = 1 } END { exit !found }' /proc/self/mounts; then
        echo "fresh: mounts remain under $root; not deleting it" >&2
    elif [ "${KEEP:-0}" = 1 ]; then
        echo "fresh: kept $root"
    else
        rm -rf --one-file-system "$root"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
mnt() { # mnt DIR MOUNT-ARGS...: mounts on $root/DIR.
    d=$root/$1; shift
    mkdir -p "$d" && mount "$@" "$d" || fail "mount $* $d failed"
}
elapsed() { awk "BEGIN { printf \"%.0f\", $(date +%s.%N) - $1 }"; }

echo "fresh: debootstrap --variant=minbase $suite into $root ${MIRROR:+from $MIRROR}"
t0=$(date +%s.%N)
debootstrap --variant=minbase --include=ca-certificates,git,make "$suite" "$root" ${MIRROR:+"$MIRROR"} \
    > "$root.debootstrap.log" 2>&1 || { tail -n 20 "$root.debootstrap.log"; fail "debootstrap failed"; }
echo "fresh: debootstrap done ($(elapsed "$t0") s)"

mkdir -p "$root/work/main" || fail "cannot create $root/work/main"
git archive --format=tar HEAD | tar -x -C "$root/work/main" || fail "git archive HEAD failed"
[ -d ../shared ] && { cp -a ../shared "$root/work/shared" || fail "cannot copy ../shared"; }
cp -L /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null
# The network as this machine sees it: its name servers (above) and the certificate authorities it
# added locally (a network whose HTTPS goes through a proxy with its own CA needs them for npm's
# registry; on an open network there are none to copy).
if ls /usr/local/share/ca-certificates/*.crt > /dev/null 2>&1; then
    mkdir -p "$root/usr/local/share/ca-certificates" &&
        cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/" &&
        chroot "$root" update-ca-certificates > /dev/null 2>&1 &&
        echo "fresh: this machine's local certificate authorities added: $(cd /usr/local/share/ca-certificates && ls *.crt | tr '\n' ' ')"
fi
mnt proc -t proc proc
mnt sys -t sysfs sysfs
mnt dev --rbind /dev
mount --make-rslave "$root/dev"
mnt tmp -t tmpfs -o mode=1777,size=4g tmpfs

# A root login's environment and nothing more, plus the OpenBLAS variables that describe this machine
# (some hosts need them); no DISPLAY, LANG or TERM.
blas_env=$(env | grep -E '^OPENBLAS_(CORETYPE|L2_SIZE)=' | tr '\n' ' ')
[ -z "$blas_env" ] || echo "fresh: passing this machine's $blas_env"
login_shell=$(awk -F: '$1 == "root" { print $7 }' "$root/etc/passwd")
inside() { # inside COMMAND: runs a shell command in /work/main of the new system.
    chroot "$root" /usr/bin/env -i HOME=/root USER=root LOGNAME=root SHELL="${login_shell:-/bin/sh}" \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin $blas_env \
        /bin/sh -c "cd /work/main && $1" < /dev/null
}
echo "fresh: the new system has: python3 $(inside 'command -v python3 || echo none'), sudo $(inside 'command -v sudo || echo none'), locale $(inside 'locale 2>/dev/null | head -n 1 || echo none'), history file $(inside 'ls ~/.nnlab_history 2>/dev/null || echo none'), DISPLAY $(inside 'echo "${DISPLAY:-none}"'), /tmp $(inside 'stat -f -c %T /tmp')"

status=0
report=""
for cmd in "make test" "make run EPOCHS=1"; do
    echo "fresh: === $cmd"
    t0=$(date +%s.%N)
    inside "$cmd"
    rc=$?
    line="fresh: $cmd: exit $rc, $(elapsed "$t0") s"
    echo "$line"
    report="$report$line
"
    [ "$rc" -eq 0 ] || status=1
done
printf '%s' "$report"
[ "$status" -eq 0 ] && echo "fresh: both commands passed on a fresh Debian 12" ||
    echo "fresh: FAILED on a fresh Debian 12"
exit $status
