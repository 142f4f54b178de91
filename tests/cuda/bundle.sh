#!/bin/sh
# bundle.sh: packs nnlab, built here with CUDA, for a bare GPU host (the NVIDIA driver, CUDA's
# libraries, often only inside PyTorch's nvidia-* wheels, and PyTorch, but no Lua, readline, SDL2
# or OpenBLAS, and maybe no network) into one ignored folder of at most 64 MiB:
#   cuda-bundle/bin/       nnlab and test_device_ops (with wrappers that set the library path)
#   cuda-bundle/lib.tar.xz the shared libraries they need (ldd), except glibc's, the C++
#                          runtime's and CUDA's
#   cuda-bundle/tests/     tests/cuda (check.sh and its scripts), get_data.sh, make_cifar10.lua
#   cuda-bundle/peers/     bench/peers/torch_seed_cnn.py
#   cuda-bundle/data/      ../shared/data/cifar10-jpeg.tar.gz (converted on the host)
#   cuda-bundle/run.sh     the one command to run there: finds CUDA's libraries (also in
#                          PyTorch's site-packages), unpacks the libraries, runs check.sh
# Then it proves the bundle self-contained on this machine's CPU: nnlab and the op test run in a
# chroot that holds only glibc, the C++ runtime, a shell and the bundle (no -dev packages, no
# other library).
#   usage: sh tests/cuda/bundle.sh [--no-proof]        (from the repository root)
set -e
out=cuda-bundle
[ -f Makefile ] && [ -d tests/cuda ] || { echo "bundle.sh: run it from the repository root" >&2; exit 1; }
make -j2 CUDA=1 build/nnlab build/release/tests/test_device_ops >/dev/null
rm -rf "$out"
mkdir -p "$out/bin" "$out/lib" "$out/tests/cuda" "$out/examples" "$out/peers" "$out/data"
cp build/nnlab "$out/bin/nnlab.real"
cp build/release/tests/test_device_ops "$out/bin/test_device_ops.real"

# Every shared library of both programs, except glibc's and the C++ runtime's (every host that
# runs PyTorch has them, newer; an older copy first on the path could break the host's cuBLAS)
# and CUDA's (the host's must match its driver; cuBLAS is loaded at run time from the host).
skip='^(libc|libm|libdl|librt|libpthread|libutil|libresolv|ld-linux-x86-64|linux-vdso|libstdc\+\+|libgcc_s|libcuda|libcudart|libcublas|libcublasLt|libnvrtc)\.so'
for prog in "$out/bin/nnlab.real" "$out/bin/test_device_ops.real"; do
    ldd "$prog" | awk '/=> \// {print $1, $3}' | while read -r name path; do
        echo "$name" | grep -Eq "$skip" && continue
        [ -f "$out/lib/$name" ] || cp -L "$path" "$out/lib/$name"
    done
done
(cd "$out" && XZ_OPT=-T2 tar cJf lib.tar.xz lib && rm -rf lib)

for prog in nnlab test_device_ops; do
    cat > "$out/bin/$prog" <<WRAP
