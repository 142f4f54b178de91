#!/bin/sh
# run.sh MODE [SECONDS]: runs the libFuzzer targets of tests/fuzz (built into $FUZZ_BUILD).
#   test: each target over its seed corpus and its regression files (the reproducers of bugs
#         found before, which must stay fixed), then a fuzzing run of SECONDS (default 5) from the
#         corpus so new code paths are exercised; ends with "N passed, N failed" (make test).
#   long: each target for SECONDS (default 60) from its corpus (make fuzz); new inputs are kept in
#         $FUZZ_BUILD/corpus/<target>, crashes in $FUZZ_BUILD/findings/<target>; prints each
#         target's executions, coverage and findings.
# A target's dictionary is tests/fuzz/<name>.dict when there is one. FUZZ_ONLY="onnx npy" runs
# only those targets (make fuzz FUZZ_ONLY=onnx FUZZ_TIME=600).
mode=${1:-test}
FUZZ_BUILD=${FUZZ_BUILD:-build/fuzz}
here=$(dirname "$0")
passed=0; failed=0
if [ "$mode" = test ]; then secs=${2:-5}; else secs=${2:-60}; fi
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
log=$(mktemp)
work=$(mktemp -d)
trap 'rm -rf "$log" "$work"' EXIT
for bin in "$FUZZ_BUILD"/fuzz_*; do
    [ -x "$bin" ] || continue
    name=$(basename "$bin"); name=${name#fuzz_}
    case " ${FUZZ_ONLY:-$name} " in *" $name "*) ;; *) continue ;; esac
    corpus=$here/corpus/$name; regress=$here/regressions/$name
    dict=; [ -f "$here/$name.dict" ] && dict=-dict=$here/$name.dict
    # Small inputs and a per-input time limit: a hang is a finding, as is a 2 GB allocation.
    opts="-timeout=10 -rss_limit_mb=2560 -malloc_limit_mb=2048 -max_len=65536"
    if [ "$mode" = test ]; then
        files=$(find "$corpus" "$regress" -type f 2>/dev/null | sort)
        if [ -z "$files" ]; then
            echo "FAIL fuzz $name: no corpus in $corpus"; failed=$((failed + 1)); continue
        fi
        # shellcheck disable=SC2086
        if "$bin" $opts $files > "$log" 2>&1; then
            echo "ok   fuzz $name: $(echo "$files" | wc -l) corpus and regression files"
            passed=$((passed + 1))
        else
            echo "FAIL fuzz $name: a corpus or regression file fails:"; tail -n 30 "$log"
            failed=$((failed + 1)); continue
        fi
        mkdir -p "$work/$name"
        # shellcheck disable=SC2086
        # A fixed seed: CI replays the same mutations in its time box.
        if "$bin" $opts $dict -seed=1 -max_total_time="$secs" -artifact_prefix="$work/" -print_final_stats=1 \
               "$work/$name" "$corpus" > "$log" 2>&1; then
            runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$')
            echo "ok   fuzz $name: ${secs} s of fuzzing, ${runs:-?} inputs, nothing found"
            passed=$((passed + 1))
        else
            echo "FAIL fuzz $name: fuzzing found a problem (reproducer below; keep it in $regress):"
            tail -n 40 "$log"; ls "$work"/crash-* "$work"/timeout-* "$work"/leak-* "$work"/oom-* 2>/dev/null
            failed=$((failed + 1))
        fi
    else
        out=$FUZZ_BUILD/corpus/$name; finds=$FUZZ_BUILD/findings/$name
        mkdir -p "$out" "$finds"
        # shellcheck disable=SC2086
        "$bin" $opts $dict -max_total_time="$secs" -artifact_prefix="$finds/" -print_final_stats=1 \
            "$out" "$corpus" > "$log" 2>&1; rc=$?
        runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$')
        cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1)
        cov0=$(grep -m1 -o 'INITED cov: [0-9]*' "$log")
        nfind=$(find "$finds" -type f | wc -l)
        echo "fuzz $name: ${secs} s, ${runs:-?} executions, ${cov0:-?} -> ${cov:-?} edges," \
             "$(find "$out" -type f | wc -l) corpus inputs, $nfind findings (exit $rc)"
        if [ "$rc" -ne 0 ]; then tail -n 30 "$log"; failed=$((failed + 1)); else passed=$((passed + 1)); fi
    fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
