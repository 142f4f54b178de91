#!/bin/sh
# run.sh: fault injection. (1) kill -9 at random moments of net:save, t:save and tensor:save over
# a good file: the path must then hold the whole old file or the whole new one, and the next save
# must leave no temporary file; and while a run folder is recorded: every file whole; (2) Ctrl-C (SIGINT) at random moments of loading, training,
# saving, evaluating and decoding images: nnlab must stop within seconds with "interrupted" (exit
# status 130) or a paused fit, never die of another signal or a sanitizer report, and leave the
# checkpoint loadable; (3) a too-big request under `ulimit -v` must be a clean error. Delays come
# from a seeded generator (FAULT_SEED, default 1); FAULT_TRIALS kills per kind (default 8).
# Last line: "N passed, N failed".
NNLAB=${NNLAB:-./build/nnlab}
SEED=${FAULT_SEED:-1}
TRIALS=${FAULT_TRIALS:-8}
here=$(dirname "$0")
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
passed=0; failed=0
ok() { passed=$((passed + 1)); }
fail() { echo "FAIL faults: $*"; failed=$((failed + 1)); }

# delay N K: the K-th of a seeded series of delays in [0, N) milliseconds, as seconds for sleep.
delay() { awk -v s="$SEED" -v k="$2" -v n="$1" 'BEGIN { srand(s * 1000 + k); printf "%.3f", int(rand() * n) / 1000 }'; }

# Waits up to $2 tenths of a second for file $1 while process $3 runs.
wait_for() { i=0; while [ ! -e "$1" ] && [ $i -lt "$2" ] && kill -0 "$3" 2>/dev/null; do sleep 0.1; i=$((i + 1)); done; [ -e "$1" ]; }

# ---- (1) kill -9 during saves
k=0
for kind in net trainer tensor; do
    whole=0; stale=0
    for trial in $(seq 1 "$TRIALS"); do
        k=$((k + 1))
        p=$dir/$kind.safetensors; [ $kind = tensor ] && p=$dir/t.npy
        rm -rf "$p"*
        "$NNLAB" "$here/saver.lua" $kind "$p" > "$dir/log" 2>&1 &
        pid=$!
        if ! wait_for "$p.ready" 600 $pid; then kill -9 $pid 2>/dev/null; fail "$kind saver never started: $(cat "$dir/log")"; continue; fi
        sleep "$(delay 400 $k)"
        kill -9 $pid; wait $pid 2>/dev/null
        if cmp -s "$p" "$p.A" || cmp -s "$p" "$p.B"; then whole=$((whole + 1))
        else fail "$kind trial $trial: after kill -9 the file is neither the old nor the new one ($(wc -c < "$p") bytes)"; fi
        ls "$p".tmp.* > /dev/null 2>&1 && stale=$((stale + 1))
        "$NNLAB" -e "tensor.ones(2):save('$p')" > "$dir/log" 2>&1 || fail "the save after a kill failed: $(cat "$dir/log")"
        if ls "$p".tmp.* > /dev/null 2>&1; then fail "$kind trial $trial: temporary files survive the next save: $(ls "$p".tmp.*)"; fi
    done
    [ $whole -eq "$TRIALS" ] && ok
    echo "ok   kill -9 during $kind saves: $whole/$TRIALS whole files ($stale kills left a temporary file, removed by the next save)"
done

