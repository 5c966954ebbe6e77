//! A real server flushes under gracekill: Redis with RDB persistence saves its data on SIGTERM,
//! so `gracekill stop` keeps 100,000 keys that an immediate SIGKILL (Thermos' stop) loses.
//! Loopback only, on a port chosen here; every request loop is bounded.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{TestCgroup, bin, gracekill_env, json, stderr};

const KEYS: usize = 100_000;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `gracekill run --name NAME -- redis-server ...` on `dir`: RDB snapshots (`save 3600 1`, so
/// none is taken during the test by itself), no AOF, loopback only.
fn run_redis(root: &TestCgroup, name: &str, dir: &Path, port: u16) -> Child {
    std::fs::create_dir_all(dir).unwrap();
    let child = Command::new(bin())
        .args([
            "run",
            "--name",
            name,
            "--grace",
            "30s",
            "--",
            "redis-server",
        ])
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args([
            "--save",
            "3600 1",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ])
        .arg("--dir")
        .arg(dir)
        .args(["--dbfilename", "dump.rdb", "--logfile"])
        .arg(dir.join("redis.log"))
        .env("GRACEKILL_ROOT", &root.rel)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_ready(port, dir);
    child
}

/// Sends one command, returns the first reply line.
fn command(port: u16, cmd: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(format!("{cmd}\r\n").as_bytes())?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    Ok(line.trim_end().to_string())
}

/// Waits (at most 30 s) until the server answers PING (it answers -LOADING while it reads its
/// snapshot).
fn wait_ready(port: u16, dir: &Path) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(30) {
        if command(port, "PING").is_ok_and(|r| r == "+PONG") {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "redis on port {port} never became ready: {}",
        common::read(&dir.join("redis.log"))
    );
}

fn dbsize(port: u16) -> usize {
    let r = command(port, "DBSIZE").unwrap();
    r.strip_prefix(':')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("DBSIZE: {r}"))
}

/// Writes `KEYS` keys with real SET commands, pipelined in batches of 10,000, and checks every
/// reply is `+OK`.
fn load_keys(port: u16) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let batch = 10_000;
    for start in (0..KEYS).step_by(batch) {
        let mut buf = Vec::with_capacity(batch * 64);
        for i in start..start + batch {
            let (k, v) = (format!("key:{i}"), format!("value-{i}-{}", i * 7919));
            write!(
                buf,
                "*3\r\n$3\r\nSET\r\n${}\r\n{k}\r\n${}\r\n{v}\r\n",
                k.len(),
                v.len()
            )
            .unwrap();
        }
        s.write_all(&buf).unwrap();
        let mut replies = vec![0u8; batch * 5];
        s.read_exact(&mut replies).unwrap();
        assert!(
            replies.chunks(5).all(|r| r == b"+OK\r\n"),
            "a SET failed: {}",
            String::from_utf8_lossy(&replies[..200])
        );
    }
}

#[test]
fn redis_saves_its_keys_under_gracekill_stop_and_loses_them_to_sigkill() {
    require_cgroup_v2!();
    require!(common::installed("redis-server"));
    let root = TestCgroup::new("redis");
    let env = [("GRACEKILL_ROOT", root.rel.as_str())];

    // gracekill stop: SIGTERM, and the whole grace for Redis to write its snapshot.
    let dir = root.file("graceful");
    let port = free_port();
    let mut run = run_redis(&root, "redis", &dir, port);
    load_keys(port);
    assert_eq!(dbsize(port), KEYS);
    let t = Instant::now();
    let out = gracekill_env(&["stop", "--json", "redis"], &env);
    let v = json(&out);
    assert_eq!(out.status.code(), Some(0), "{v}\n{}", stderr(&out));
    assert_eq!(v["outcome"], "graceful", "{v}");
    eprintln!("redis saved {KEYS} keys and exited in {:?}", t.elapsed());
    assert_eq!(
        run.wait().unwrap().code(),
        Some(0),
        "redis exits 0 after its save"
    );
    assert!(dir.join("dump.rdb").exists());
    // A fresh server on the same directory finds every key.
    let port = free_port();
    let mut again = run_redis(&root, "redis-again", &dir, port);
    assert_eq!(dbsize(port), KEYS, "all keys survive a graceful stop");
    let out = gracekill_env(&["stop", "--json", "redis-again"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    again.wait().unwrap();

    // The contrast: an immediate SIGKILL, as Thermos sends to the process group at once.
    let dir = root.file("sigkill");
    let port = free_port();
    let mut run = run_redis(&root, "redis-killed", &dir, port);
    load_keys(port);
    assert_eq!(dbsize(port), KEYS);
    std::fs::write(root.path.join("redis-killed/cgroup.kill"), "1").unwrap();
    let status = run.wait().unwrap();
    assert_eq!(status.code(), Some(137), "{status}");
    assert!(!dir.join("dump.rdb").exists(), "SIGKILL leaves no snapshot");
    let port = free_port();
    let mut again = run_redis(&root, "redis-after-kill", &dir, port);
    assert_eq!(dbsize(port), 0, "every key is lost to SIGKILL");
    let out = gracekill_env(&["stop", "--json", "redis-after-kill"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    again.wait().unwrap();
}
