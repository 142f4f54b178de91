#!/bin/sh
# get_data.sh [ARCHIVE]: puts CIFAR-10's binary release in data/cifar-10-batches-bin (`make data`).
# ARCHIVE is the official cifar-10-binary.tar.gz, or a tarball of image folders train/<class>/*
# and test/<class>/* (converted by examples/make_cifar10.lua with $NNLAB); without one, the
# official release is downloaded and its md5 checked. A no-op when the files are already there.
NNLAB=${NNLAB:-./build/nnlab}
dest=data/cifar-10-batches-bin
url=https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz
md5=c32a1d4ab5d03f1284b67883e8d87530
hint="pass an archive: make data CIFAR10_ARCHIVE=/path/to/cifar-10-binary.tar.gz (or a tarball of train/<class>/ and test/<class>/ image folders, such as ../shared/data/cifar10-jpeg.tar.gz)"

fail() { echo "make data: $*" >&2; exit 1; }
# The six batch files with their official sizes and the class list.
ready() {
    for f in data_batch_1 data_batch_2 data_batch_3 data_batch_4 data_batch_5 test_batch; do
        [ "$(stat -c %s "$dest/$f.bin" 2>/dev/null)" = 30730000 ] || return 1
    done
    [ -s "$dest/batches.meta.txt" ]
}

if ready; then echo "make data: CIFAR-10 is ready in $dest"; exit 0; fi
start=$(date +%s.%N)
mkdir -p data || fail "cannot create ./data"
# Unpack in the temporary folder ($TMPDIR): 60,000 small files are written much faster there.
tmp=$(mktemp -d "${TMPDIR:-/tmp}/nnlab-cifar10.XXXXXX") || fail "cannot create a temporary folder"
stage=data/.cifar-10-batches-bin.$$
trap 'rm -rf "$tmp" "$stage"' EXIT INT TERM
archive=$1
if [ -z "$archive" ]; then
    echo "make data: no CIFAR10_ARCHIVE given; downloading $url"
    if command -v curl >/dev/null; then
        curl -fsSL --connect-timeout 20 -o "$tmp/cifar-10-binary.tar.gz" "$url"
    elif command -v wget >/dev/null; then
        wget -q -T 20 -O "$tmp/cifar-10-binary.tar.gz" "$url"
    else
        false
    fi || fail "cannot download $url (no network?); $hint"
    [ "$(md5sum < "$tmp/cifar-10-binary.tar.gz" | cut -d' ' -f1)" = "$md5" ] ||
        fail "the download's md5 is not $md5 (a broken or changed file); $hint"
    archive=$tmp/cifar-10-binary.tar.gz
fi
[ -f "$archive" ] || fail "CIFAR10_ARCHIVE=$archive: no such file"
list=$(tar tzf "$archive" 2>/dev/null) || fail "$archive is not a readable .tar.gz"
if printf '%s\n' "$list" | grep -q 'cifar-10-batches-bin/data_batch_1\.bin$'; then
    echo "make data: unpacking CIFAR-10's binary release from $archive"
    tar xzf "$archive" -C "$tmp" || fail "cannot unpack $archive"
    src=$(dirname "$(find "$tmp" -path '*cifar-10-batches-bin/data_batch_1.bin' | head -n 1)")
elif printf '%s\n' "$list" | grep -Eq '(^|/)train/[^/]+/[^/]+$' &&
     printf '%s\n' "$list" | grep -Eq '(^|/)test/[^/]+/[^/]+$'; then
    echo "make data: converting the image folders of $archive to CIFAR-10's binary format"
    tar xzf "$archive" -C "$tmp" || fail "cannot unpack $archive"
    root=$(dirname "$(find "$tmp" -maxdepth 3 -type d -name train | head -n 1)")
    "$NNLAB" examples/make_cifar10.lua "$root" "$tmp/cifar-10-batches-bin" 1 ||
        fail "converting $archive failed"
    src=$tmp/cifar-10-batches-bin
else
    fail "$archive holds neither cifar-10-batches-bin/ (the official binary release) nor train/<class>/ and test/<class>/ image folders"
fi
# Staged beside the destination, then renamed: an interrupted run leaves no half-filled folder.
rm -rf "$stage" && mv "$src" "$stage" && rm -rf "$dest" && mv "$stage" "$dest" ||
    fail "cannot move the data into $dest"
ready || fail "$dest does not hold the six 30,730,000-byte batch files and batches.meta.txt (not CIFAR-10?)"
echo "make data: CIFAR-10 is ready in $dest ($(awk "BEGIN { printf \"%.1f\", $(date +%s.%N) - $start }") s)"
