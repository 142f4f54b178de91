#!/bin/sh
# run.sh: runs every test suite (C unit tests, Lua tests, REPL tests) and prints the totals as
# its last line, "N passed, N failed" (", N skipped" when a check could not run here; each skip is
# a line "SKIP what: reason" of its suite, listed again above the totals). Exits non-zero when
# anything failed.
NNLAB=${NNLAB:-./build/nnlab}
BUILD=${BUILD:-build/release}
log=$(mktemp)
skips=$(mktemp)
trap 'rm -f "$log" "$skips"' EXIT
status=0
suite() { # suite NAME COMMAND...: runs a suite, keeps its "N passed, N failed" line.
    name=$1; shift
    echo "== $name"
    "$@" > "$log" 2>&1; rc=$?
    cat "$log"
    grep '^SKIP ' "$log" | sed "s|^SKIP |  $name: |" >> "$skips"
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1)
    if [ -z "$line" ]; then
        echo "FAIL $name: exited $rc without a summary line"; failed_total=$((failed_total + 1)); status=1
        return
    fi
    p=${line%% passed*}; f=${line#*passed, }; f=${f%% failed*}
    passed_total=$((passed_total + p)); failed_total=$((failed_total + f))
    if [ "$rc" -ne 0 ] || [ "$f" -ne 0 ]; then status=1; [ "$f" -eq 0 ] && failed_total=$((failed_total + 1)); fi
}
passed_total=0; failed_total=0
for t in "$BUILD"/tests/test_*; do
    [ -x "$t" ] && suite "$(basename "$t")" "$t"
done
# The layer and kernel tests again with the CPU kernels held to each lower instruction set than
# this CPU's own (NNLAB_ISA), so that the paths an older CPU takes are tested here too.
best=$("$NNLAB" -e 'print((sys.isa()))' 2>/dev/null)
for isa in generic avx2; do
    [ "$isa" = "$best" ] && break
    for t in test_layers test_layers2 test_conv_direct test_golden test_quant; do
        [ -x "$BUILD/tests/$t" ] && NNLAB_ISA=$isa suite "$t (NNLAB_ISA=$isa)" "$BUILD/tests/$t"
    done
done
for t in tests/lua/test_*.lua; do
    [ -f "$t" ] && suite "$(basename "$t")" "$NNLAB" tests/lua/harness.lua "$t"
done
[ -f tests/fuzz/run.sh ] && suite fuzz sh tests/fuzz/run.sh test
[ -f tests/faults/run.sh ] && suite faults sh tests/faults/run.sh
[ -f tests/repl/run.sh ] && suite repl sh tests/repl/run.sh
[ -f tests/viz/run.sh ] && suite viz-window sh tests/viz/run.sh
[ -f tests/dist/run.sh ] && suite dist sh tests/dist/run.sh
[ -f tests/dist/two_hosts.sh ] && suite two-hosts sh tests/dist/two_hosts.sh
n_skipped=$(wc -l < "$skips")
if [ "$n_skipped" -gt 0 ]; then
    echo "skipped here, with the reasons:"; cat "$skips"
    echo "$passed_total passed, $failed_total failed, $n_skipped skipped"
else
    echo "$passed_total passed, $failed_total failed"
fi
exit $status
