#!/bin/sh
# run.sh: `make bench`. Runs every benchmark side by side with its peer in one run and prints
# the figures. Run it on an idle machine: a second busy process on 2 cores distorts everything.
NNLAB=${NNLAB:-./build/nnlab}
BUILD=${BUILD:-build/release}
PEER_PY=/usr/bin/python3   # Debian's python3, which has python3-torch
PEERS=bench/peers          # the PyTorch scripts written for nnlab's benchmarks
export NNLAB_PEERS=$PEERS
export NNLAB_THREADS=${NNLAB_THREADS:-2}

# What the figures below were measured on, first: the CPU, the BLAS kernels and the threads.
echo "== machine (sys.info)"
"$NNLAB" -e '
local i = sys.info()
local f = {}
for _, k in ipairs{"avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni",
                   "avx512_bf16", "amx"} do if i.cpu.features[k] then f[#f + 1] = k end end
print(string.format("cpu: %s (%s family %d model %d); %s", i.cpu.model, i.cpu.vendor, i.cpu.family,
                    i.cpu.model_id, #f > 0 and table.concat(f, " ") or "no AVX2"))
print("blas: " .. i.blas.summary)
print(string.format("threads: %d; int8 kernels: %s; cuda: %s", i.threads, i.int8_isa,
                    #i.cuda > 0 and table.concat(i.cuda, ", ") or "none"))'
echo

echo "== matmul: nnlab's matmul op against cblas_sgemm called directly (threads $NNLAB_THREADS)"
"$BUILD/bench/bench_matmul"

echo
echo "== REPL start-up: mean wall time of 'nnlab -e \"\"' over 20 runs (target < 50 ms)"
"$PEER_PY" - "$NNLAB" <<'PY'
import subprocess, sys, time
runs = []
for _ in range(20):
    t0 = time.perf_counter(); subprocess.run([sys.argv[1], "-e", ""], check=True)
    runs.append(time.perf_counter() - t0)
runs.sort()
print(f"start-up: mean {1000 * sum(runs) / len(runs):.1f} ms, median {1000 * runs[len(runs) // 2]:.1f} ms")
PY

for b in "$BUILD"/bench/bench_*; do
    case "$b" in */bench_matmul) continue ;; esac
    [ -x "$b" ] || continue
    echo
    echo "== $(basename "$b")"
    "$b"
done

for s in bench/*.lua; do
    [ -f "$s" ] || continue
    echo
    echo "== $s"
    "$NNLAB" "$s" "$PEER_PY" "$PEERS"
done
