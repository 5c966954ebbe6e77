#!/bin/bash
# Test driver of guest 2: a minimal Debian booted with systemd as PID 1.
# Runs as vmtest.service (see vmtest.service). Checks that gracekill behaves
# inside systemd's delegation model:
#   - its task cgroups live only inside a Delegate=yes unit's own subtree,
#   - `gracekill stop` works there (graceful and killed outcomes),
#   - systemd's view stays consistent: the unit does not fail, and
#     `systemctl stop` of the delegating unit still ends every process,
#   - `gracekill run` inside a `systemd-run --scope -p Delegate=yes`,
#   - `gracekill stop` pointed at a cgroup systemd made for a plain transient
#     scope (what happens is printed as OBSERVED for the README).
# Prints libtest-like "test NAME ... ok|FAILED" lines, sends VMTEST-* lines
# to ttyS1 and ends the VM with the status byte on port 0xf4 (0 pass, 1 fail,
# 2 setup error).
#
# Called as `driver.sh deleg-main` it is instead the main process of the
# delegating unit gk-deleg.service (started by the driver).
set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
cg=/sys/fs/cgroup
gk=/usr/local/bin/gracekill
state=/run/vmtest
mkdir -p "$state"

own_cgroup() { sed -n 's/^0:://p' "/proc/$1/cgroup" 2>/dev/null; }

# Job bodies, started in their own cgroups inside the delegated unit.
#  web:      handles SIGTERM, "flushes" and exits 0: a graceful stop.
#  stubborn: ignores SIGTERM (sleep inherits that): needs the final SIGKILL.
#  tree:     leaves escapees (setsid, nohup, background) for systemctl stop.
job_body() {
    case $1 in
        web) echo "trap 'echo flushed >$state/web.flushed; exit 0' TERM; while :; do sleep 0.2; done" ;;
        stubborn) echo "trap '' TERM; while :; do sleep 1; done" ;;
        tree) echo "setsid sleep 1000 & nohup sleep 1000 >/dev/null 2>&1 & (sleep 1000 &) ; sleep 1000 & wait" ;;
    esac
}

# ------------------------------------------------------------ deleg-main
# The unit's main process. Its unit cgroup is delegated to it: it moves itself
# into a leaf (a process must not sit in a cgroup that has children once
# controllers get enabled) and starts one task cgroup per job under its own
# cgroup, with `gracekill run` when the binary has it, by hand otherwise.
if [[ ${1:-} == deleg-main ]]; then
    own=$(own_cgroup self)
    mkdir "$cg$own/supervisor" && echo 0 >"$cg$own/supervisor/cgroup.procs" || exit 1
    echo "$own" >"$state/deleg.cgroup"
    for job in web stubborn tree; do
        if [[ ${VMTEST_USE_RUN:-0} == 1 ]]; then
            ( "$gk" run --parent "$cg$own" --name "$job" -- sh -c "$(job_body $job)"
              echo $? >"$state/$job.rc" ) &
        else
            mkdir "$cg$own/$job"
            # Move ourselves in before exec, so every descendant starts inside.
            ( echo 0 >"$cg$own/$job/cgroup.procs" && exec sh -c "$(job_body $job)" ) &
        fi
    done
    echo "deleg-main: supervising jobs in $own"
    sleep infinity
    exit 0
fi

# The command of the delegated scope: `gracekill run` with its own (scope)
# cgroup as parent; the job exits 7 on SIGTERM to show the status passthrough.
if [[ ${1:-} == scope-job ]]; then
    exec "$gk" run --parent "$cg$(own_cgroup self)" --name job -- \
        sh -c 'trap "exit 7" TERM; sleep 1000 & wait'
fi

# ------------------------------------------------------------ driver
pass=0 fail=0 failed_names=()
why=

