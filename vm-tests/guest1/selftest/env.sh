#!/bin/bash
# Placeholder "test executable" for VMTEST_SELFTEST=1: checks the guest
# plumbing the real tests rely on, printing libtest-style lines so the
# guest's counting works the same way.
set -u
pass=0 fail=0
check() {
    local name=$1; shift
    if "$@" >/dev/null 2>&1; then echo "test $name ... ok"; pass=$((pass + 1))
    else echo "test $name ... FAILED"; fail=$((fail + 1)); fi
}
cg=/sys/fs/cgroup
check ci_env [ "${CI:-}" = true ]
check bash_is_bash bash -c '[ -n "$BASH_VERSION" ]'
check cgroup2_nsdelegate grep -qE ' /sys/fs/cgroup .* - cgroup2 .*nsdelegate' /proc/self/mountinfo
check v1_freezer_mounted grep -qE ' /run/v1-freezer .* - cgroup .*freezer' /proc/self/mountinfo
check test_tools sh -c 'for t in setsid unshare nohup sleep setpriv useradd python3 stress-ng redis-server; do command -v $t || exit 1; done'
check python3_json python3 -c 'import json, argparse, subprocess, threading'
check loopback_up sh -c 'grep -q "^ *lo:" /proc/net/dev && [ "$(cat /sys/class/net/lo/operstate)" != down ]'

# A process tree in a fresh cgroup dies of cgroup.kill and the cgroup empties.
kill_tree() {
    mkdir $cg/selftest-kill || return 1
    # The subshell moves itself in before forking, so the whole tree is inside.
    ( echo 0 >$cg/selftest-kill/cgroup.procs; sleep 1000 & sleep 1000 & wait ) &
    sleep 0.3
    grep -q 'populated 1' $cg/selftest-kill/cgroup.events || return 1
    echo 1 >$cg/selftest-kill/cgroup.kill
    for _ in $(seq 50); do
        grep -q 'populated 0' $cg/selftest-kill/cgroup.events && break
        sleep 0.1
    done
    wait
    grep -q 'populated 0' $cg/selftest-kill/cgroup.events && rmdir $cg/selftest-kill
}
check cgroup_kill kill_tree

# v1 freezer: a frozen process survives SIGKILL until thawed.
v1_freeze() {
    local f=/run/v1-freezer/selftest pid
    mkdir $f || return 1
    sleep 1000 & pid=$!
    echo $pid >$f/tasks
    echo FROZEN >$f/freezer.state
    sleep 0.3
    kill -9 $pid
    sleep 0.3
    local alive=no
    [ -d /proc/$pid ] && [ "$(awk '{print $3}' /proc/$pid/stat)" != Z ] && alive=yes
    echo THAWED >$f/freezer.state
    wait $pid
    rmdir $f
    [ $alive = yes ]
}
check v1_freezer_survivor v1_freeze

echo
if [ $fail = 0 ]; then r=ok; else r=FAILED; fi
echo "test result: $r. $pass passed; $fail failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s"
[ $fail = 0 ]
