#!/bin/sh
# run.sh: tests of the nnlab REPL through a real terminal (tmux) and of its non-interactive
# modes. Binary from $NNLAB (default ./build/nnlab). One line per check; last line "N passed, N failed".
NNLAB=${NNLAB:-./build/nnlab}
case $NNLAB in /*) ;; *) NNLAB=$(pwd)/$NNLAB ;; esac
SOCK=nnlab-test-$$
tmp=$(mktemp -d)
hist=$tmp/history
NNLAB_HISTORY=$hist  # never the user's ~/.nnlab_history, whatever a check starts
export NNLAB_HISTORY
sock_file=${TMUX_TMPDIR:-/tmp}/tmux-$(id -u)/$SOCK  # tmux leaves it behind
trap 'tmux -L "$SOCK" kill-server 2>/dev/null; rm -rf "$tmp"; rm -f "$sock_file"' EXIT
trap 'exit 1' INT TERM
passed=0
failed=0

if [ ! -x "$NNLAB" ]; then
    echo "FAIL - binary: $NNLAB is not an executable file"
    echo "0 passed, 1 failed"
    exit 1
fi

if ! command -v tmux > /dev/null 2>&1; then
    echo "FAIL - tmux: not installed (make deps installs it)"
    echo "0 passed, 1 failed"
    exit 1
fi

# The panes run their commands with bash, whatever $SHELL is: dash (a SHELL=/bin/sh login) dies of
# the Ctrl-C meant for nnlab and closes the pane before it prints nnlab's exit status.
tm() { SHELL=/bin/bash tmux -L "$SOCK" -f /dev/null "$@"; }

ok() { echo "ok - $1"; passed=$((passed + 1)); }
fail() { echo "FAIL - $1: $2"; failed=$((failed + 1)); }

# start ARGS: a fresh 100x40 session running "nnlab ARGS" in $tmp (also its HOME, so no check writes
# into the user's: ~/.nnlab/lessons), printing [exit:N] when nnlab ends; the previous session is
# closed after the new one exists, so the server stays up.
sessions=0
S=
start() {
    old=$S
    sessions=$((sessions + 1))
    S=s$sessions
    tm new-session -d -s "$S" -x 100 -y 40 \
        "cd '$tmp' && HOME='$tmp' NNLAB_HISTORY='$hist' '$NNLAB' $*; echo \"[exit:\$?]\"; sleep 600"
    [ -n "$old" ] && tm kill-session -t "$old"
}
screen() { tm capture-pane -p -J -t "$S" -S -1000; }
# The last few non-empty lines of the screen, for failure messages.
tail_screen() { screen | grep -v '^ *$' | tail -n "${1:-4}" | tr '\n' '|'; }
type_text() { tm send-keys -t "$S" -l "$1"; }
key() { tm send-keys -t "$S" "$@"; }
line() { type_text "$1"; key Enter; }
# define TEXT: enters a line and waits until it has run (the line is on screen and a fresh, empty
# prompt is the last line), so that keys typed next are not typed ahead of the prompt.
define() {
    line "$1"
    j=0
    while [ "$j" -lt 200 ]; do
        if screen | grep -qxF -- "nnlab> $1" &&
           [ -n "$(screen | grep -v '^ *$' | tail -n 1 | grep -xE 'nnlab> *')" ]; then return 0; fi
        sleep 0.05
        j=$((j + 1))
    done
    fail "define: $1" "no fresh prompt after it: $(tail_screen)"
}

# wait_for PATTERN [TIMEOUT [COUNT]]: polls the screen until COUNT (default 1) lines match the
# extended regular expression PATTERN; fails after TIMEOUT seconds (default 5).
wait_for() {
    limit=$(awk "BEGIN { print int(${2:-5} * 20) }")
    i=0
    while [ "$i" -lt "$limit" ]; do
        [ "$(screen | grep -cE -- "$1")" -ge "${3:-1}" ] && return 0
        sleep 0.05
        i=$((i + 1))
    done
    return 1
}

# check NAME PATTERN [TIMEOUT [COUNT]]: one check that waits for PATTERN on the screen.
check() {
    if wait_for "$2" "${3:-5}" "${4:-1}"; then ok "$1"; else fail "$1" "no /$2/ on screen: $(tail_screen)"; fi
}

PROMPT='^nnlab>'

# ---- 1. banner, prompt, expressions, print
start
check "banner" '^nnlab 0\.1\.0 .* Lua 5\.4\. help\(\) for help, Ctrl-D to quit\.$'
check "banner names the BLAS kernels" '^BLAS: OpenBLAS [0-9.]+, [A-Za-z0-9]+ kernels \(.*\); [0-9]+ threads$'
check "prompt" "$PROMPT"
line '1+1'
check "expression 1+1 shows 2" '^2$'
line "print('x')"
check "print('x') shows x" '^x$'
line 'tensor.zeros(2, 10):shape()'
check "a table result shows its contents" '^\{2, 10\}$'
line 'tensor.ones(2, 3) + tensor.ones(4)'
check "a core error names both shapes" 'add: shapes \[2, 3\] and \[4\] do not broadcast'
if screen | grep -q 'stack traceback'; then fail "an error in a typed line has no empty traceback" "$(tail_screen)"
else ok "an error in a typed line has no empty traceback"; fi
line "'a', 7, nil"
check "several values print separated" '^a +7 +nil$'
line 'nothing = 1'
line 'nothing'
check "a statement prints nothing, then its value shows" '^1$'

# ---- 2. multi-line input
start
wait_for "$PROMPT"
line 'function f(a)'
check "continuation prompt" '^   \.\.>'
line 'return a*2'
line 'end'
line 'f(21)'
check "multi-line function definition" '^42$'
line '100 +'
line '23'
check "multi-line expression" '^123$'
line 't = {'
line '  k = 5,'
line '}'
line 't.k'
check "multi-line table constructor" '^5$'

# ---- 3. completion
start
wait_for "$PROMPT"
type_text 'string.fo'
key Tab
check "completion of string.fo" '^nnlab> string\.format$'
key C-u
define 'mytab = {alpha=1, beta=2}'
type_text 'mytab.al'
key Tab
check "completion of a session table's field" '^nnlab> mytab\.alpha$'
key C-u
define 'a = {b = {cdef = 1}}'
type_text 'a.b.cd'
key Tab
check "completion of a nested field" '^nnlab> a\.b\.cdef$'
key C-u
define 'obj = setmetatable({}, {__index={resize=function() end}})'
type_text 'obj:res'
key Tab
check "completion of a method through __index" '^nnlab> obj:resize$'
key C-u
define 'lin = nn.Linear(2, 3)'
type_text 'lin:zero_g'
key Tab
check "completion of a module method (function __index, plain methods table)" '^nnlab> lin:zero_grad$'
key C-u
define 'tz = tensor.zeros(2)'
type_text 'tz:resh'
key Tab
check "completion of a tensor method" '^nnlab> tz:reshape$'
key C-u
type_text 'tz:unsq'
key Tab
check "completion of a tensor method of the PyTorch set" '^nnlab> tz:unsqueeze$'
key C-u
define 'tm = tensor.arange(6):reshape(2, 3)'
line 'tm[2]'
check "t[i] at the prompt shows the row" '^\[3\.0000, 4\.0000, 5\.0000\]$'
key C-u
type_text 'string.'
key Tab Tab
check "listing shows short names" '^byte +'
key C-u
type_text 'funct'
key Tab
type_text 'kw() return 7 end'
key Enter
define 'kw()'
check "keyword completes with a space" '^7$'
type_text 'print("x" ..stri'
key Tab
check "completion after a concatenation" '^nnlab> print\("x" \.\.string$'
key C-u
: > "$tmp/datafile.txt"
type_text 'dofile("dataf'
key Tab
check "file names complete inside strings" '^nnlab> dofile\("datafile\.txt"$'
key C-u
define 'trap = setmetatable({}, {__index = function() ran = true end})'
type_text 'trap.zz'
key Tab
key C-u
line 'ran'
check "completion runs no __index function" '^nil$'

# ---- 4. history
rm -f "$hist"
start
wait_for "$PROMPT"
line 'dup_line = 1'
line 'dup_line = 1'
key Enter
line 'print("hist-" .. "last")'
wait_for '^hist-last$'
key C-d
wait_for '^\[exit:0\]$'
start
wait_for "$PROMPT"
key Up
check "Up recalls the previous session's last line" '^nnlab> print\("hist-" \.\. "last"\)$'
if grep -qFx 'print("hist-" .. "last")' "$hist" 2>/dev/null; then ok "history file holds the line"
else fail "history file holds the line" "$hist: $(tr '\n' '|' < "$hist" 2>&1)"; fi
n=$(grep -cFx 'dup_line = 1' "$hist" 2>/dev/null)
if [ "$n" = 1 ] && ! grep -q '^ *$' "$hist"; then ok "history skips repeats and blank lines"
else fail "history skips repeats and blank lines" "dup_line appears $n times: $(tr '\n' '|' < "$hist")"; fi

# ---- 5. errors keep the session
start
wait_for "$PROMPT"
line 'keep = 99'
line "error('boom')"
check "error('boom') shows boom" 'boom'
line 'nil + 1'
check "nil + 1 shows an error" 'attempt to perform arithmetic on a nil value'
line 'error(setmetatable({}, {__tostring = function() return "custom-err" end}))'
check "error objects print with __tostring" 'custom-err'
line 'x = = 1'
check "a syntax error is reported" "unexpected symbol near '='"
line 'help()'
line '1+1'
check "the session goes on after errors" '^2$'
line 'keep'
check "variables survive errors" '^99$'

# ---- 5b. nnlab's own errors print as one message; errors in the user's code keep a traceback
start
wait_for "$PROMPT"
define 'ds = nn.TensorDataset(tensor.randn(8, 2), tensor.from{1, 2, 3, 11, 1, 2, 1, 2})'
define 'tr = nn.Trainer{net = nn.Linear(2, 3), data = ds, verbose = false}'
line 'tr:fit{epochs = 1}'
check "an error inside fit names the call and the problem" '^Trainer:fit: CrossEntropyLoss: label 11\.0 of sample [0-9]+ is not a class number from 1 to 3$'
line 'viz.save("x.png", 42)'
check "an error of viz.save names it" 'viz\.save: the second argument must be a Canvas or a view name$'
define 'function load_it() local t = tensor.load("nope.npy"); return t end'
line 'load_it()'
check "an nnlab error in a user function shows the user's line" "^stdin:1: tensor\.load: cannot open 'nope\.npy'"
line 'tensor.zeros(2):softmaxx(1)'
check "a missing tensor method names itself, a near one and help" '^stdin:1: Tensor has no method or field .softmaxx. \(did you mean softmax\?\); help "Tensor" lists the methods$'
line 'tensor.arange(6):reshape(2, 3)[3]'
check "t[i] out of range says so" '^stdin:1: Tensor: index 3 out of range for dim 1 of size 2$'
define 'after_errors = 1'
if screen | grep -q 'stack traceback'; then fail "nnlab's errors print without a traceback" "$(tail_screen 8)"
else ok "nnlab's errors print without a traceback"; fi
if screen | grep -q 'dsl/'; then fail "nnlab's errors name no place inside dsl/" "$(screen | grep 'dsl/' | head -n 3 | tr '\n' '|')"
else ok "nnlab's errors name no place inside dsl/"; fi
define 'function mine() error("my own error") end'
line 'mine()'
check "an error in the user's own function keeps its traceback" "^[[:space:]]+stdin:1: in function 'mine'" 5
line 'tensor.ones(1):sum()'
check "the session goes on after them" '^1\.0$'

# ---- 5c. no noise: a printed summary and a module returned for chaining are not echoed; help()
# lists the modules sorted and aligned, without internal hooks
start
wait_for "$PROMPT"
define 'net = nn.Sequential(nn.Conv2d(1, 8, 3, {padding = 1}), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(512, 3))'
define 'net:summary()'
n=$(screen | grep -c 'Total params: 1,619')
if [ "$n" = 1 ] && ! screen | grep -qE '^\{|params = |macs = '; then ok "net:summary() prints its table once"
else fail "net:summary() prints its table once" "$n tables: $(tail_screen 6)"; fi
if screen | grep -qE '^input +\[1, 1, 16, 16\]'; then ok "net:summary() finds a 16x16 net's input"
else fail "net:summary() finds a 16x16 net's input" "$(screen | grep '^input' | head -n 1)"; fi
define 'net:zero_grad()'
define 'net:train()'
define 'net:eval()'
if screen | grep -q '^Sequential($'; then fail "zero_grad, train and eval echo nothing" "$(screen | grep -A1 '^Sequential($' | head -n 3 | tr '\n' '|')"
else ok "zero_grad, train and eval echo nothing"; fi
line 'net:eval().training, net == net:train()'
check "chaining still returns the network" '^false[[:space:]]+true$'
line 'net'
check "the network itself still shows" '^Sequential\($'
tm send-keys -t "$S" -l 'help()'
key Enter
wait_for '^help\(f\) or help "name"'
listed=$(screen | sed -n '/^nnlab: modules and types/,/^help(f)/p' | awk 'NF >= 2 && $2 ~ /^(module|type)$/ { print $2, $1 }')
order=$(printf '%s\n' "$listed" | tr '\n' ' ')
sorted=$(printf '%s\n' "$listed" | LC_ALL=C sort -k1,1 -k2,2f | tr '\n' ' ')
case $order in *"module tensor "*"type Canvas "*"type Trainer "*)
    if [ "$order" = "$sorted" ]; then ok "help() lists modules then types, each sorted"
    else fail "help() lists modules then types, each sorted" "$order"; fi ;;
    *) fail "help() lists modules then types, each sorted" "$order" ;; esac
cols=$(screen | sed -n '/^nnlab: modules and types/,/^help(f)/p' | grep -E ' (module|type) ' | awk '{ print index($0, $2) }' | sort -u | wc -l)
if [ "$cols" = 1 ]; then ok "help() aligns its columns"; else fail "help() aligns its columns" "$cols different columns"; fi
line 'help(nn)'
wait_for '^nn: module with'
if screen | grep -q '_interrupt'; then fail "help lists no internal hooks" "$(screen | grep '_interrupt' | head -n 1)"
else ok "help lists no internal hooks"; fi

# ---- 6. Ctrl-C at the prompt
start
wait_for "$PROMPT"
type_text 'abc def'
key C-c
wait_for '\^C$'
line '3+4'
check "Ctrl-C clears a half-typed line" '^7$'
line 'function g('
wait_for '^   \.\.>'
key C-c
wait_for '\^C$' 5 2
line '2+3'
check "Ctrl-C drops a pending multi-line chunk" '^5$'

# ---- 7. Ctrl-C during a computation
start
wait_for "$PROMPT"
line 'x = 41'
line "print('looping') while true do end"
wait_for '^looping$'
key C-c
check "Ctrl-C stops a pure-Lua loop" 'interrupted' 2
line 'x'
check "objects survive the interrupt" '^41$'
line "print('catching') while true do pcall(function() for i = 1, 1e9 do end end) end"
wait_for '^catching$'
key C-c
sleep 0.2
key C-c
check "a second Ctrl-C stops a loop that catches errors" 'interrupted' 3 2
line 'x + 1'
check "the session goes on after it" '^42$'

# ---- 7b. Ctrl-C during tensor work: a loop of matmuls stops, what was made before stays
start
wait_for "$PROMPT"
define 'kept = tensor.arange(5)'
define 'a = tensor.randn(512, 512)'
line "print('matmuls') for i = 1, 1e9 do b = a:matmul(a) end"
wait_for '^matmuls$' 20
key C-c
check "Ctrl-C stops a loop of matmuls" 'interrupted$' 20
line 'kept:sum(), a:shape()[1]'
check "tensors made before the interrupt survive it" '^10\.0[[:space:]]+512$' 20
line 'a:matmul(a):shape()[2]'
check "matmul works after the interrupt" '^512$' 20

# ---- 7b2. Ctrl-C prints "interrupted" alone on every path: one big matmul (split into pieces, so
# it answers at once), nn.evaluate (Lua code of nnlab's own under a pcall), a loop in a function
start
wait_for "$PROMPT"
define 'big = tensor.randn(3000, 3000)'
line "print('one matmul') c = big:matmul(big):matmul(big):matmul(big)"
wait_for '^one matmul$' 20
key C-c
check "Ctrl-C stops one big matmul with \"interrupted\" alone" '^(\^C)?interrupted$' 20
define 'tensor.seed(2); ex = tensor.randn(100000, 64); ey = tensor.ones(100000):to("i32")'
define 'enet = nn.Sequential(nn.Linear(64, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10))'
line "print('evaluating') r = nn.evaluate(enet, nn.TensorDataset(ex, ey), {batch = 64})"
wait_for '^evaluating$' 20
sleep 0.3
key C-c
check "Ctrl-C stops nn.evaluate with \"interrupted\" alone" '^(\^C)?interrupted$' 20 2
define 'function spin() local n = 0; while true do n = n + 1 end end'
line "print('spinning') spin()"
wait_for '^spinning$' 20
key C-c
check "Ctrl-C stops a user function with \"interrupted\" alone" '^(\^C)?interrupted$' 20 3
define 'after_interrupts = 1'
if screen | grep -qE 'stack traceback|dsl/|stdin:[0-9]+: interrupted'; then
    fail "interrupts print no traceback and no place" "$(screen | grep -E 'traceback|dsl/|stdin:' | head -n 3 | tr '\n' '|')"
else ok "interrupts print no traceback and no place"; fi

# ---- 7c. Ctrl-C during t:fit pauses at a batch boundary; resume and fit continue
start
wait_for "$PROMPT"
define 'tensor.seed(1); x = tensor.randn(50000, 64); y = (tensor.rand(50000) * 10 - 0.5):to("i32") + 1'
define 'net = nn.Sequential(nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))'
define 't = nn.Trainer{net = net, data = nn.TensorDataset(x, y), batch = 64}'
progress='^epoch [0-9]+/[0-9]+ +step [0-9]+/782 +loss'
paused='^paused at epoch [0-9]+ step [0-9]+/782'
line 't:fit{epochs = 1000}'
if wait_for "$progress" 60; then key C-c; fi
check "Ctrl-C pauses t:fit at a batch boundary" "$paused" 30
check "fit returns the history and \"paused\"" '^history: [0-9]+ steps.*paused$' 30
define 's0 = t.steps'
line 't.paused, t.steps > 0, #t.history.loss == t.steps, t.pos > 0'
check "the trainer keeps its place" '^true[[:space:]]+true[[:space:]]+true[[:space:]]+true$' 20
line 't:resume()'
if wait_for "$progress" 60; then key C-c; fi
check "t:resume() continues and pauses again" "$paused" 30 2
define 's1 = t.steps'
line 's1 > s0'
check "resume trained more steps" '^true$' 20
line 't:fit()'
if wait_for "$progress" 60; then key C-c; fi
check "t:fit() continues too" "$paused" 30 3
line 't.steps > s1, 6 * 7'
check "the REPL still answers after training" '^true[[:space:]]+42$' 20
define 'slow = nn.Trainer{net = nn.Linear(64, 10), data = nn.TensorDataset(x, y), batch = 64}'
define 'slow:on_step(function() print("slow step") local c0 = sys.clock() repeat until sys.clock() - c0 > 3 end)'
line 'slow:fit{epochs = 1}'
if wait_for '^slow step$' 60; then key C-c; sleep 0.3; key C-c; fi
check "Ctrl-C twice during a long step of t:fit says it breaks in" '^\[interrupt pending' 30
check "and stops it with \"interrupted\"" '^(\^C)?interrupted$' 30
define 'after_fit_interrupts = 1'
if screen | grep -qE 'stack traceback|dsl/'; then
    fail "Ctrl-C twice during t:fit prints no traceback" "$(screen | grep -E 'traceback|dsl/' | head -n 3 | tr '\n' '|')"
else ok "Ctrl-C twice during t:fit prints no traceback"; fi

# ---- 7d. the pause message names what continues: the trainer's own global name at the prompt,
# no name for a trainer without one, and in a script with no prompt after it, the script
start
wait_for "$PROMPT"
define 'tensor.seed(1); px = tensor.randn(4096, 32); py = tensor.ones(4096):to("i32")'
define 'trainer = nn.Trainer{net = nn.Sequential(nn.Linear(32, 256), nn.ReLU(), nn.Linear(256, 2)), data = nn.TensorDataset(px, py), batch = 16}'
line 'trainer:fit{epochs = 1000}'
if wait_for '^epoch [0-9]+/1000[ :]' 60; then key C-c; fi
check "the pause names the trainer's global" '^paused at epoch [0-9]+ step [0-9]+/256 — trainer:fit\(\) or trainer:resume\(\) continues$' 30
define 'function run_local() local tl = nn.Trainer{net = nn.Linear(32, 2), data = nn.TensorDataset(px, py), batch = 1}; return tl:fit{epochs = 1000} end'
line 'run_local()'
if wait_for '^epoch [0-9]+/1000[ :]' 60; then key C-c; fi
check "a trainer without a global name is not given one" "^paused at epoch [0-9]+ step [0-9]+/4096 — no global names this trainer: the code holding it can call :fit\(\) or :resume\(\)$" 30
if screen | grep -q ' t:fit() or t:resume()'; then fail "the pause never names a t that does not exist" "$(tail_screen)"
else ok "the pause never names a t that does not exist"; fi
cat > "$tmp/fit_script.lua" <<'LUA'
local x, y = tensor.randn(4096, 32), tensor.ones(4096):to("i32")
local tr = nn.Trainer{net = nn.Linear(32, 2), data = nn.TensorDataset(x, y), batch = 1}
local _, how = tr:fit{epochs = 1000}
print("script goes on after fit: " .. tostring(how))
LUA
start fit_script.lua
if wait_for '^epoch [0-9]+/1000[ :]' 60; then key C-c; fi
check "in a script the pause says fit returns to it" '^paused at epoch [0-9]+ step [0-9]+/4096 — fit returns "paused" to the script' 30
check "and the script goes on" '^script goes on after fit: paused$' 30
if screen | grep -q ':resume()'; then fail "a script's pause names no method to type" "$(tail_screen)"
else ok "a script's pause names no method to type"; fi

# ---- 8. non-interactive modes
out=$("$NNLAB" -e 'print(1+2)' 2>&1); rc=$?
if [ "$rc" = 0 ] && [ "$out" = 3 ]; then ok "-e runs code"; else fail "-e runs code" "rc=$rc out=$out"; fi
out=$("$NNLAB" -e 'a = 1' -e 'print(a + 1)' 2>&1); rc=$?
if [ "$rc" = 0 ] && [ "$out" = 2 ]; then ok "-e repeats in order"; else fail "-e repeats in order" "rc=$rc out=$out"; fi
out=$("$NNLAB" -e 'error("bad")' 2>"$tmp/err"); rc=$?
if [ "$rc" = 1 ] && grep -q 'bad' "$tmp/err" && grep -q 'traceback' "$tmp/err"; then ok "-e error exits 1 with a traceback"
else fail "-e error exits 1 with a traceback" "rc=$rc stderr=$(tr '\n' '|' < "$tmp/err")"; fi
printf 'print(arg[0], arg[1], arg[2], select("#", ...))\n' > "$tmp/args.lua"
out=$("$NNLAB" "$tmp/args.lua" a b 2>&1); rc=$?
if [ "$rc" = 0 ] && [ "$out" = "$tmp/args.lua	a	b	2" ]; then ok "script sees arg and ..."
else fail "script sees arg and ..." "rc=$rc out=$out"; fi
out=$(echo 'print(5)' | "$NNLAB" 2>&1); rc=$?
if [ "$rc" = 0 ] && [ "$out" = 5 ]; then ok "stdin runs as a chunk"; else fail "stdin runs as a chunk" "rc=$rc out=$out"; fi
out=$(echo 'print(arg[1])' | "$NNLAB" - zz 2>&1); rc=$?
if [ "$rc" = 0 ] && [ "$out" = zz ]; then ok "script - reads stdin"; else fail "script - reads stdin" "rc=$rc out=$out"; fi
printf 'x = = 1\n' > "$tmp/syntax.lua"
out=$("$NNLAB" "$tmp/syntax.lua" 2>&1); rc=$?
case $out in *syntax.lua:1:*) named=1 ;; *) named=0 ;; esac
if [ "$rc" = 1 ] && [ "$named" = 1 ]; then ok "syntax error names the file"; else fail "syntax error names the file" "rc=$rc out=$out"; fi
out=$("$NNLAB" "$tmp/missing.lua" 2>&1); rc=$?
case $out in *missing.lua*) named=1 ;; *) named=0 ;; esac
if [ "$rc" = 1 ] && [ "$named" = 1 ]; then ok "missing script names the file"; else fail "missing script names the file" "rc=$rc out=$out"; fi
out=$("$NNLAB" -v 2>&1); rc=$?
case $out in "nnlab 0.1.0"*) v=1 ;; *) v=0 ;; esac
if [ "$rc" = 0 ] && [ "$v" = 1 ]; then ok "-v prints the version"; else fail "-v prints the version" "rc=$rc out=$out"; fi
out=$("$NNLAB" --help 2>&1); rc=$?
case $out in usage:*) v=1 ;; *) v=0 ;; esac
if [ "$rc" = 0 ] && [ "$v" = 1 ]; then ok "--help prints usage"; else fail "--help prints usage" "rc=$rc out=$out"; fi
"$NNLAB" --bogus > /dev/null 2>&1; rc=$?
if [ "$rc" = 1 ]; then ok "a bad option exits 1"; else fail "a bad option exits 1" "rc=$rc"; fi
# OpenMP threads spin briefly, then sleep while they wait (a long spin takes the core a busy
# neighbour needs): libgomp shows nnlab's spin count of 1000 by default (with the passive policy),
# the user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT stands, and programs nnlab starts do not
# inherit the default.
spins=$(OMP_DISPLAY_ENV=verbose "$NNLAB" -e '' 2>&1 | grep GOMP_SPINCOUNT | tail -n 1)
case $spins in *"'1000'"*) ok "OpenMP threads spin 1000 pauses, then sleep, by default" ;;
    *) fail "OpenMP threads spin 1000 pauses, then sleep, by default" "$spins" ;; esac
spins=$(OMP_WAIT_POLICY=active OMP_DISPLAY_ENV=verbose "$NNLAB" -e '' 2>&1 | grep GOMP_SPINCOUNT | tail -n 1)
case $spins in *"'0'"*|*"'1000'"*|"") fail "OMP_WAIT_POLICY=active from the user stands" "$spins" ;;
    *) ok "OMP_WAIT_POLICY=active from the user stands" ;; esac
spins=$(GOMP_SPINCOUNT=7 OMP_DISPLAY_ENV=verbose "$NNLAB" -e '' 2>&1 | grep GOMP_SPINCOUNT | tail -n 1)
case $spins in *"'7'"*) ok "GOMP_SPINCOUNT from the user stands" ;;
    *) fail "GOMP_SPINCOUNT from the user stands" "$spins" ;; esac
out=$("$NNLAB" -e 'print(os.getenv("OMP_WAIT_POLICY"), os.getenv("GOMP_SPINCOUNT"), os.getenv("NNLAB_OMP_WAIT_DEFAULT"))' 2>&1)
if [ "$out" = "nil	nil	nil" ]; then ok "programs nnlab runs keep their own OpenMP default"
else fail "programs nnlab runs keep their own OpenMP default" "$out"; fi
# data.cifar10() from any folder: it looks beside the program too (<bin>/../data, where `make data`
# puts it for build/nnlab), and names every place it looked when the data is nowhere
mkdir -p "$tmp/inst/bin" "$tmp/elsewhere"
cp "$NNLAB" "$tmp/inst/bin/nnlab"
(cd "$tmp/elsewhere" && env -u NNLAB_DATA "$tmp/inst/bin/nnlab" -e 'data.cifar10()' > "$tmp/nodata.out" 2>&1)
if grep -q "looked in ./data/cifar-10-batches-bin, $tmp/inst/bin/../data/cifar-10-batches-bin" "$tmp/nodata.out"; then
    ok "data.cifar10 names every place it looked"
else fail "data.cifar10 names every place it looked" "$(cat "$tmp/nodata.out")"; fi
mkdir -p "$tmp/inst/data"
"$NNLAB" -e "local x = tensor.rand(4, 3, 32, 32); local d = data.from_tensors(x, {1, 2, 1, 2}); data.save_cifar('$tmp/inst/data/cifar-10-batches-bin', d, d)" > /dev/null 2>&1
out=$(cd "$tmp/elsewhere" && env -u NNLAB_DATA "$tmp/inst/bin/nnlab" -e 'local tr, te = data.cifar10(); print(tr:size() + te:size())' 2>&1)
if [ "$out" = 8 ]; then ok "data.cifar10 finds the data beside the program from another folder"
else fail "data.cifar10 finds the data beside the program from another folder" "$out"; fi
# ... and an example that cannot have CIFAR-10 says so loudly before it falls back
mv "$tmp/inst/data" "$tmp/inst/data.off"
repo=$(pwd)
(cd "$tmp/elsewhere" && env -u NNLAB_DATA timeout 60 "$tmp/inst/bin/nnlab" "$repo/examples/watch_features.lua" 1 > "$tmp/fallback.out" 2>&1)
if grep -q '^\*\*\* CIFAR-10 NOT FOUND' "$tmp/fallback.out" && grep -q '^\*\*\* THIS RUN USES GENERATED PICTURES INSTEAD' "$tmp/fallback.out"; then
    ok "an example's fallback is loud"
else fail "an example's fallback is loud" "$(head -n 5 "$tmp/fallback.out" | tr '\n' '|')"; fi
out=$("$NNLAB" -e 'os.exit(3)' 2>&1); rc=$?
if [ "$rc" = 3 ]; then ok "os.exit(3) exits 3"; else fail "os.exit(3) exits 3" "rc=$rc out=$out"; fi

printf 'print("from-script")\ny = 5\n' > "$tmp/inter.lua"
start -i inter.lua
check "-i runs the script" '^from-script$'
check "-i then shows a prompt" "$PROMPT"
line 'y * 2'
check "-i keeps the script's globals" '^10$'

printf 'print("spinning")\nwhile true do end\n' > "$tmp/spin.lua"
start spin.lua
wait_for '^spinning$'
key C-c
check "Ctrl-C stops a script with status 130" '^\[exit:130\]$' 3

# ---- 9. Ctrl-D and os.exit
start
wait_for "$PROMPT"
key C-d
check "Ctrl-D exits with status 0" '^\[exit:0\]$'
start
wait_for "$PROMPT"
line 'os.exit(4)'
check "os.exit(4) in the REPL exits 4" '^\[exit:4\]$'

# ---- 10. top-level locals persist; the journal replays the session to the same weights
start
wait_for "$PROMPT"
define 'local K, N = 3, 200'
line 'tensor.randn(K * N):numel()'
check "a top-level local persists to the next line" '^600$'
define 'x = 5'
define 'local x = 7'
line 'x'
check "local x then x shows the new value, not an older global" '^7$'
define 'tensor.seed(11)'
line 'local function sq(v)'
line '  local y = v * v'
line '  return y'
line 'end'
line 'sq(4)'
check "a multi-line local function persists" '^16$'
line 'error("boom")'
check "an error line" 'boom'
define 'net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))'
define 'local xs, ys = tensor.randn(32, 4), {} for i = 1, 32 do ys[i] = i % 2 + 1 end'
define 't = nn.Trainer{net = net, data = nn.TensorDataset(xs, tensor.from(ys)), batch = 8, verbose = false}'
type_text 'net = nil'
key C-c
wait_for '\^C$'
define 't:fit{epochs = 2}'
define 'function digest(m) local s = {} for _, p in ipairs(m:parameters()) do for _, v in ipairs(p.value:reshape(-1):totable()) do s[#s + 1] = string.format("%a", v) end end local h = 0 for c in table.concat(s, ","):gmatch(".") do h = (h * 31 + c:byte()) % 4294967296 end return #s .. ":" .. h end'
line 'print("WEIGHTS " .. digest(net))'
check "the session's weights" '^WEIGHTS [0-9]+:'
define 'journal.drop()'
define 'journal.save("exp.lua")'
session_hash=$(screen | grep -E '^WEIGHTS [0-9]+:' | tail -n 1)
replay_hash=$(cd "$tmp" && "$NNLAB" -e 'dofile("exp.lua"); print("WEIGHTS " .. digest(net))' 2>&1 | tail -n 1)
if [ -n "$session_hash" ] && [ "$session_hash" = "$replay_hash" ]; then
    ok "the saved journal replays to the same weights bit for bit"
else
    fail "the saved journal replays to the same weights bit for bit" "session '$session_hash', replay '$replay_hash'"
fi
if grep -q 'boom' "$tmp/exp.lua" || grep -q 'net = nil' "$tmp/exp.lua"; then
    fail "the journal leaves out the error line and the line cancelled by Ctrl-C" "$(cat "$tmp/exp.lua")"
else
    ok "the journal leaves out the error line and the line cancelled by Ctrl-C"
fi
if grep -q '^journal.start{seed = ' "$tmp/exp.lua" && grep -q '^-- nnlab 0\.1\.0' "$tmp/exp.lua"; then
    ok "the journal's header: version and the generator's starting state"
else
    fail "the journal's header: version and the generator's starting state" "$(head -n 6 "$tmp/exp.lua")"
fi

# ---- 11. a lesson at the prompt: start, a wrong answer, a right one (a top-level local), a hint,
# next; progress in $HOME/.nnlab/lessons, resumed by a new session
start
wait_for "$PROMPT"
line 'lesson.start("tensors")'
check "lesson.start shows the first step" '^== Tensors and broadcasting: step 1 of 4$'
line 'a = tensor.zeros(2, 3)'
line 'lesson.check()'
check "a wrong answer is named precisely" '^NOT YET - step 1 of 4: a\[1,1\] is 0, expected 1$'
line 'lesson.next()'
check "next waits for a pass" '^step 1 is not passed yet'
line 'local a = tensor.arange(1, 7):reshape(2, 3)'
line 'lesson.check()'
check "the right answer passes" '^PASS - step 1 of 4: a is right'
line 'lesson.next()'
check "next shows step 2" '^== Tensors and broadcasting: step 2 of 4$'
line 'lesson.hint()'
check "a hint" '^hint 1 of 2: '
line 'lesson.check()'
check "a check names what is missing" '^NOT YET - step 2 of 4: c is not set yet'
if grep -qx 'tensors 2 1' "$tmp/.nnlab/lessons" 2>/dev/null; then ok "progress is kept in \$HOME/.nnlab/lessons"
else fail "progress is kept in \$HOME/.nnlab/lessons" "$(cat "$tmp/.nnlab/lessons" 2>&1)"; fi
start
wait_for "$PROMPT"
line 'lesson.start("tensors")'
check "a new session resumes at step 2" '^== Tensors and broadcasting: step 2 of 4$'
define 'lesson.define{"Spin", steps = {{"forever", check = function() while true do end end}}}'
define 'lesson.start("spin")'
line 'lesson.check()'
sleep 0.3
key C-c
check "Ctrl-C stops a check: interrupted alone" '^(\^C)?interrupted$'
line 'print("after " .. 6 * 7)'
check "the prompt goes on after it" '^after 42$'

# ---- start-up time: information only, not an assertion
t0=$(date +%s%N)
i=0
while [ "$i" -lt 20 ]; do "$NNLAB" -e '' || break; i=$((i + 1)); done
t1=$(date +%s%N)
echo "# info: start-up $(awk "BEGIN { printf \"%.1f\", ($t1 - $t0) / 20 / 1e6 }") ms (mean of 20 runs of nnlab -e '')"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
