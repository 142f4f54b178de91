#!/bin/sh
# run.sh: the viz window on a real X server (Xvfb): tests/viz/window.lua (open, the dashboard
# during training, read-back layout, tab, resize, close, reopen, pause), then the REPL driven
# through tmux in the same display: the window stays up while the prompt waits, follows a resize
# there, and the REPL answers with the window open and after closing it. Xvfb, tmux, xwininfo and
# the X11 headers come with `make deps` (xvfb, tmux, x11-utils, libx11-dev): one missing, or an Xvfb
# that cannot start, is a failure with the reason, not a skip, so a broken window cannot pass
# unnoticed. Last line "N passed, N failed". VIZ_SHOTS=dir keeps the window's screenshots.
NNLAB=${NNLAB:-./build/nnlab}
case $NNLAB in /*) ;; *) NNLAB=$(pwd)/$NNLAB ;; esac
passed=0
failed=0
ok() { echo "ok - $1"; passed=$((passed + 1)); }
fail() { echo "FAIL - $1: $2"; failed=$((failed + 1)); }
summary() { echo "$passed passed, $failed failed"; }
# give_up WHAT WHY: a failure that stops the suite (nothing after it could run).
give_up() { fail "$1" "$2 (no further window checks ran)"; summary; exit 1; }

command -v Xvfb > /dev/null 2>&1 || give_up "Xvfb" "not installed (make deps installs xvfb)"
tmp=$(mktemp -d)
SOCK=nnlab-viz-$$
sock_file=${TMUX_TMPDIR:-/tmp}/tmux-$(id -u)/$SOCK
xpid=
trap 'tmux -L "$SOCK" kill-server 2> /dev/null; [ -n "$xpid" ] && kill "$xpid" 2> /dev/null; rm -rf "$tmp"; rm -f "$sock_file"' EXIT
trap 'exit 1' INT TERM

# Xvfb picks a free display and writes its number to fd 3 once it accepts clients.
Xvfb -displayfd 3 -screen 0 1280x800x24 -nolisten tcp 3> "$tmp/display" > "$tmp/xvfb.log" 2>&1 &
xpid=$!
i=0
while [ ! -s "$tmp/display" ] && [ "$i" -lt 200 ] && kill -0 "$xpid" 2> /dev/null; do
    sleep 0.05
    i=$((i + 1))
done
if [ ! -s "$tmp/display" ]; then
    if kill -0 "$xpid" 2> /dev/null; then why="no display after 10 s"; else why="it exited"; fi
    give_up "Xvfb" "cannot start ($why): $(tail -n 1 "$tmp/xvfb.log")"
fi
DISPLAY=:$(head -n 1 "$tmp/display")
export DISPLAY
# Under SAN=1: libdbus (opened by SDL's video) leaks one buffer; nothing of ours is suppressed.
LSAN_OPTIONS="${LSAN_OPTIONS:+$LSAN_OPTIONS:}suppressions=$(pwd)/tests/viz/lsan.supp:print_suppressions=0"
export LSAN_OPTIONS
unset WAYLAND_DISPLAY SDL_VIDEODRIVER
echo "Xvfb on $DISPLAY"

# ---- 1. the window from a script
"$NNLAB" tests/lua/harness.lua tests/viz/window.lua > "$tmp/window.out" 2>&1
rc=$?
cat "$tmp/window.out"
line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$tmp/window.out" | tail -n 1)
if [ -z "$line" ]; then
    fail "window.lua" "exited $rc without a summary"
else
    passed=$((passed + ${line%% passed*}))
    f=${line#*passed, }
    failed=$((failed + ${f%% failed*}))
    [ "$rc" -ne 0 ] && [ "${f%% failed*}" -eq 0 ] && fail "window.lua" "exited $rc"
fi

# ---- 2. the REPL with the window open (tmux in the same display)
command -v tmux > /dev/null 2>&1 || give_up "repl" "tmux is not installed (make deps installs it)"
command -v xwininfo > /dev/null 2>&1 ||
    fail "xwininfo" "not installed (make deps installs x11-utils): the window's presence is not checked"
tm() { tmux -L "$SOCK" -f /dev/null "$@"; }
screen() { tm capture-pane -p -J -t s -S -200; }
line() { tm send-keys -t s -l "$1"; tm send-keys -t s Enter; }
# check NAME PATTERN [TIMEOUT]: waits up to TIMEOUT seconds (default 10) for PATTERN on screen
# (tmux shows print's tabs as spaces).
check() {
    limit=$(( ${3:-10} * 20 ))
    i=0
    while [ "$i" -lt "$limit" ]; do
        if screen | grep -qE -- "$2"; then ok "$1"; return 0; fi
        sleep 0.05
        i=$((i + 1))
    done
    fail "$1" "no /$2/ on screen: $(screen | grep -v '^ *$' | tail -n 3 | tr '\n' '|')"
}
window_listed() { xwininfo -root -tree 2> /dev/null | grep -q '"nnlab: '; }

tm new-session -d -s s -x 150 -y 40 \
    "cd '$tmp' && DISPLAY='$DISPLAY' NNLAB_HISTORY='$tmp/history' '$NNLAB'; echo \"[exit:\$?]\"; sleep 600"
check "prompt" '^nnlab>'
line 'print("show", viz.show())'
check "viz.show() at the prompt" '^show +true'
line 'lb = {} for i = 1, 32 do lb[i] = i % 3 + 1 end; ds = nn.TensorDataset(tensor.rand(32, 3, 8, 8), tensor.from(lb))'
line 't = nn.Trainer{net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 3)), data = ds, batch = 8, verbose = false}'
line 'viz.dashboard(t, {every = 2}); t:fit{epochs = 2, eval = ds}; print("fit", t.steps)'
check "training with the dashboard" '^fit +8$' 30
line '1 + 1'
check "the REPL answers with the window open" '^2$'
if command -v xwininfo > /dev/null 2>&1; then
    if window_listed; then ok "the window is on the display"; else fail "window" "no nnlab window in xwininfo"; fi
fi
# While the prompt waits, the idle hook handles the resize and redraws the dashboard at the new
# size: no letterbox band (grey 245) at the top of the window.
line 'viz.resize(900, 560)'
sleep 1
line 's = viz.screenshot(); print("shot", s:size()); print("top", s:pixel(450, 2))'
check "the window follows a resize while the prompt waits" '^shot +900 +560'
check "the dashboard was redrawn at the new size" '^top +255 +255 +255$'
line 'viz.close(); print("closed", viz.status().open)'
check "viz.close()" '^closed +false$'
if command -v xwininfo > /dev/null 2>&1; then
    sleep 0.3
    if window_listed; then fail "close" "the window is still on the display"; else ok "the window is gone"; fi
fi
line '2 + 3'
check "the REPL answers after closing" '^5$'
line 'print("again", viz.show(), viz.status().view)'
check "viz.show() reopens" '^again +true +dashboard$'

# Closing the window as a window manager does (WM_DELETE_WINDOW), at the prompt and during a fit.
if cc -o "$tmp/wm_close" tests/viz/wm_close.c -lX11 2> "$tmp/cc.log"; then
    "$tmp/wm_close" || fail "wm_close" "found no window to close"
    sleep 0.3
    line 'print("wm", viz.status().open); print(3 + 4)'
    check "the window manager's close at the prompt closes only the window" '^wm +false$'
    check "the REPL answers after it" '^7$'
    # (each step is made to last 10 ms more, so the fit takes about 4 s)
    line 'print(viz.show()); t2 = nn.Trainer{net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 3)), data = ds, batch = 2, verbose = false}; viz.dashboard(t2, {every = 20}); t2:on_step(function() local c = sys.clock() while sys.clock() - c < 0.01 do end end); t2:fit{epochs = 25}; print("run", t2.steps, viz.status().open)'
    sleep 1.5
    "$tmp/wm_close" || fail "wm_close" "found no window during the fit"
    check "closing the window during a fit does not stop it" '^run +400 +false$' 60
else
    fail "wm_close" "cannot build tests/viz/wm_close.c (make deps installs libx11-dev): $(tail -n 1 "$tmp/cc.log")"
fi
tm send-keys -t s C-d
check "Ctrl-D ends the REPL with the window open" '^\[exit:0\]$'
summary
[ "$failed" -eq 0 ]