result() { printf '%s\n' "$*" >/dev/ttyS1; }
check() {
    local name=$1; shift
    why=
    local t0=$SECONDS
    if "$@"; then
        echo "test $name ... ok"; pass=$((pass + 1)); result "VMTEST-CHECK $name ok $((SECONDS - t0))s"
    else
        echo "test $name ... FAILED${why:+: $why}"; fail=$((fail + 1)); failed_names+=("$name")
        result "VMTEST-CHECK $name FAILED $((SECONDS - t0))s $why"
    fi
}
skip() { echo "test $1 ... ignored ($2)"; result "VMTEST-CHECK $1 skipped $2"; }
observe() { echo "OBSERVED: $*"; result "VMTEST-OBSERVED $*"; }

finish() {
    local status=$1
    echo
    echo "vmtest: [uptime $(cut -d" " -f1 /proc/uptime)s] guest2 summary: $pass passed, $fail failed${failed_names:+ (${failed_names[*]})}"
    result "VMTEST-RESULT status=$status passed=$pass failed=$fail broken=${failed_names[*]:-none}"
    sync
    printf "\\$(printf %03o "$status")" | dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null
    # Only reached without isa-debug-exit; SuccessAction/FailureAction power off.
    exit "$status"
}

# wait_for SECONDS CMD...: poll until CMD succeeds.
wait_for() {
    local deadline=$((SECONDS + $1)); shift
    until "$@"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
}
populated() { grep -qx 'populated 1' "$1/cgroup.events" 2>/dev/null; }
# A cgroup systemd manages may vanish the moment it empties: gone == empty.
empty_or_gone() { [[ ! -e $1/cgroup.events ]] || grep -qx 'populated 0' "$1/cgroup.events" 2>/dev/null; }
all_pids_under() { find "$1" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -un; }
alive() { [[ -e /proc/$1 ]] && [[ $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) != Z ]]; }
outcome_of() { grep -o '"outcome" *: *"[a-z]*"' <<<"$1" | sed 's/.*"\([a-z]*\)"$/\1/' | head -1; }
prop() { systemctl show -P "$2" "$1" 2>/dev/null; }
has_cgroup() { [[ -n $(prop "$1" ControlGroup) ]]; }

echo "vmtest: [uptime $(cut -d" " -f1 /proc/uptime)s] guest2 up: kernel $(uname -r), PID 1 is $(cat /proc/1/comm), systemd $(systemctl --version | awk 'NR == 1 {print $2}')"
echo "vmtest: system state: $(systemctl is-system-running 2>&1)"

t_systemd_pid1() {
    [[ $(cat /proc/1/comm) == systemd ]] || { why="PID 1 is $(cat /proc/1/comm)"; return 1; }
    grep -qE ' /sys/fs/cgroup .* - cgroup2 ' /proc/self/mountinfo || { why="no cgroup2 at /sys/fs/cgroup"; return 1; }
}
check systemd_is_pid1_on_pure_cgroup2 t_systemd_pid1

have_gk=0 have_run=0
if [[ -x $gk ]]; then
    have_gk=1
    if "$gk" run --help >/dev/null 2>&1; then have_run=1; fi
    echo "vmtest: gracekill present; 'run' subcommand: $([[ $have_run == 1 ]] && echo yes || echo no)"
elif [[ -e /vmtest/selftest ]]; then
    echo "vmtest: no gracekill binary (selftest): checking the systemd plumbing only"
else
    echo "vmtest: GUEST SETUP ERROR: $gk missing"
    finish 2
fi

