#!/bin/sh
# two_hosts.sh: two "machines" on this one: network namespaces joined by a veth pair, one rank in
# each, started by mpirun through a launcher that enters the namespace (ip netns exec) where a
# real cluster would use ssh, talking over Open MPI's TCP transport on the veth addresses. Checks
# that 2 ranks on two hosts train the seed CNN to the same weights as one process. Needs root (to
# make namespaces): otherwise skipped with its reason. Last line: "N passed, N failed".
NNLAB=${NNLAB:-./build/nnlab}
D=tests/dist
if [ "$(id -u)" != 0 ] || ! command -v ip >/dev/null 2>&1 || ! command -v mpirun >/dev/null 2>&1; then
    echo "SKIP two hosts: they need root, ip(8) and mpirun (network namespaces)"
    echo "0 passed, 0 failed"; exit 0
fi
A=nnlab_a$$; B=nnlab_b$$
tmp=$(mktemp -d)
cleanup() { ip netns del $A 2>/dev/null; ip netns del $B 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
if ! { ip netns add $A && ip netns add $B &&
       ip link add va$$ type veth peer name vb$$ &&
       ip link set va$$ netns $A && ip link set vb$$ netns $B &&
       ip -n $A addr add 10.77.0.1/24 dev va$$ && ip -n $B addr add 10.77.0.2/24 dev vb$$ &&
       ip -n $A link set va$$ up && ip -n $B link set vb$$ up &&
       ip -n $A link set lo up && ip -n $B link set lo up; } 2>"$tmp/ip.err"; then
    echo "SKIP two hosts: cannot make network namespaces here: $(head -n 1 "$tmp/ip.err")"
    echo "0 passed, 0 failed"; exit 0
fi
# mpirun's launcher (instead of ssh): "agent [options] host command..." runs the command in the
# host's namespace.
cat > "$tmp/agent" <<AGENT
#!/bin/sh
while [ "\${1#-}" != "\$1" ]; do shift; done
host=\$1; shift
case \$host in 10.77.0.2) ns=$B ;; *) ns=$A ;; esac
exec ip netns exec \$ns sh -c "\$*"
AGENT
chmod +x "$tmp/agent"
# Under SAN=1 the MPI processes are not leak-checked (see tests/dist/run.sh).
NOLEAK="ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 NNLAB_THREADS=1
pass=0; fail=0
timeout 120 "$NNLAB" $D/train.lua "$tmp/one" cnn 64 10 &&
timeout 60 env $NOLEAK ip netns exec $A mpirun --mca plm_rsh_agent "$tmp/agent" --mca btl tcp,self \
    --mca btl_tcp_if_include 10.77.0.0/24 --mca oob_tcp_if_include 10.77.0.0/24 -H 10.77.0.1,10.77.0.2 -np 2 \
    "$PWD/$NNLAB" -e 'local f = io.popen("ip -o -4 addr show scope global"); print("rank " .. dist.rank() .. " on " .. (f:read("a"):match("inet ([%d.]+)") or "?")); f:close()' > "$tmp/where" 2>&1 &&
grep -q "rank 1 on 10.77.0.1" "$tmp/where" && grep -q "rank 2 on 10.77.0.2" "$tmp/where" &&
timeout 120 env $NOLEAK ip netns exec $A mpirun --mca plm_rsh_agent "$tmp/agent" --mca btl tcp,self \
    --mca btl_tcp_if_include 10.77.0.0/24 --mca oob_tcp_if_include 10.77.0.0/24 \
    -H 10.77.0.1,10.77.0.2 -np 2 -x NNLAB_THREADS "$PWD/$NNLAB" $D/train.lua "$tmp/two" cnn 32 10 \
    > "$tmp/log" 2>&1 &&
"$NNLAB" $D/compare.lua "$tmp/one" "$tmp/two" 1e-5 && pass=1 || { cat "$tmp/log"; fail=1; }
[ $pass = 1 ] && echo "ok two hosts over a veth pair: 2 ranks x 32 == 1 process x 64 (10 steps)" ||
    { cat "$tmp/where" 2>/dev/null; echo "FAIL two hosts over a veth pair"; }
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
