//! Rootless use in a delegated subtree: an unprivileged user (created for the test, removed
//! afterwards) owns a cgroup subtree the way systemd's `Delegate=yes` hands one out, and runs
//! and stops tasks inside it. Outside it, and on other users' tasks, it gets a clear permission
//! error and signals nobody.

mod common;

use std::os::unix::fs::chown;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use std::time::Duration;

use common::{TestCgroup, TestUser, alive, as_user, bin, json, read, stderr, wait_until};

fn output(mut c: Command) -> Output {
    c.output().unwrap()
}

#[test]
fn delegated_user_runs_and_stops_inside_its_subtree_and_nowhere_else() {
    require_cgroup_v2!();
    if !Path::new("/usr/sbin/useradd").exists() || !Path::new("/usr/bin/setpriv").exists() {
        assert!(!common::strict(), "useradd or setpriv missing");
        eprintln!("SKIPPED rootless: no useradd/setpriv");
        return;
    }
    let user = TestUser::new();
    let uid = user.uid;
    let gk = bin();
    let gk = gk.to_str().unwrap();

    // The delegation: the subtree's directory and the files systemd's Delegate= hands over.
    let deleg = TestCgroup::new("delegated");
    for f in [
        "",
        "cgroup.procs",
        "cgroup.subtree_control",
        "cgroup.threads",
    ] {
        chown(deleg.path.join(f), Some(uid), Some(uid)).unwrap();
    }
    chown(&deleg.scratch, Some(uid), Some(uid)).unwrap();
    // Writable for the uid-65534 canary too, so whatever signal reaches it is recorded.
    std::fs::set_permissions(
        &deleg.scratch,
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    // The user's session: a leaf inside the subtree, which the user made.
    let st = output(as_user(
        uid,
        None,
        &["mkdir", deleg.path.join("session").to_str().unwrap()],
        &[],
    ));
    assert!(st.status.success(), "{}", stderr(&st));
    let session = deleg.path.join("session");
    let env = [("GRACEKILL_ROOT", deleg.rel.as_str())];

    // 1. run and stop, as the user, inside the subtree.
    let app = format!(
        r#"trap 'sleep 0.3; echo flushed > {d}/flushed; exit 0' TERM; echo $$ > {d}/ready; while :; do sleep 1 & wait $!; done"#,
        d = deleg.scratch.display()
    );
    let mut run: Child = as_user(
        uid,
        Some(&session),
        &[
            gk, "run", "--name", "web", "--grace", "5s", "--", "bash", "-c", &app,
        ],
        &env,
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || !read(&deleg.file("ready"))
            .trim()
            .is_empty()),
        "run as the user did not start the task"
    );
    let task_pid: i32 = read(&deleg.file("ready")).trim().parse().unwrap();
    let web = deleg.path.join("web");
    assert!(common::pids_below(&web).contains(&task_pid));
    let meta = std::fs::metadata(&web).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&meta),
        uid,
        "the task cgroup is the user's"
    );

    let out = output(as_user(uid, None, &[gk, "stop", "--json", "web"], &env));
    let v = json(&out);
    assert_eq!(out.status.code(), Some(0), "{v}\n{}", stderr(&out));
    assert_eq!(v["outcome"], "graceful", "{v}");
    assert_eq!(read(&deleg.file("flushed")).trim(), "flushed");
    let status = run.wait().unwrap();
    assert!(status.code().is_some(), "run ended by itself: {status}");
    assert!(!web.exists(), "run removed the task's cgroup");

    // 1b. A task that writes a final-kill record on its own cgroup (a user.* xattr, which it
    // may; dated u64::MAX, so after any stop's start) and exits on SIGTERM: the owner's stop
    // does not take the task's word that another stop killed it; it reports the graceful exit
    // it saw. (Written at the start: a process the trap forked would itself get the stop
    // signal, which under emulation can come before its write.)
    let forger = format!(
        r#"python3 -c "import os, sys; os.setxattr(sys.argv[1], sys.argv[2], sys.argv[3].encode())" {cg} user.gracekill.final-kill "4242 18446744073709551615 cgroup.kill" 2> {d}/forge.err && echo forged > {d}/forged; trap 'exit 0' TERM; echo ready > {d}/ready2; while :; do sleep 1 & wait $!; done"#,
        cg = deleg.path.join("web2").display(),
        d = deleg.scratch.display()
    );
    let mut run2: Child = as_user(
        uid,
        Some(&session),
        &[gk, "run", "--name", "web2", "--", "bash", "-c", &forger],
        &env,
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    assert!(wait_until(Duration::from_secs(10), || deleg
        .file("ready2")
        .exists()));
    let out = output(as_user(uid, None, &[gk, "stop", "--json", "web2"], &env));
    let v = json(&out);
    assert_eq!(
        read(&deleg.file("forged")).trim(),
        "forged",
        "{v} {}",
        read(&deleg.file("forge.err"))
    );
    assert_eq!(out.status.code(), Some(0), "{v}\n{}", stderr(&out));
    assert_eq!(v["outcome"], "graceful", "{v}");
    assert_eq!(v["steps"].as_array().unwrap().len(), 1, "{v}");
    run2.wait().unwrap();

    // 2. Another user's task inside the subtree (root put a process of uid 65534 there).
    let foreign = deleg.child("foreign");
    let canary_script = r#"for s in TERM INT HUP CONT; do trap "echo $s >> $SCRATCH/foreign-signals" $s; done; echo ready; while :; do sleep 1 & wait $!; done"#;
    let foreign_task = deleg.spawn_in(&foreign, &format!(
        r#"exec setpriv --reuid=65534 --regid=65534 --clear-groups -- bash -c '{canary_script}'"#
    ));
    foreign_task.wait_line("ready");
    // 3. A root task outside the subtree.
    let outside = TestCgroup::new("not-delegated");
    let root_task = outside.spawn(canary_script);
    root_task.wait_line("ready");

    let cases = [
        (
            "another user's task in the subtree",
            format!("{}/foreign", deleg.rel),
        ),
        ("a root task outside the subtree", outside.rel.clone()),
    ];
    for (what, target) in &cases {
        let out = output(as_user(
            uid,
            None,
            &[gk, "stop", "--grace", "1s", target],
            &env,
        ));
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{what}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{what}: {err}");
        assert!(
            err.contains("operation not permitted") || err.contains("permission denied"),
            "{what}: {err}"
        );
        assert!(err.contains("hint:"), "{what}: {err}");
        assert!(out.stdout.is_empty(), "{what}");
    }
    // run outside the subtree: refused before anything starts.
    let out = output(as_user(
        uid,
        Some(&session),
        &[
            gk,
            "run",
            "--parent",
            &outside.rel,
            "--name",
            "x",
            "--",
            "touch",
            deleg.file("ran").to_str().unwrap(),
        ],
        &env,
    ));
    // `run`'s own failure: 125, never a status CMD could have exited with.
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("permission denied"),
        "{}",
        stderr(&out)
    );
    assert!(!deleg.file("ran").exists(), "the command never ran");
    assert!(!outside.path.join("x").exists());

    std::thread::sleep(Duration::from_millis(300));
    assert!(alive(foreign_task.pid()) && alive(root_task.pid()));
    assert_eq!(
        read(&deleg.file("foreign-signals")),
        "",
        "the other user's task got nothing"
    );
    assert_eq!(
        read(&outside.file("foreign-signals")),
        "",
        "the root task got nothing"
    );
}