# ---- 1. a Delegate=yes service that owns the task cgroups
# Stale state would make the checks below lie.
rm -f "$state"/*.rc "$state"/web.flushed "$state"/deleg.cgroup
# TimeoutStopSec: a leftover that ignores SIGTERM should fail the check
# quickly (Result=timeout) rather than after systemd's default 90 s.
systemd-run --quiet --unit=gk-deleg -p Delegate=yes -p Type=exec -p TimeoutStopSec=20s \
    --setenv=VMTEST_USE_RUN=$have_run /vmtest/driver.sh deleg-main
own=
t_deleg_started() {
    wait_for 30 test -s "$state/deleg.cgroup" || { why="deleg-main did not start"; return 1; }
    own=$(cat "$state/deleg.cgroup")
    [[ $own == "$(prop gk-deleg.service ControlGroup)" ]] \
        || { why="unit cgroup '$(prop gk-deleg.service ControlGroup)' vs seen '$own'"; return 1; }
    [[ $(prop gk-deleg.service Delegate) == yes ]] || { why="Delegate is not yes"; return 1; }
    local j
    for j in web stubborn tree; do
        wait_for 30 populated "$cg$own/$j" || { why="job $j never populated $own/$j"; return 1; }
    done
}
check delegated_unit_starts_tasks_in_own_subtree t_deleg_started
[[ -n $own ]] || own=$(prop gk-deleg.service ControlGroup)
echo "vmtest: delegated unit cgroup: $own"
systemd-cgls --no-pager -u gk-deleg.service 2>/dev/null | sed 's/^/  /'

t_no_cgroups_outside() {
    # Every job process sits below the unit's own cgroup, and nothing was
    # created at gracekill's default root.
    local p c
    for p in $(all_pids_under "$cg$own"); do
        c=$(own_cgroup "$p") || continue
        [[ $c == "$own"/* ]] || { why="pid $p is in $c"; return 1; }
    done
    [[ ! -e $cg/gracekill ]] || { why="$cg/gracekill exists"; return 1; }
    local stray
    stray=$(find "$cg" -mindepth 1 -type d \( -name web -o -name stubborn -o -name tree \) | grep -v "^$cg$own/" || true)
    [[ -z $stray ]] || { why="task cgroups outside the unit: $stray"; return 1; }
}
check task_cgroups_only_inside_delegated_subtree t_no_cgroups_outside

if [[ $have_gk == 1 ]]; then
    # ---- 2. graceful stop of a job, by bare name under GRACEKILL_ROOT
    t_stop_graceful() {
        local out rc
        out=$(GRACEKILL_ROOT=$own timeout 120 "$gk" stop --grace 30s --json web); rc=$?
        echo "  gracekill stop web -> exit $rc: $out"
        [[ $rc == 0 ]] || { why="exit $rc, expected 0"; return 1; }
        [[ $(outcome_of "$out") == graceful ]] || { why="outcome '$(outcome_of "$out")', expected graceful"; return 1; }
        [[ -e $state/web.flushed ]] || { why="the job's SIGTERM handler did not run"; return 1; }
        empty_or_gone "$cg$own/web" || { why="$own/web still populated"; return 1; }
        if [[ $have_run == 1 ]]; then
            wait_for 20 test -s "$state/web.rc" || { why="gracekill run did not return"; return 1; }
            [[ $(cat "$state/web.rc") == 0 ]] || { why="gracekill run exited $(cat "$state/web.rc"), job exited 0"; return 1; }
        fi
    }
    check stop_graceful_in_delegated_unit t_stop_graceful

    # ---- 3. a job that ignores SIGTERM, by mount-relative path
    t_stop_killed() {
        local out rc
        out=$(timeout 120 "$gk" stop --grace 2s --json "$own/stubborn"); rc=$?
        echo "  gracekill stop $own/stubborn -> exit $rc: $out"
        [[ $rc == 3 ]] || { why="exit $rc, expected 3 (killed)"; return 1; }
        [[ $(outcome_of "$out") == killed ]] || { why="outcome '$(outcome_of "$out")', expected killed"; return 1; }
        empty_or_gone "$cg$own/stubborn" || { why="$own/stubborn still populated"; return 1; }
        if [[ $have_run == 1 ]]; then
            wait_for 20 test -s "$state/stubborn.rc" || { why="gracekill run did not return"; return 1; }
            echo "  gracekill run for the killed job exited $(cat "$state/stubborn.rc")"
        fi
    }
    check stop_killed_in_delegated_unit t_stop_killed

    # ---- 4. systemd did not notice anything wrong
    t_unit_healthy() {
        local a r n
        a=$(prop gk-deleg.service ActiveState) r=$(prop gk-deleg.service Result) n=$(prop gk-deleg.service NRestarts)
        [[ $a == active && $r == success && $n == 0 ]] || { why="ActiveState=$a Result=$r NRestarts=$n"; return 1; }
        populated "$cg$own/supervisor" || { why="the unit's main process is gone"; return 1; }
    }
    check delegating_unit_stays_active_after_stops t_unit_healthy
else
    skip stop_graceful_in_delegated_unit "no gracekill binary"
    skip stop_killed_in_delegated_unit "no gracekill binary"
    # Without gracekill the SIGTERM-ignoring job would make systemctl stop
    # wait for its timeout and mark the unit failed: end it by hand.
    echo 1 >"$cg$own/stubborn/cgroup.kill"
fi

# ---- 5. systemctl stop of the delegating unit still ends everything,
# including the escapees of the tree job and anything gracekill left.
t_systemctl_stop() {
    local pids p left=()
    pids=$(all_pids_under "$cg$own")
    [[ -n $pids ]] || { why="no processes to stop"; return 1; }
    echo "  processes in $own before systemctl stop: $(echo $pids)"
    timeout 120 systemctl stop gk-deleg.service || { why="systemctl stop failed"; return 1; }
    for p in $pids; do alive "$p" && left+=("$p"); done
    ((${#left[@]} == 0)) || { why="still alive: ${left[*]}"; return 1; }
    [[ ! -e $cg$own ]] || { why="$own still exists"; return 1; }
    local r
    r=$(prop gk-deleg.service Result)
    [[ $(systemctl is-failed gk-deleg.service 2>/dev/null) != failed ]] || { why="unit failed (Result=$r)"; return 1; }
}
check systemctl_stop_of_delegating_unit_ends_everything t_systemctl_stop

# ---- 6. gracekill run inside a delegated transient scope
if [[ $have_run == 1 ]]; then
    t_scope_run() {
        rm -f "$state/scope.rc"
        # systemd-run --scope execs the command, so its exit status is the one
        # `gracekill run` passes through from the job (7 on SIGTERM).
        ( systemd-run --quiet --scope --unit=gk-scope -p Delegate=yes -- /vmtest/driver.sh scope-job
          echo $? >"$state/scope.rc" ) &
        local scg
        wait_for 30 has_cgroup gk-scope.scope || { why="scope did not appear"; return 1; }
        scg=$(prop gk-scope.scope ControlGroup)
        wait_for 30 populated "$cg$scg/job" || { why="no job cgroup under $scg"; return 1; }
        local out rc
        out=$(timeout 120 "$gk" stop --grace 30s --json "$cg$scg/job"); rc=$?
        echo "  gracekill stop $scg/job -> exit $rc: $out"
        [[ $rc == 0 && $(outcome_of "$out") == graceful ]] || { why="exit $rc outcome $(outcome_of "$out")"; return 1; }
        wait_for 30 test -s "$state/scope.rc" || { why="gracekill run in the scope did not return"; return 1; }
        [[ $(cat "$state/scope.rc") == 7 ]] || { why="scope command exited $(cat "$state/scope.rc"), job exited 7"; return 1; }
        wait_for 10 test ! -e "$cg$scg" || { why="scope cgroup $scg left behind"; return 1; }
        [[ $(systemctl is-failed gk-scope.scope 2>/dev/null) != failed ]] || { why="scope failed"; return 1; }
    }
    check run_in_delegated_scope_and_stop t_scope_run
else
    skip run_in_delegated_scope_and_stop "gracekill has no 'run' subcommand yet"
fi

# ---- 7. gracekill stop against a cgroup systemd created for a plain
# (not delegated) transient scope. Either outcome is acceptable as long as it
# is clean: it stops the scope's processes (and systemd then drops the empty
# scope), or it refuses with exit 2. Nothing may be left running or hang.
if [[ $have_gk == 1 ]]; then
    t_plain_scope() {
        ( systemd-run --quiet --scope --unit=plain-scope -- \
              sh -c 'trap "exit 0" TERM; sleep 1000 & wait'
          echo $? >"$state/plain.rc" ) &
        local scg
        wait_for 30 has_cgroup plain-scope.scope || {
            why="scope did not appear (systemd-run rc $(cat "$state/plain.rc" 2>/dev/null))"
            systemctl list-units --all --no-legend --plain '*.scope'; systemctl status plain-scope.scope; return 1; }
        scg=$(prop plain-scope.scope ControlGroup)
        wait_for 30 populated "$cg$scg" || { why="scope never populated"; return 1; }
        local out rc
        out=$(timeout 120 "$gk" stop --grace 10s --json "$cg$scg" 2>&1); rc=$?
        echo "  gracekill stop $cg$scg -> exit $rc: $out"
        wait_for 10 empty_or_gone "$cg$scg"
        local st
        st="gracekill exit $rc, outcome '$(outcome_of "$out")'; afterwards: cgroup $( [[ -e $cg$scg ]] && echo still there || echo removed by systemd ), scope ActiveState=$(prop plain-scope.scope ActiveState) Result=$(prop plain-scope.scope Result)"
        observe "stop on systemd's transient scope $scg: $st"
        case $rc in
            0|3) empty_or_gone "$cg$scg" || { why="exit $rc but scope still populated"; return 1; }
                 [[ $(systemctl is-failed plain-scope.scope 2>/dev/null) != failed ]] || { why="systemd marked the scope failed"; return 1; } ;;
            2) timeout 60 systemctl stop plain-scope.scope ;;   # refused: clean up ourselves
            *) timeout 60 systemctl stop plain-scope.scope; why="unexpected exit $rc"; return 1 ;;
        esac
    }
    check stop_on_systemd_transient_scope t_plain_scope
fi

# ---- 8. the Debian packages (ci/package): installed with apt, the README quick start with the
# installed binary, examples/c/stop_task.c compiled here against the installed -dev package,
# shared (loading libgracekill.so.0 through ld.so) and fully static, then purged without leaving
# their files.
if [[ -d /vmtest/debs ]]; then
    debs=(/vmtest/debs/*.deb)
    t_packages_install() {
        ((${#debs[@]} == 3)) || { why="expected 3 packages in /vmtest/debs, found ${#debs[@]}"; return 1; }
        local out p
        out=$(DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y --no-install-recommends "${debs[@]}" 2>&1) \
            || { sed 's/^/  apt: /' <<<"$out"; why="apt-get install failed (its output is above)"; return 1; }
        for p in gracekill libgracekill0 libgracekill-dev; do
            dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -qx 'install ok installed' \
                || { why="$p is not installed"; return 1; }
        done
        echo "  installed: $(dpkg-query -W -f='${Package} ${Version}, ' gracekill libgracekill0 libgracekill-dev)"
        [[ -x /usr/bin/gracekill ]] || { why="no /usr/bin/gracekill"; return 1; }
        /usr/bin/gracekill --version || { why="/usr/bin/gracekill --version failed"; return 1; }
        # The ldconfig trigger ran: the loader's cache knows the SONAME.
        ldconfig -p | grep -q 'libgracekill.so.0 ' || { why="ld.so.cache lacks libgracekill.so.0 (ldconfig trigger)"; return 1; }
        [[ -e /usr/include/gracekill.h && -e /usr/lib/x86_64-linux-gnu/pkgconfig/gracekill.pc ]] \
            || { why="the -dev files are missing"; return 1; }
        # Every installed file is what the package shipped (the md5sums ci/package adds). This
        # guest's dpkg leaves out docs and man pages (path-exclude), which --verify calls missing.
        out=$(dpkg --verify gracekill libgracekill0 libgracekill-dev 2>&1 | grep -v -E ' /usr/share/(doc|man)/')
        [[ -z $out ]] || { why="dpkg --verify: $out"; return 1; }
        # dpkg-shlibdeps gives packages that link the library their dependency from this file.
        grep -qx 'libgracekill 0 libgracekill0 (>= .*)' /var/lib/dpkg/info/libgracekill0:amd64.shlibs 2>/dev/null \
            || { why="libgracekill0 has no shlibs file"; return 1; }
    }
    check packages_install_with_apt t_packages_install

    t_packaged_quick_start() {
        # The README's first command as vm-tests/run read it from README.md, with the installed
        # binary in place of `cargo run --release --`.
        local out rc line
        line=$(cat /vmtest/quickstart) || { why="no /vmtest/quickstart"; return 1; }
        echo "  quick start: $line"
        out=$(timeout 120 bash -c "$line" 2>&1); rc=$?
        echo "  quick start -> exit $rc: $(tr '\n' '|' <<<"$out")"
        [[ $rc == 124 ]] || { why="exit $rc, expected 124 (the timeout's stop)"; return 1; }
        grep -qx flushed <<<"$out" || { why="the app did not flush"; return 1; }
    }
    check packaged_readme_quick_start t_packaged_quick_start

    t_c_program() {
        local exe out rc task=$cg/gk-cprog
        # An embedder's two builds against the installed -dev package, no flag but pkg-config's.
        # shellcheck disable=SC2046 # pkg-config's flags are words
        out=$(cc -o /tmp/stop_task_shared /vmtest/stop_task.c $(pkg-config --cflags --libs gracekill) 2>&1) \
            || { why="shared link against the installed library failed: $out"; return 1; }
        # shellcheck disable=SC2046
        out=$(cc -static -o /tmp/stop_task_static /vmtest/stop_task.c $(pkg-config --static --cflags --libs gracekill) 2>&1) \
            || { why="fully static link against the installed library failed: $out"; return 1; }
        echo "  pkg-config --static --libs gracekill: $(pkg-config --static --libs gracekill)"
        out=$(LD_TRACE_LOADED_OBJECTS=1 /tmp/stop_task_shared)
        # /lib is /usr/lib on a merged-/usr system: the loader may name either.
        grep -qE 'libgracekill\.so\.0 => (/usr)?/lib/x86_64-linux-gnu/libgracekill\.so\.0 ' <<<"$out" \
            || { why="the shared program does not load the installed library: $out"; return 1; }
        readelf -d /tmp/stop_task_static | grep -q 'no dynamic section' \
            || { why="the static program has a dynamic section"; return 1; }
        for exe in /tmp/stop_task_shared /tmp/stop_task_static; do
            rm -f "$state/cprog.flushed"
            mkdir "$task" || { why="mkdir $task"; return 1; }
            ( echo 0 >"$task/cgroup.procs" && exec sh -c "trap 'trap \"\" TERM; sleep 0.5; echo flushed >$state/cprog.flushed; exit 0' TERM; while :; do sleep 1; done" ) &
            wait_for 10 populated "$task" || { why="the task did not start"; return 1; }
            out=$(timeout 120 "$exe" "$task" 30000); rc=$?
            echo "  ${exe##*/} $task -> exit $rc: $(head -2 <<<"$out" | tr '\n' '|')"
            wait_for 10 empty_or_gone "$task"
            rmdir "$task" 2>/dev/null
            [[ $rc == 0 ]] || { why="${exe##*/} exited $rc"; return 1; }
            grep -q '^verdict=graceful exit_code=0$' <<<"$out" || { why="${exe##*/}: not graceful"; return 1; }
            [[ -e $state/cprog.flushed ]] || { why="${exe##*/}: the task did not flush"; return 1; }
        done
    }
    check c_program_against_installed_library t_c_program

    t_packages_remove() {
        local out
        out=$(DEBIAN_FRONTEND=noninteractive timeout 300 apt-get purge -y gracekill libgracekill-dev libgracekill0 2>&1) \
            || { why="apt-get purge failed: $(tail -3 <<<"$out" | tr '\n' ' ')"; return 1; }
        [[ ! -e /usr/bin/gracekill && ! -e /usr/lib/x86_64-linux-gnu/libgracekill.so.0 && ! -e /usr/include/gracekill.h ]] \
            || { why="files left after purge"; return 1; }
        ! ldconfig -p | grep -q 'libgracekill.so.0 ' || { why="ld.so.cache still lists libgracekill.so.0"; return 1; }
    }
    check packages_purge_cleanly t_packages_remove
fi

echo
echo "vmtest: failed units: $(systemctl --failed --no-legend --plain | awk '{print $1}' | tr '\n' ' ')"
if ((fail == 0)); then finish 0; else finish 1; fi
