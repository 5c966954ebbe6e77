//! Bad input, as a table: every malformed `stop` and `run` invocation exits 2 with one line on
//! stderr, prints nothing on stdout, runs nothing, creates no cgroup, and signals nobody (a
//! canary task sits in a test cgroup the whole time).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{TestCgroup, alive, assert_refused, bin, read};

#[test]
fn malformed_stop_and_run_invocations_exit_2_and_touch_nothing() {
    require_cgroup_v2!();
    let root = TestCgroup::new("badinput");
    let canary_dir = root.child("canary");
    let inner = root.child("canary/inner");
    let canary = root.spawn_in(
        &canary_dir,
        r#"for s in TERM INT HUP USR1 QUIT; do trap "echo $s >> $SCRATCH/canary-signals" $s; done; echo ready; while :; do sleep 1 & wait $!; done"#,
    );
    canary.wait_line("ready");
    let mount = common::mount().unwrap();
    let marker = root.file("ran");
    let link_out = root.file("link-out");
    std::os::unix::fs::symlink("/tmp", &link_out).unwrap();
    let link_in = root.file("link-in");
    std::os::unix::fs::symlink(&canary_dir, &link_in).unwrap();
    let plain_dir = root.file("plain");
    std::fs::create_dir(&plain_dir).unwrap();
    let canary_rel = format!("{}/canary", root.rel);
    let v1 = common::v1_freezer().map(|p| p.display().to_string());

    let s = |v: &str| v.to_string();
    let too_many_steps: Vec<String> = (0..17).flat_map(|_| [s("--then"), s("INT:1s")]).collect();
    let mut stop_cases: Vec<(&str, Vec<String>)> = vec![
        ("unknown signal", vec![s("--signal"), s("SIGFOO")]),
        ("signal 0", vec![s("--signal"), s("0")]),
        ("signal 65", vec![s("--signal"), s("65")]),
        ("signal 32 (libc's)", vec![s("--signal"), s("32")]),
        ("realtime past max", vec![s("--signal"), s("RTMIN+31")]),
        ("empty signal", vec![s("--signal"), s("")]),
        ("unicode signal", vec![s("--signal"), s("ＴＥＲＭ")]),
        (
            "huge signal",
            vec![s("--signal"), s("99999999999999999999999")],
        ),
        ("SIGKILL as stop signal", vec![s("--signal"), s("KILL")]),
        ("word duration", vec![s("--grace"), s("ten")]),
        ("negative duration", vec![s("--grace"), s("-1s")]),
        (
            "huge duration",
            vec![s("--grace"), s("99999999999999999999")],
        ),
        ("over 30 days", vec![s("--grace"), s("31days")]),
        ("sub-millisecond", vec![s("--grace"), s("1500us")]),
        ("empty duration", vec![s("--grace"), s("")]),
        ("kill timeout of a year", vec![s("--kill-timeout"), s("1y")]),
        ("step without duration", vec![s("--then"), s("TERM")]),
        ("step without signal", vec![s("--then"), s(":1s")]),
        ("KILL step", vec![s("--then"), s("KILL:1s")]),
        (
            "step with two durations",
            vec![s("--then"), s("TERM:1s:2s")],
        ),
        ("17 steps", too_many_steps),
    ];
    for c in &mut stop_cases {
        c.1.push(canary_rel.clone());
    }
    let targets: Vec<(&str, String)> = vec![
        ("empty task", s("")),
        ("blank task", s("   ")),
        ("root by /", s("/")),
        ("root by ///", s("///")),
        ("root by mount path", mount.display().to_string()),
        ("dot dot relative", format!("{canary_rel}/../..")),
        ("dot dot absolute", format!("{}/..", canary_dir.display())),
        ("dot dot in a name", s("a/../b")),
        ("symlink out of the mount", link_out.display().to_string()),
        ("symlink into the mount", link_in.display().to_string()),
        ("regular directory", plain_dir.display().to_string()),
        (
            "a cgroup file",
            canary_dir.join("cgroup.procs").display().to_string(),
        ),
        ("missing cgroup", format!("{}/no-such", root.rel)),
        ("unicode name", s("ünïcødé/täsk")),
        ("/proc", s("/proc/self")),
        // Said escaped, on one line: a newline would split the error in two, an escape
        // would reach the terminal.
        ("a newline in the name", s("a\nb")),
        ("an escape in the name", s("x\u{1b}[31mRED")),
    ];
    for (what, t) in &targets {
        stop_cases.push((what, vec![t.clone()]));
    }
    if let Some(v1) = &v1 {
        stop_cases.push(("cgroup v1 path", vec![v1.clone()]));
    }
    let mut checked = 0;
    for (what, args) in &stop_cases {
        let mut full = vec![s("stop")];
        full.extend(args.iter().cloned());
        check(&root, &canary, &marker, &format!("stop: {what}"), &full);
        checked += 1;
    }

    // The caller's own cgroup, a cgroup above it, and the cgroup of its parent shell.
    let sibling = root.child("sibling");
    let inner_rel = format!("{canary_rel}/inner");
    let own = [
        (
            "the caller's own cgroup",
            inner.clone(),
            inner_rel.as_str(),
            false,
        ),
        (
            "an ancestor of the caller's cgroup",
            inner.clone(),
            canary_rel.as_str(),
            false,
        ),
        (
            "the cgroup of the caller's shell",
            inner.clone(),
            inner_rel.as_str(),
            true,
        ),
    ];
    for (what, shell_cg, target, from_sibling) in own {
        let gk = if from_sibling {
            format!(
                r#"bash -c 'echo 0 > "$0/cgroup.procs" && exec "$1" stop "$2"' {} "$2" "$3""#,
                sibling.display()
            )
        } else {
            r#"bash -c 'exec "$0" stop "$1"' "$2" "$3""#.to_string()
        };
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!(r#"echo 0 > "$1/cgroup.procs" && {gk}; exit $?"#))
            .args([
                "bash",
                shell_cg.to_str().unwrap(),
                bin().to_str().unwrap(),
                target,
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_refused(&out, &format!("stop: {what}"));
        assert!(alive(canary.pid()), "{what}: the canary was hit");
        checked += 1;
    }

    let touch = [s("--"), s("touch"), marker.display().to_string()];
    let run_cases: Vec<(&str, Vec<String>)> = vec![
        ("name with a slash", vec![s("--name"), s("a/b")]),
        ("name ..", vec![s("--name"), s("..")]),
        ("empty name", vec![s("--name"), s("")]),
        ("name cgroup.procs", vec![s("--name"), s("cgroup.procs")]),
        ("unicode name", vec![s("--name"), s("tâsk")]),
        ("name of 129 bytes", vec![s("--name"), "x".repeat(129)]),
        ("name with a newline", vec![s("--name"), s("a\nb")]),
        ("name with an escape", vec![s("--name"), s("x\u{1b}[31m")]),
        (
            "parent with a newline",
            vec![s("--parent"), format!("{}/a\nb", root.rel)],
        ),
        ("name in use (the canary)", vec![s("--name"), s("canary")]),
        (
            "parent with ..",
            vec![s("--parent"), format!("{}/..", root.rel)],
        ),
        (
            "parent symlink out",
            vec![s("--parent"), link_out.display().to_string()],
        ),
        (
            "parent a plain directory",
            vec![s("--parent"), plain_dir.display().to_string()],
        ),
        ("bad signal", vec![s("--signal"), s("NOPE")]),
        ("bad grace", vec![s("--grace"), s("1 fortnight")]),
        ("bad step", vec![s("--then"), s("KILL:1s")]),
        ("bad kill mode", vec![s("--kill-mode"), s("everything")]),
        ("negative timeout", vec![s("--timeout"), s("-5")]),
        ("-p without =", vec![s("-p"), s("KillSignal")]),
        ("-p unknown", vec![s("-p"), s("Restart=always")]),
        ("-p empty", vec![s("-p"), s("")]),
        ("-p =", vec![s("-p"), s("=")]),
        ("-p KillSignal=KILL", vec![s("-p"), s("KillSignal=SIGKILL")]),
        (
            "-p KillSignal garbage",
            vec![s("-p"), s("KillSignal=\u{1F4A3}")],
        ),
        ("-p infinity", vec![s("-p"), s("TimeoutStopSec=infinity")]),
        (
            "-p FinalKillSignal=TERM",
            vec![s("-p"), s("FinalKillSignal=TERM")],
        ),
        ("-p KillMode garbage", vec![s("-p"), s("KillMode=all")]),
        (
            "-p SendSIGHUP garbage",
            vec![s("-p"), s("SendSIGHUP=maybe")],
        ),
        (
            "-p huge RuntimeMaxSec",
            vec![s("-p"), s("RuntimeMaxSec=1e99")],
        ),
    ];
    for (what, args) in &run_cases {
        let mut full = vec![s("run")];
        full.extend(args.iter().cloned());
        full.extend(touch.iter().cloned());
        check(&root, &canary, &marker, &format!("run: {what}"), &full);
        checked += 1;
    }
    let no_cmd = vec![s("run"), s("--name"), s("x"), s("--")];
    check(&root, &canary, &marker, "run: no command", &no_cmd);
    checked += 1;

    assert!(checked >= 25, "{checked}");
    eprintln!("{checked} malformed invocations refused");
    // Nothing was created under gracekill's root besides the test's own cgroups.
    let mut dirs: Vec<String> = std::fs::read_dir(&root.path)
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().unwrap().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    assert_eq!(dirs, ["canary", "sibling"], "no task cgroup was created");
    assert_eq!(
        read(&root.file("canary-signals")),
        "",
        "the canary got no signal"
    );
}

fn check(root: &TestCgroup, canary: &common::Proc, marker: &Path, what: &str, args: &[String]) {
    let out = Command::new(bin())
        .args(args)
        .env("GRACEKILL_ROOT", &root.rel)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    if args.first().is_some_and(|a| a == "run") {
        // `run` passes CMD's status through, so its own refusals are 125, not 2.
        common::assert_refused_with(&out, what, 125);
    } else {
        assert_refused(&out, what);
    }
    assert!(!marker.exists(), "{what}: the command ran");
    assert!(alive(canary.pid()), "{what}: the canary was hit");
    assert_eq!(
        read(&root.file("canary-signals")),
        "",
        "{what}: the canary got a signal"
    );
}