# ---- (1b) kill -9 while a run folder is recorded (every file rewritten after each step): each
# file must be whole (runs.load reads every CSV row complete and the JSON files), the checkpoint
# must load, and no temporary file may be left once the run is recorded and trained again.
for trial in $(seq 1 $(( (TRIALS + 1) / 2 ))); do
    k=$((k + 1))
    r=$dir/run
    rm -rf "$r" "$r.ready"
    "$NNLAB" "$here/recorder.lua" "$r" > "$dir/log" 2>&1 &
    pid=$!
    if ! wait_for "$r.ready" 600 $pid; then kill -9 $pid 2>/dev/null; fail "recorder never started: $(cat "$dir/log")"; continue; fi
    sleep "$(delay 400 $k)"
    kill -9 $pid; wait $pid 2>/dev/null
    if "$NNLAB" -e "
        local r = runs.load('$r')
        assert((r.status.state == 'running' or r.status.state == 'finished') and r.status.steps >= 8, 'status.json: ' .. tostring(r.status.state))
        assert(r.options.batch == 8 and r.manifest.nnlab, 'options.json and manifest.json whole')
        local n = 0
        for line in io.lines('$r/steps.csv') do
          n = n + 1
          if n > 1 then assert(select(2, line:gsub(',', '')) == 4 and not line:find(',,') and not line:find(',$'), 'a cut row: ' .. line) end
        end
        assert(n - 1 == #r.history.loss and #r.history.loss >= 8, 'steps.csv rows')
        local t = nn.Trainer.load('$r/checkpoint.safetensors', {data = nn.TensorDataset(tensor.randn(64, 32), tensor.ones(64):to('i32')), verbose = false})
        assert(t.steps >= 8, 'the checkpoint loads')
        t:record('$r')
        t:fit{epochs = 1} -- its saves take away what the killed saves left
        local left = io.popen('ls -a $r'):read('a')
        assert(not left:find('.tmp.', 1, true), 'temporary files left: ' .. left)" > "$dir/log" 2>&1; then
        ok; echo "ok   kill -9 while a run folder is recorded (trial $trial): every file whole, the checkpoint loads"
    else
        fail "recorder trial $trial: $(cat "$dir/log")"
    fi
done

# ---- (2) Ctrl-C during work
for phase in load train save evaluate images; do
    for trial in 1 2 3; do
        k=$((k + 1))
        p=$dir/busy.safetensors
        rm -rf "$p"*
        "$NNLAB" "$here/busy.lua" $phase "$p" > "$dir/out" 2> "$dir/err" &
        pid=$!
        if ! wait_for "$p.ready" 600 $pid; then kill -9 $pid 2>/dev/null; fail "$phase never started: $(cat "$dir/err")"; continue; fi
        sleep "$(delay 1000 $k)"
        kill -INT $pid
        i=0; while kill -0 $pid 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
        if kill -0 $pid 2>/dev/null; then
            kill -9 $pid; wait $pid 2>/dev/null
            fail "$phase trial $trial: still running 10 s after Ctrl-C"; continue
        fi
        wait $pid; rc=$?
        if grep -q "Sanitizer\|runtime error" "$dir/err"; then fail "$phase trial $trial: $(cat "$dir/err")"
        elif [ $rc -ge 128 ] && [ $rc -ne 130 ]; then fail "$phase trial $trial: killed by signal $((rc - 128))"
        elif ! grep -q "interrupted" "$dir/err" && ! grep -q "paused" "$dir/out"; then
            fail "$phase trial $trial: exit $rc without 'interrupted' or 'paused': $(cat "$dir/err" "$dir/out")"
        elif ! "$NNLAB" -e "nn.Trainer.load('$p', {data = nn.TensorDataset(tensor.randn(256, 3, 16, 16), tensor.ones(256)), verbose = false})" > "$dir/log" 2>&1; then
            fail "$phase trial $trial: the checkpoint does not load after Ctrl-C: $(cat "$dir/log")"
        else
            ok; echo "ok   Ctrl-C during $phase (trial $trial, after $i tenths of a second): $(cat "$dir/err" "$dir/out" | grep -m1 -o 'interrupted\|paused')"
        fi
    done
done

# ---- (3) a too-big request under a memory limit (ASan reserves terabytes of address space and
# cannot run under ulimit -v: skipped in the sanitizer build)
case "$NNLAB" in
*san*) echo "SKIP ulimit -v: the sanitizer build cannot run under a virtual memory limit" ;;
*)
    out=$( (ulimit -v 2000000; "$NNLAB" -e "local ok, e = pcall(tensor.zeros, 30000, 30000); print(ok, e); local a = tensor.ones(1000, 1000); print(a:sum())") 2>&1)
    if echo "$out" | grep -q "^false.*tensor.zeros" && echo "$out" | grep -q "^1000000"; then
        ok; echo "ok   ulimit -v 2 GB: a 3.4 GB tensor is refused with a message, work goes on"
    else fail "ulimit -v: $out"; fi ;;
esac
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
