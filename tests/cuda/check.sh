#!/bin/sh
# check.sh: the one-shot check of the CUDA backend on a GPU machine, in five parts:
#   1. every opcode on the device against the CPU over the shapes and views of test_device_ops,
#      with the tolerance stated per op (1e-5 relative elementwise, 1e-4 reductions and GEMMs);
#   2. the seed CNN's forward, loss, 3 SGD and 3 Adam steps on both devices from the same
#      weights (largest relative error; target 1e-4);
#   3. one CIFAR-10 epoch of the seed CNN on the GPU and on the CPU, same seed (top-1 within 1.5
#      points);
#   4. training images/s of the seed CNN at batch 64 and 512 and evaluation at 512, against eager
#      PyTorch on the same GPU (tests/cuda/torch_peer.py; bench/peers/torch_seed_cnn.py
#      --device cuda on real data too), peak device memory against torch.cuda.max_memory_allocated,
#      and the better net of examples/cifar10_better.lua at batch 128;
#   5. one results block (device, driver, commit, each figure), printed and written to a file.
# usage: sh tests/cuda/check.sh [RESULTS_FILE]     (default cuda-check-results.txt)
# env: NNLAB (build/nnlab), OPS (build/release/tests/test_device_ops), PYTHON (python3), PEERS
#      (bench/peers), DEVICE (cuda; sim: a dry run of the script), EPOCH_IMAGES (all 50000),
#      STEPS (200), COMMIT (git's).
# Runs from the repository root or an unpacked bundle (tests/cuda/bundle.sh makes one).
NNLAB=${NNLAB:-build/nnlab}
OPS=${OPS:-build/release/tests/test_device_ops}
PYTHON=${PYTHON:-python3}
PEERS=${PEERS:-bench/peers}
DEVICE=${DEVICE:-cuda}
STEPS=${STEPS:-200}
out=${1:-cuda-check-results.txt}
COMMIT=${COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
results=""
verdict=ok
add() { results="$results$1
"; echo "$1"; }
fail() { verdict=FAIL; add "FAIL: $*"; }
# val KEY TEXT: the value of KEY=value in TEXT's RESULT line
val() { echo "$2" | grep RESULT | tail -n 1 | tr ' ' '\n' | sed -n "s/^$1=//p"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

# DEVICE=sim (or cpu) is a dry run of this script on a machine without a GPU.
peer_dev=cuda
case "$DEVICE" in sim*|cpu) peer_dev=cpu ;; esac
[ "$peer_dev" = cpu ] && info="$DEVICE (a dry run of check.sh)" || info=$("$NNLAB" -e 'local d = sys.info().cuda[1]
  if not d then print("no CUDA device"); os.exit(1) end
  print(string.format("%s, %.0f MiB, compute capability %s, %d multiprocessors, driver (CUDA) %s, runtime %s",
        d.name, d.memory, d.capability, d.multiprocessors, d.driver, d.runtime))' 2>&1) || {
    echo "check.sh: $info"; exit 1; }
add "nnlab CUDA check  $(date -u +%Y-%m-%dT%H:%MZ)  commit $COMMIT"
add "device: $info"
drv=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n 1)
add "driver: ${drv:-unknown}; cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) threads"

echo "== 1. every opcode against the cpu"
timeout 600 "$OPS" "$DEVICE" > "$log" 2>&1; rc=$?
cat "$log"
line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1)
add "1. ops: ${line:-no summary} (exit $rc)"
[ "$rc" -eq 0 ] && grep -q "^$(nl_dev=$DEVICE; echo "${nl_dev%%:*}") against the cpu" "$log" || fail "opcode parity"

echo "== 2. seed CNN: forward, loss, 3 SGD and 3 Adam steps against the cpu"
r=$(timeout 300 "$NNLAB" tests/cuda/parity.lua "$DEVICE" 2>&1); rc=$?
echo "$r"
add "2. parity (largest relative error, target 1e-4): forward $(val parity_forward "$r"), loss $(val parity_loss "$r"), 3 SGD $(val parity_sgd3 "$r"), 3 Adam $(val parity_adam3 "$r")"
[ "$rc" -eq 0 ] || fail "seed CNN parity"

echo "== 3. one CIFAR-10 epoch, gpu and cpu"
g=$(timeout 900 "$NNLAB" tests/cuda/epoch.lua "$DEVICE" $EPOCH_IMAGES 2>&1); echo "$g"
c=$(timeout 1800 "$NNLAB" tests/cuda/epoch.lua cpu $EPOCH_IMAGES 2>&1); echo "$c"
gt=$(val top1 "$g"); ct=$(val top1 "$c")
if [ -n "$gt" ] && [ -n "$ct" ]; then
    d=$(awk -v a="$gt" -v b="$ct" 'BEGIN { d = (a - b) * 100; printf "%.2f", d < 0 ? -d : d }')
    add "3. one epoch${EPOCH_IMAGES:+ ($EPOCH_IMAGES images)}: top-1 gpu $gt, cpu $ct (difference $d points, target <= 1.5); gpu train $(val train_img_s "$g") img/s, eval $(val eval_img_s "$g") img/s"
    awk -v d="$d" 'BEGIN { exit !(d <= 1.5) }' || fail "epoch top-1 differs by $d points"
else
    fail "the epoch did not run (CIFAR-10 missing?)"
fi

echo "== 4. speed against eager PyTorch on the same GPU"
for spec in "seed 64" "seed 512" "better 128"; do
    set -- $spec
    ours=$(timeout 600 "$NNLAB" tests/cuda/speed.lua "$DEVICE" "$2" "$1" "$STEPS" 2>&1); echo "$ours"
    theirs=$(timeout 600 "$PYTHON" tests/cuda/torch_peer.py --device "$peer_dev" --batch "$2" --net "$1" --steps "$STEPS" 2>&1)
    echo "$theirs"
    ot=$(val train_img_s "$ours"); oe=$(val eval_img_s "$ours"); om=$(val peak_mb "$ours")
    tt=$(val train_img_s "$theirs"); te=$(val eval_img_s "$theirs"); tm=$(val peak_mb "$theirs")
    add "4. $1 net, batch $2: train $ot img/s vs PyTorch $tt ($(ratio "$ot" "$tt")x), eval $oe vs $te ($(ratio "$oe" "$te")x), peak device memory $om MiB vs $tm MiB"
done
real=$(timeout 900 "$PYTHON" "$PEERS/torch_seed_cnn.py" data/cifar-10-batches-bin --device "$peer_dev" --train-images "${EPOCH_IMAGES:-50000}" 2>&1 | grep RESULT)
[ -n "$real" ] && add "4. PyTorch seed CNN, one real CIFAR-10 epoch at batch 64 (torch_seed_cnn.py --device $peer_dev): ${real#RESULT }"

echo "== 5. results"
add "verdict: $verdict (targets: ops and parity within tolerance, top-1 within 1.5 points; speed targets are read off the ratios: >= 2x at batch 64, >= 1x at 512, eval >= 2x at 512, memory below PyTorch's)"
printf '%s' "$results" > "$out"
echo "check.sh: results written to $out"
[ "$verdict" = ok ]