#!/bin/sh
# Runs $prog.real with the bundle's libraries (unpacked by run.sh) and CUDA's (\$NNLAB_CUDA_LIBS).
case "\$0" in */*) here=\${0%/*}/.. ;; *) here=.. ;; esac
here=\$(cd "\$here" && pwd)
LD_LIBRARY_PATH="\${NNLAB_BUNDLE_LIB:-\$here/lib}\${NNLAB_CUDA_LIBS:+:\$NNLAB_CUDA_LIBS}" exec "\$here/bin/$prog.real" "\$@"
WRAP
    chmod +x "$out/bin/$prog"
done

cp tests/cuda/*.sh tests/cuda/*.lua tests/cuda/*.py "$out/tests/cuda/"
cp tests/get_data.sh "$out/tests/"
cp examples/make_cifar10.lua "$out/examples/"
cp bench/peers/torch_seed_cnn.py "$out/peers/"
cp ../shared/data/cifar10-jpeg.tar.gz "$out/data/"
git rev-parse --short HEAD > "$out/COMMIT" 2>/dev/null || echo unknown > "$out/COMMIT"
git status --porcelain --untracked-files=no | grep -q . && sed -i 's/$/+uncommitted/' "$out/COMMIT"

cat > "$out/run.sh" <<'RUN'
#!/bin/sh
# run.sh: the GPU check from this bundle, on a GPU host: sh run.sh [RESULTS_FILE]
# Finds CUDA's libraries (CUDA's folders, then PyTorch's nvidia/*/lib), unpacks the bundle's
# libraries into a temporary folder, converts CIFAR-10 once, and runs tests/cuda/check.sh.
here=$(cd "$(dirname "$0")" && pwd)
PYTHON=${PYTHON:-python3}
libs=
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/nvidia/lib64 \
         $("$PYTHON" -c 'import glob, site, os; print(" ".join(sorted({os.path.dirname(p) for s in site.getsitepackages() for p in glob.glob(s + "/nvidia/**/libcublas.so*", recursive=True)})))' 2>/dev/null); do
    [ -d "$d" ] && libs="${libs:+$libs:}$d"
done
export NNLAB_CUDA_LIBS="$libs"
tmp=$(mktemp -d /tmp/nnlab-bundle.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
tar xJf "$here/lib.tar.xz" -C "$tmp"
export NNLAB_BUNDLE_LIB="$tmp/lib"
cd "$here"
if [ ! -s data/cifar-10-batches-bin/test_batch.bin ]; then
    NNLAB="$here/bin/nnlab" sh tests/get_data.sh data/cifar10-jpeg.tar.gz || echo "run.sh: CIFAR-10 conversion failed"
fi
NNLAB="$here/bin/nnlab" OPS="$here/bin/test_device_ops" PEERS="$here/peers" COMMIT=$(cat COMMIT) \
    PYTHON="$PYTHON" sh tests/cuda/check.sh "$@"
RUN
chmod +x "$out/run.sh"
size=$(du -sb "$out" | cut -f1)
echo "bundle.sh: $out is $((size / 1048576)) MiB ($size bytes)"
[ "$size" -le $((64 * 1048576)) ] || { echo "bundle.sh: over 64 MiB" >&2; exit 1; }
[ "$1" = "--no-proof" ] && exit 0

# ---- the proof: a chroot with glibc, the C++ runtime, a shell and the bundle only
root=$(mktemp -d /tmp/nnlab-chroot.XXXXXX)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/tmp" "$root/dev"
for f in /lib64/ld-linux-x86-64.so.2 $(ldd /bin/sh | awk '/=> \// {print $3}') \
         /lib/x86_64-linux-gnu/libm.so.6 /lib/x86_64-linux-gnu/libdl.so.2 \
         /lib/x86_64-linux-gnu/librt.so.1 /lib/x86_64-linux-gnu/libpthread.so.0 \
         /lib/x86_64-linux-gnu/libstdc++.so.6 /lib/x86_64-linux-gnu/libgcc_s.so.1; do
    mkdir -p "$root$(dirname "$f")"
    cp -L "$f" "$root$f"
done
cp -L /bin/sh "$root/bin/sh"
cp -r "$out" "$root/bundle"
tar xJf "$out/lib.tar.xz" -C "$root/bundle"
[ -e /dev/null ] && touch "$root/dev/null"
echo "bundle.sh: proof in a chroot holding only glibc, libstdc++, /bin/sh and the bundle:"
chroot "$root" /bin/sh -c 'cd /bundle && export NNLAB_BUNDLE_LIB=/bundle/lib &&
  bin/nnlab -e "print(\"nnlab runs; cuda devices: \" .. #sys.info().cuda); local ok, e = pcall(function() return tensor.zeros(2):to(\"cuda\") end); print(\"to(cuda): \" .. tostring(e))" &&
  bin/nnlab tests/cuda/parity.lua sim && bin/test_device_ops sim'
echo "bundle.sh: the bundle is self-contained on the CPU path"
