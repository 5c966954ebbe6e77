//! A cgroup v2 directory as an open file descriptor, and the core files inside it.
//!
//! Locates the cgroup2 mount from `/proc/self/mountinfo` (hybrid hosts mount it at
//! `/sys/fs/cgroup/unified`, pure v2 hosts at `/sys/fs/cgroup`), opens cgroups beneath it without
//! following symlinks or `..`, and reads and writes `cgroup.procs`, `cgroup.events`,
//! `cgroup.kill`, `cgroup.freeze` and xattrs. No policy lives here, and nothing here writes
//! `cgroup.subtree_control`: gracekill needs no controllers.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use rustix::fs::{self, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use crate::error::{Error, Result};

/// Starts a [`std::process::Command`] inside a cgroup: the child writes itself into the
/// `cgroup.procs` the caller opened, between fork and exec (see `sys.rs`).
pub use crate::sys::join_cgroup_before_exec;

/// `CGROUP2_SUPER_MAGIC` from `statfs(2)`.
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// The mounted cgroup2 hierarchy.
#[derive(Debug)]
pub struct Mount {
    mountpoint: PathBuf,
    ns_root: String,
    fd: OwnedFd,
}

impl Mount {
    /// Finds the cgroup2 mount in `/proc/self/mountinfo` and opens its root: the first whose
    /// root lies within the caller's cgroup namespace and whose mount point leads to it (not
    /// to another mount made on top of it).
    ///
    /// # Errors
    /// [`Error::Unsupported`] when no cgroup2 filesystem is mounted, or only ones that lie
    /// outside the caller's cgroup namespace; an OS error when it cannot be opened.
    pub fn discover() -> Result<Mount> {
        let text = read_mountinfo()?;
        let mut refused = None;
        for (mountpoint, ns_root) in cgroup2_mounts(&text) {
            if outside_the_namespace(&ns_root) {
                refused.get_or_insert_with(|| outside_the_namespace_error(&mountpoint, &ns_root));
                continue;
            }
            match Mount::open_in(mountpoint, ns_root, &text) {
                // Covered by a mount from outside the namespace: the next one, if any.
                Err(e @ Error::Unsupported(_)) => refused = Some(e),
                other => return other,
            }
        }
        Err(refused.unwrap_or_else(|| {
            Error::Unsupported(
                "no cgroup2 filesystem is mounted (see /proc/self/mountinfo); gracekill needs \
                 cgroup v2 (hint: mount -t cgroup2 none /sys/fs/cgroup, or boot with \
                 systemd.unified_cgroup_hierarchy=1)"
                    .into(),
            )
        }))
    }

    /// Opens a cgroup2 mount at a known mount point. `ns_root` is the mount's root inside the
    /// caller's cgroup namespace (the fourth field of mountinfo; `/` almost always); where the
    /// kernel can say which mount the opened directory is on (Linux 5.8), that mount's root
    /// from `/proc/self/mountinfo` is taken instead.
    ///
    /// # Errors
    /// An OS error, or [`Error::Unsupported`] if `mountpoint` is not the root of a cgroup2
    /// mount or that mount lies outside the caller's cgroup namespace.
    pub fn open(mountpoint: PathBuf, ns_root: String) -> Result<Mount> {
        Mount::open_in(mountpoint, ns_root, &read_mountinfo()?)
    }

    /// [`Mount::open`] with `/proc/self/mountinfo` already read.
    fn open_in(mountpoint: PathBuf, ns_root: String, mountinfo: &str) -> Result<Mount> {
        let fd = fs::open(
            &mountpoint,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::os("open", &mountpoint, e))?;
        let st = fs::fstatfs(&fd).map_err(|e| Error::os("statfs", &mountpoint, e))?;
        #[allow(clippy::unnecessary_cast)]
        if st.f_type as i64 != CGROUP2_SUPER_MAGIC {
            return Err(Error::Unsupported(format!(
                "'{}' is not a cgroup2 filesystem",
                mountpoint.display()
            )));
        }
        // The mount the path led to, which may not be the one its mountinfo line describes:
        // a later mount on the same path covers it (a container's runtime mounts cgroup2
        // inside its namespace, then the host's hierarchy is bind-mounted on top).
        let ns_root = match mount_of(&fd, mountinfo) {
            Some((_, false)) => {
                return Err(Error::Unsupported(format!(
                    "'{}' is not the root of a cgroup2 mount (hint: give the mount point itself)",
                    mountpoint.display()
                )));
            }
            Some((root, true)) => root,
            None => ns_root,
        };
        if outside_the_namespace(&ns_root) {
            return Err(outside_the_namespace_error(&mountpoint, &ns_root));
        }
        Ok(Mount {
            mountpoint,
            ns_root,
            fd,
        })
    }

    /// Where the hierarchy is mounted, e.g. `/sys/fs/cgroup`.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// The mount's root as the caller's cgroup namespace names it (`/` almost always).
    pub fn ns_root(&self) -> &str {
        &self.ns_root
    }

    /// Opens the cgroup at `rel` (a normalized path relative to the mount, `/a/b`; `/` is the
    /// root). Never follows symlinks, never leaves the mount.
    ///
    /// # Errors
    /// [`Error::NotFound`] if it does not exist, [`Error::Input`] if it is not a directory.
    pub fn open_cgroup(&self, rel: &str) -> Result<Cgroup> {
        let rel = normalize(rel)?;
        let path = self.abs(&rel);
        let fd = if rel == "/" {
            fs::openat(
                &self.fd,
                ".",
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
        } else {
            fs::openat2(
                &self.fd,
                &rel[1..],
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_XDEV,
            )
        };
        let fd = fd.map_err(|e| match e {
            Errno::NOENT => Error::NotFound(format!("cgroup '{}' does not exist", path.display())),
            Errno::NAMETOOLONG => Error::Input(format!(
                "cgroup path '{}' is too long (each name at most 255 bytes, the path at most 4095)",
                path.display()
                    .to_string()
                    .chars()
                    .take(80)
                    .collect::<String>()
                    + "..."
            )),
            Errno::NOTDIR => Error::Input(format!("'{}' is not a cgroup", path.display())),
            Errno::LOOP | Errno::XDEV => Error::Input(format!(
                "'{}' leaves the cgroup2 mount (symlinks are not followed)",
                path.display()
            )),
            e => Error::os("open", &path, e),
        })?;
        Cgroup::from_fd(
            fd,
            rel,
            path,
            self.ns_root.trim_end_matches('/').to_string(),
        )
    }

    /// Creates the cgroup at `rel` and any missing parents (like `mkdir -p`); returns it and
    /// whether the last component was newly created.
    ///
    /// # Errors
    /// An OS error naming the directory, e.g. permission denied outside a delegated subtree.
    pub fn create_cgroup(&self, rel: &str) -> Result<(Cgroup, bool)> {
        let rel = normalize(rel)?;
        let mut cur = String::new();
        let mut created = false;
        for comp in rel.split('/').filter(|c| !c.is_empty()) {
            cur.push('/');
            cur.push_str(comp);
            let parent = self.open_cgroup(parent_of(&cur))?;
            created = match fs::mkdirat(&parent.fd, comp, Mode::from_raw_mode(0o755)) {
                Ok(()) => true,
                Err(Errno::EXIST) => false,
                Err(e) => return Err(Error::os("create cgroup", &self.abs(&cur), e)),
            };
        }
        Ok((self.open_cgroup(&rel)?, created))
    }

    fn abs(&self, rel: &str) -> PathBuf {
        if rel == "/" {
            self.mountpoint.clone()
        } else {
            self.mountpoint.join(&rel[1..])
        }
    }
}

/// Finds the first cgroup2 mount in mountinfo text whose root lies within the caller's cgroup
/// namespace: (mount point, that root as the namespace names it). A mount made outside the
/// namespace shows a root above it (`/..`, `/../..`) and is passed over: paths read from
/// `/proc/<pid>/cgroup`, which start at the namespace's root, cannot be placed in it.
pub fn parse_mountinfo(text: &str) -> Option<(PathBuf, String)> {
    cgroup2_mounts(text).find(|(_, root)| !outside_the_namespace(root))
}

fn read_mountinfo() -> Result<String> {
    let path = Path::new("/proc/self/mountinfo");
    std::fs::read_to_string(path).map_err(|e| Error::os("read", path, errno_of(&e)))
}

/// The mount the directory `fd` is on, from mountinfo text: its root as the caller's cgroup
/// namespace names it, and whether `fd` is that root. `None` when the kernel cannot say
/// (`STATX_MNT_ID` and `STATX_ATTR_MOUNT_ROOT` came with Linux 5.8) or the mount is not listed.
fn mount_of(fd: &OwnedFd, mountinfo: &str) -> Option<(String, bool)> {
    let st = fs::statx(
        fd,
        "",
        rustix::fs::AtFlags::EMPTY_PATH,
        rustix::fs::StatxFlags::MNT_ID,
    )
    .ok()?;
    let mount_root = rustix::fs::StatxAttributes::MOUNT_ROOT;
    if st.stx_mask & rustix::fs::StatxFlags::MNT_ID.bits() == 0
        || !st.stx_attributes_mask.contains(mount_root)
    {
        return None;
    }
    let id = st.stx_mnt_id.to_string();
    let root = mountinfo.lines().find_map(|line| {
        let mut fields = line.split(' ');
        (fields.next() == Some(id.as_str()))
            .then(|| fields.nth(2).map(unescape_mountinfo))
            .flatten()
    })?;
    Some((root, st.stx_attributes.contains(mount_root)))
}

/// Every cgroup2 mount in mountinfo text, in order: (mount point, root as the caller's cgroup
/// namespace names it).
fn cgroup2_mounts(text: &str) -> impl Iterator<Item = (PathBuf, String)> + '_ {
    text.lines().filter_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let sep = fields.iter().position(|f| *f == "-")?;
        (fields.get(sep + 1) == Some(&"cgroup2") && fields.len() > 4).then(|| {
            (
                PathBuf::from(unescape_mountinfo(fields[4])),
                unescape_mountinfo(fields[3]),
            )
        })
    })
}

/// Does a mount root, as mountinfo shows it to a process in a cgroup namespace, lie outside that
/// namespace? The kernel names such a root relative to the namespace's (`/..`, `/../b`), while
/// `/proc/<pid>/cgroup` names every cgroup from the namespace's root: the caller cannot tell
/// where its own cgroup is in such a mount, so no path read there can be compared with one read
/// from `/proc` (the refusal of a cgroup that holds the caller, the `/proc` membership proof).
fn outside_the_namespace(root: &str) -> bool {
    root.split('/').any(|c| c == "..")
}

/// The error for a cgroup2 mount that lies outside the caller's cgroup namespace.
fn outside_the_namespace_error(mountpoint: &Path, root: &str) -> Error {
    Error::Unsupported(format!(
        "the cgroup2 mount at '{}' lies outside this process's cgroup namespace (its root is \
         '{}' from here), so gracekill cannot tell which of its cgroups hold itself (hint: mount \
         cgroup2 inside the namespace, e.g. mount -t cgroup2 none /sys/fs/cgroup, or run \
         gracekill in the cgroup namespace the mount was made in)",
        mountpoint.display(),
        root.escape_debug()
    ))
}

/// Where a cgroup v1 hierarchy with the freezer controller is mounted (hybrid hosts), read once
/// from `/proc/self/mountinfo`.
pub fn v1_freezer_mount() -> Option<&'static Path> {
    static MOUNT: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    MOUNT
        .get_or_init(|| {
            let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
            text.lines().find_map(|line| {
                let fields: Vec<&str> = line.split(' ').collect();
                let sep = fields.iter().position(|f| *f == "-")?;
                let v1_freezer = fields.get(sep + 1) == Some(&"cgroup")
                    && fields
                        .get(sep + 3)
                        .is_some_and(|o| o.split(',').any(|x| x == "freezer"));
                (v1_freezer && fields.len() > 4)
                    .then(|| PathBuf::from(unescape_mountinfo(fields[4])))
            })
        })
        .as_deref()
}

/// Mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Normalizes a mount-relative cgroup path: `/a//b/` -> `/a/b`. Refuses `.` and `..`
/// components, NUL bytes, newlines (the kernel names no cgroup with one: `mkdir` refuses it) and
/// anything that is not valid as a path.
///
/// # Errors
/// [`Error::Input`] naming the path.
pub fn normalize(rel: &str) -> Result<String> {
    for (c, what) in [('\0', "a NUL byte"), ('\n', "a newline")] {
        if rel.contains(c) {
            return Err(Error::Input(format!(
                "invalid cgroup path '{}': contains {what} (no cgroup name can)",
                rel.escape_debug()
            )));
        }
    }
    let mut out = String::new();
    for comp in rel.split('/').filter(|c| !c.is_empty()) {
        if comp == "." || comp == ".." {
            return Err(Error::Input(format!(
                "invalid cgroup path '{}': '.' and '..' are not allowed",
                rel.escape_debug()
            )));
        }
        out.push('/');
        out.push_str(comp);
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// `/a/b` -> `/a`; `/a` -> `/`.
pub fn parent_of(rel: &str) -> &str {
    match rel.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &rel[..i],
    }
}

/// The state in `cgroup.events`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Events {
    /// Some process lives in this cgroup or below.
    pub populated: bool,
    /// The cgroup is (effectively) frozen.
    pub frozen: bool,
}

impl Events {
    /// Parses `populated 1\nfrozen 0\n`.
    pub fn parse(text: &str) -> Events {
        let mut ev = Events::default();
        for line in text.lines() {
            match line.split_once(' ') {
                Some(("populated", v)) => ev.populated = v.trim() == "1",
                Some(("frozen", v)) => ev.frozen = v.trim() == "1",
                _ => {}
            }
        }
        ev
    }
}

/// An open non-root or root cgroup directory.
#[derive(Debug)]
pub struct Cgroup {
    fd: OwnedFd,
    rel: String,
    path: PathBuf,
    ns_root: String,
    ns_path: String,
    /// `ns_path` as the kernel spells it (a name need not be UTF-8).
    ns_raw: Vec<u8>,
    id: u64,
    uid: u32,
}

impl Cgroup {
    fn from_fd(fd: OwnedFd, rel: String, path: PathBuf, ns_root: String) -> Result<Cgroup> {
        let st = fs::fstat(&fd).map_err(|e| Error::os("stat", &path, e))?;
        let ns_path = if rel == "/" {
            if ns_root.is_empty() {
                "/".into()
            } else {
                ns_root.clone()
            }
        } else {
            format!("{ns_root}{rel}")
        };
        Ok(Cgroup {
            fd,
            ns_raw: ns_path.as_bytes().to_vec(),
            rel,
            path,
            ns_root,
            ns_path,
            id: st.st_ino,
            uid: st.st_uid,
        })
    }

    /// The descendant `sub` (relative to this cgroup) opened as `fd`: its names kept as bytes.
    fn below(&self, fd: OwnedFd, sub: &Path) -> Result<Cgroup> {
        let path = self.path.join(sub);
        let lossy = sub.to_string_lossy();
        let rel = if self.rel == "/" {
            format!("/{lossy}")
        } else {
            format!("{}/{lossy}", self.rel)
        };
        let mut c = Cgroup::from_fd(fd, rel, path, self.ns_root.clone())?;
        let mut raw = self.ns_raw.clone();
        if raw.last() != Some(&b'/') {
            raw.push(b'/');
        }
        raw.extend_from_slice(sub.as_os_str().as_bytes());
        c.ns_raw = raw;
        Ok(c)
    }

    /// The path relative to the mount, `/jobs/web` (`/` for the root).
    pub fn rel(&self) -> &str {
        &self.rel
    }

    /// The absolute filesystem path, `/sys/fs/cgroup/jobs/web`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path as `/proc/<pid>/cgroup` names it in the caller's cgroup namespace (lossy where
    /// a name is not UTF-8: for messages; compare with [`Cgroup::ns_path_bytes`]).
    pub fn ns_path(&self) -> &str {
        &self.ns_path
    }

    /// The path as `/proc/<pid>/cgroup` names it, byte for byte.
    pub fn ns_path_bytes(&self) -> &[u8] {
        &self.ns_raw
    }

    /// The cgroup id: the directory's inode number, as `PIDFD_GET_INFO` reports it.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The uid owning the directory (a delegated subtree is owned by its user).
    pub fn owner_uid(&self) -> u32 {
        self.uid
    }

    /// Is this the root of the hierarchy?
    pub fn is_root(&self) -> bool {
        self.rel == "/"
    }

    /// Has this cgroup been removed (`rmdir`) since it was opened? A removed cgroup's directory
    /// fd still works, but nothing can be opened below it.
    pub fn is_removed(&self) -> bool {
        // One lookup, no file opened.
        matches!(
            fs::accessat(
                &self.fd,
                "cgroup.procs",
                fs::Access::EXISTS,
                fs::AtFlags::empty()
            ),
            Err(Errno::NOENT | Errno::NODEV)
        )
    }

    /// The directory fd.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Reads a whole file of this cgroup.
    ///
    /// # Errors
    /// An OS error naming the file.
    pub fn read_file(&self, name: &str) -> Result<String> {
        self.read_file_until(name, None).map(|(text, _)| text)
    }

    /// [`Cgroup::read_file`], with no read started once `until` has passed: the text read
    /// so far (whole lines only) and whether it is the whole file.
    ///
    /// # Errors
    /// An OS error naming the file.
    pub fn read_file_until(&self, name: &str, until: Option<Instant>) -> Result<(String, bool)> {
        let fd = fs::openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::os("open", &self.file(name), e))?;
        read_all(&fd, until).map_err(|e| Error::os("read", &self.file(name), e))
    }

    /// Writes `data` to a file of this cgroup in one `write(2)`.
    ///
    /// # Errors
    /// An OS error naming the value and the file.
    pub fn write_file(&self, name: &str, data: &str) -> Result<()> {
        let op = || format!("write '{}' to", data.trim_end());
        let fd = fs::openat(
            &self.fd,
            name,
            OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::os(op(), &self.file(name), e))?;
        rustix::io::write(&fd, data.as_bytes())
            .map_err(|e| Error::os(op(), &self.file(name), e))?;
        Ok(())
    }

    /// The pids in `cgroup.procs` (this cgroup only, not its children). A cgroup removed under
    /// us has no processes.
    ///
    /// # Errors
    /// An OS error other than "gone".
    pub fn procs(&self) -> Result<Vec<i32>> {
        match self.read_file("cgroup.procs") {
            Ok(text) => Ok(parse_ids(&text)),
            Err(e) if is_gone(&e) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Reads `cgroup.events` once. A removed cgroup reads as empty.
    ///
    /// # Errors
    /// An OS error other than "gone"; on the root cgroup, which has no `cgroup.events`.
    pub fn events(&self) -> Result<Events> {
        match self.read_file("cgroup.events") {
            Ok(text) => Ok(Events::parse(&text)),
            Err(e) if is_gone(&e) => Ok(Events::default()),
            Err(e) => Err(e),
        }
    }

    /// Opens `cgroup.events` for event-driven waiting (`POLLPRI`, as the stop engine waits).
    ///
    /// # Errors
    /// An OS error naming the file.
    pub fn open_events(&self) -> Result<EventsFile> {
        let path = self.file("cgroup.events");
        let fd = fs::openat(
            &self.fd,
            "cgroup.events",
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::os("open", &path, e))?;
        Ok(EventsFile { fd, path })
    }

    /// Is `cgroup.freeze` set on this cgroup itself?
    ///
    /// # Errors
    /// An OS error other than "gone".
    pub fn freeze_requested(&self) -> Result<bool> {
        // "0\n" or "1\n": one read (a kernfs file is produced whole by its first read).
        let mut buf = [0u8; 8];
        let read = fs::openat(
            &self.fd,
            "cgroup.freeze",
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .and_then(|fd| rustix::io::read(&fd, &mut buf))
        .map_err(|e| Error::os("read", &self.file("cgroup.freeze"), e));
        match read {
            Ok(n) => Ok(buf[..n].trim_ascii() == b"1"),
            Err(e) if is_gone(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Writes `cgroup.freeze` (kernel 5.2).
    ///
    /// # Errors
    /// An OS error naming the file; `Unsupported` when the file is missing.
    pub fn set_frozen(&self, frozen: bool) -> Result<()> {
        self.write_file("cgroup.freeze", if frozen { "1" } else { "0" })
    }

    /// Writes `1` to `cgroup.kill` (kernel 5.14): SIGKILL to the whole subtree, fork-proof.
    ///
    /// # Errors
    /// The OS error; `ENOENT` (no such file: older kernel) and `EOPNOTSUPP` (threaded cgroup) are
    /// the caller's cue to take the fallback.
    pub fn kill(&self) -> Result<()> {
        self.write_file("cgroup.kill", "1")
    }

    /// The child cgroups (one level).
    ///
    /// # Errors
    /// An OS error naming the directory.
    pub fn children(&self) -> Result<Vec<Cgroup>> {
        let mut out = Vec::new();
        let names = match self.child_names() {
            Ok(n) => n,
            Err(e) if is_gone(&e) => return Ok(out),
            Err(e) => return Err(e),
        };
        for name in names {
            match self.open_below(Path::new(&name)) {
                Ok(c) => out.push(c),
                Err(e) if is_gone(&e) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// A second handle on the same directory.
    ///
    /// # Errors
    /// `dup` failing (out of file descriptors).
    pub fn try_clone(&self) -> Result<Cgroup> {
        let fd = self
            .fd
            .try_clone()
            .map_err(|e| Error::os("dup", &self.path, errno_of(&e)))?;
        Ok(Cgroup {
            fd,
            rel: self.rel.clone(),
            path: self.path.clone(),
            ns_root: self.ns_root.clone(),
            ns_path: self.ns_path.clone(),
            ns_raw: self.ns_raw.clone(),
            id: self.id,
            uid: self.uid,
        })
    }

    /// Creates a child cgroup `name` (one component).
    ///
    /// # Errors
    /// `EEXIST` as [`Error::Busy`]; other OS errors naming the path.
    pub fn create_child(&self, name: &str) -> Result<Cgroup> {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(Error::Input(format!(
                "invalid cgroup name '{}'",
                name.escape_debug()
            )));
        }
        let path = self.path.join(name);
        match fs::mkdirat(&self.fd, name, Mode::from_raw_mode(0o755)) {
            Ok(()) => {}
            Err(Errno::EXIST) => {
                return Err(Error::Busy(format!(
                    "cgroup '{}' already exists",
                    path.display()
                )));
            }
            Err(e) => return Err(Error::os("create cgroup", &path, e)),
        }
        let fd = fs::openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
        )
        .map_err(|e| Error::os("open", &path, e))?;
        let rel = if self.rel == "/" {
            format!("/{name}")
        } else {
            format!("{}/{name}", self.rel)
        };
        Cgroup::from_fd(fd, rel, path, self.ns_root.clone())
    }

    /// Removes this cgroup and every empty cgroup below it, deepest first, until `until`.
    ///
    /// The subtree is the task's to shape, so the walk costs the same whatever its depth or
    /// width: it holds two descriptors, the names of at most [`REMOVE_BATCH`] siblings and of at
    /// most [`REMOVE_NAMED_LEVELS`] ancestors (deeper ones are found again by inode number in
    /// their parent). It goes down by one name at a time relative to a descriptor (never past
    /// a mount or a symlink) and up through `..`, which in cgroupfs is always the parent: a
    /// cgroup cannot be moved to another parent.
    ///
    /// # Errors
    /// `EBUSY` (still populated) and other OS errors, naming the directory; [`Error::Busy`]
    /// when `until` came first (what was removed stays removed). Already gone is fine.
    pub fn remove_tree(&self, until: Option<Instant>) -> Result<()> {
        remove_below(self.fd.as_fd(), &self.path, until)?;
        self.remove_self()
    }

    /// Removes this (empty) cgroup from its parent, by descriptor: only if the name there
    /// still is this directory (a cgroup removed and made afresh under the same name meanwhile,
    /// by a new `run`, say, stays).
    fn remove_self(&self) -> Result<()> {
        let name = self.path.file_name().filter(|_| !self.is_root());
        let Some(name) = name else {
            return Err(Error::Input(format!(
                "refusing to remove '{}': not a cgroup below the root",
                self.path.display()
            )));
        };
        let parent = match fs::openat(&self.fd, "..", DIR_FLAGS, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT | Errno::NODEV) => return Ok(()),
            Err(e) => return Err(Error::os("open the parent of", &self.path, e)),
        };
        let me = fs::fstat(&self.fd).map_err(|e| Error::os("stat", &self.path, e))?;
        match fs::statat(&parent, name, fs::AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if st.st_ino == me.st_ino && st.st_dev == me.st_dev => {}
            // Gone, or another cgroup by that name now: ours is removed already.
            Ok(_) | Err(Errno::NOENT | Errno::NODEV) => return Ok(()),
            Err(e) => return Err(Error::os("stat", &self.path, e)),
        }
        match fs::unlinkat(&parent, name, fs::AtFlags::REMOVEDIR) {
            Ok(()) | Err(Errno::NOENT | Errno::NODEV) => Ok(()),
            Err(e) => Err(Error::os("remove cgroup", &self.path, e)),
        }
    }

    /// Reads the xattr `name` (a full name, e.g. `trusted.gracekill.policy`); `None` if it is
    /// not set. At most 4 KiB is read, whatever the writer stored.
    ///
    /// # Errors
    /// An OS error naming the directory; a value longer than 4 KiB or not UTF-8 is
    /// [`Error::Input`].
    pub fn get_xattr(&self, name: &str) -> Result<Option<String>> {
        let mut buf = vec![0u8; 4096];
        match fs::fgetxattr(&self.fd, name, &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                String::from_utf8(buf).map(Some).map_err(|_| {
                    Error::Input(format!(
                        "xattr {name} on '{}' is not UTF-8",
                        self.path.display()
                    ))
                })
            }
            Err(Errno::NODATA) => Ok(None),
            Err(Errno::RANGE) => Err(Error::Input(format!(
                "xattr {name} on '{}' is longer than 4 KiB",
                self.path.display()
            ))),
            Err(e) => Err(Error::os(format!("read xattr {name} of"), &self.path, e)),
        }
    }

    /// Removes the xattr `name`; absent is fine.
    ///
    /// # Errors
    /// An OS error naming the directory.
    pub fn remove_xattr(&self, name: &str) -> Result<()> {
        match fs::fremovexattr(&self.fd, name) {
            Ok(()) | Err(Errno::NODATA) => Ok(()),
            Err(e) => Err(Error::os(
                format!("remove xattr {name} from"),
                &self.path,
                e,
            )),
        }
    }

    /// Sets the xattr `name`. With `create_only`, fails with [`Error::Busy`] if it is already
    /// set (`XATTR_CREATE`: an atomic claim).
    ///
    /// # Errors
    /// An OS error naming the directory.
    pub fn set_xattr(&self, name: &str, value: &str, create_only: bool) -> Result<()> {
        let flags = if create_only {
            fs::XattrFlags::CREATE
        } else {
            fs::XattrFlags::empty()
        };
        match fs::fsetxattr(&self.fd, name, value.as_bytes(), flags) {
            Ok(()) => Ok(()),
            Err(Errno::EXIST) if create_only => Err(Error::Busy(format!(
                "xattr {name} on '{}' is already set",
                self.path.display()
            ))),
            Err(e) => Err(Error::os(format!("set xattr {name} on"), &self.path, e)),
        }
    }

    /// Opens a file of this cgroup for writing, to write it later without another lookup and
    /// to learn now, before anything is signalled, whether we may.
    ///
    /// # Errors
    /// An OS error naming the file (`ENOENT`: the kernel lacks it; `EACCES`: not ours).
    pub fn open_for_write(&self, name: &str) -> Result<OwnedFd> {
        fs::openat(
            &self.fd,
            name,
            OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::os("open for writing", &self.file(name), e))
    }

    /// Visits this cgroup and every populated cgroup below it, parents before children,
    /// holding at most three descriptors whatever the tree's depth or width (descendants are
    /// opened by their path relative to this cgroup, one at a time). A subtree whose
    /// `cgroup.events` says `populated 0` holds no process and is skipped whole, so empty
    /// cgroups, however many, cost one read each at the level where they hang. A descendant that
    /// cannot be opened or listed is passed to `visit` as an error and its subtree skipped; a
    /// cgroup removed meanwhile is skipped silently. `visit` returning `Break` ends the walk.
    pub fn walk(
        &self,
        until: Option<Instant>,
        mut visit: impl FnMut(Result<&Cgroup>) -> std::ops::ControlFlow<()>,
    ) -> std::ops::ControlFlow<()> {
        use std::ops::ControlFlow::{Break, Continue};
        // Subtrees still to visit: an anchor (None: this cgroup) and a path relative to it.
        // Past 2 KiB of relative path a visited cgroup becomes the anchor of its children (one
        // descriptor more), so no path given to the kernel approaches PATH_MAX.
        let mut pending: Vec<(Option<Rc<Cgroup>>, PathBuf)> = vec![(None, PathBuf::new())];
        let mut opened_count = 0usize;
        while let Some((anchor, sub)) = pending.pop() {
            opened_count += 1;
            if opened_count.is_multiple_of(16) && until.is_some_and(|u| Instant::now() >= u) {
                return Break(());
            }
            let base: &Cgroup = anchor.as_deref().unwrap_or(self);
            let opened;
            let cg = if sub.as_os_str().is_empty() {
                base
            } else {
                match base.open_below(&sub) {
                    // Unreadable events: visit it anyway rather than skip a populated one.
                    Ok(c) if c.events().is_ok_and(|e| !e.populated) => continue,
                    Ok(c) => {
                        opened = c;
                        &opened
                    }
                    Err(e) if is_gone(&e) => continue,
                    Err(e) => {
                        visit(Err(e))?;
                        continue;
                    }
                }
            };
            visit(Ok(cg))?;
            let names = match cg.child_names() {
                Ok(names) => names,
                Err(e) if is_gone(&e) => continue,
                Err(e) => {
                    visit(Err(e))?;
                    continue;
                }
            };
            if names.is_empty() {
                continue;
            }
            let (child_anchor, prefix) = if sub.as_os_str().len() > 2048 {
                match cg.try_clone() {
                    Ok(c) => (Some(Rc::new(c)), PathBuf::new()),
                    Err(e) => {
                        visit(Err(e))?;
                        continue;
                    }
                }
            } else {
                (anchor.clone(), sub.clone())
            };
            for name in names.into_iter().rev() {
                pending.push((child_anchor.clone(), prefix.join(name)));
            }
        }
        Continue(())
    }

    /// The names of the child cgroups (one level), as the kernel spells them.
    fn child_names(&self) -> Result<Vec<OsString>> {
        first_children(&self.fd, usize::MAX).map_err(|e| Error::os("list", &self.path, e))
    }

    /// Opens the descendant at `sub` (relative to this cgroup), never following symlinks.
    fn open_below(&self, sub: &Path) -> Result<Cgroup> {
        let fd = fs::openat2(
            &self.fd,
            sub,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_XDEV,
        )
        .map_err(|e| Error::os("open", &self.path.join(sub), e))?;
        self.below(fd, sub)
    }

    /// The members listed in this cgroup alone: the pids in `cgroup.procs`, or else the thread
    /// ids in `cgroup.threads` (with `threaded` set) when `cgroup.procs` cannot be read (a
    /// threaded cgroup: `EOPNOTSUPP`) or lists no one. The second case is a process whose
    /// leader has exited (`pthread_exit`) and whose live threads are here: `cgroup.procs` lists
    /// only leaders, so such a cgroup is populated with an empty `cgroup.procs`. A cgroup
    /// removed under us has none.
    ///
    /// # Errors
    /// An OS error other than "gone".
    pub fn members(&self) -> Result<Members> {
        self.members_until(None).map(|(m, _)| m)
    }

    /// [`Cgroup::members`], reading no more once `until` has passed: the kernel produces these
    /// lists at about 1.2 us per member, so a cgroup of 30,000 processes takes tens of
    /// milliseconds to list. The clock is looked at between reads of 8 KiB (about 1,300 ids).
    /// Returns the members read and whether the lists were read whole.
    ///
    /// # Errors
    /// As [`Cgroup::members`].
    pub fn members_until(&self, until: Option<Instant>) -> Result<(Members, bool)> {
        let mut whole = true;
        let mut read = |name: &str| -> Result<Vec<i32>> {
            let (text, all) = self.read_file_until(name, until)?;
            whole &= all;
            Ok(parse_ids(&text))
        };
        let threads = |read: &mut dyn FnMut(&str) -> Result<Vec<i32>>| match read("cgroup.threads")
        {
            Ok(ids) => Ok(ids),
            Err(e) if is_gone(&e) => Ok(Vec::new()),
            Err(e) => Err(e),
        };
        // Threads first: a process that appears between the two reads is then in `ids` only,
        // never mistaken for a thread whose process is listed elsewhere.
        let first_threads = threads(&mut read);
        let m = match read("cgroup.procs") {
            Ok(ids) if ids.is_empty() => Members {
                ids: threads(&mut read)?,
                threaded: true,
                threads: Vec::new(),
            },
            Ok(ids) => Members {
                ids,
                threaded: false,
                // Unreadable: no thread is known, so each process is looked at more closely.
                threads: first_threads.unwrap_or_default(),
            },
            Err(e) if is_gone(&e) => Members::default(),
            Err(Error::Os {
                errno: Errno::OPNOTSUPP,
                ..
            }) => Members {
                ids: threads(&mut read)?,
                threaded: true,
                threads: Vec::new(),
            },
            Err(e) => return Err(e),
        };
        Ok((m, whole))
    }

    /// Is this cgroup threaded (`cgroup.type` is `threaded`)? Its `cgroup.kill` refuses to
    /// work (`EOPNOTSUPP`), and its members are threads.
    pub fn is_threaded(&self) -> bool {
        self.read_file("cgroup.type")
            .is_ok_and(|t| t.trim() == "threaded")
    }
}

/// What [`Cgroup::members`] found in one cgroup.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Members {
    /// Process ids, or thread ids when `threaded`.
    pub ids: Vec<i32>,
    /// The ids are thread ids from `cgroup.threads` (a threaded cgroup).
    pub threaded: bool,
    /// When `ids` are pids: every thread id in `cgroup.threads`, so that a thread whose process
    /// is listed elsewhere (its leader exited there) can be found here.
    pub threads: Vec<i32>,
}

fn parse_ids(text: &str) -> Vec<i32> {
    text.lines()
        .filter_map(|l| l.trim().parse().ok())
        .filter(|p| *p > 0)
        .collect()
}

/// `cgroup.events`, kept open: each [`EventsFile::read`] re-reads from offset 0, which re-arms
/// the kernfs notification (`POLLPRI`).
#[derive(Debug)]
pub struct EventsFile {
    fd: OwnedFd,
    path: PathBuf,
}

impl EventsFile {
    /// Reads the current state. A cgroup removed while we watch it reads as empty (systemd
    /// removes a scope's directory as soon as it empties).
    ///
    /// # Errors
    /// Any other OS error, naming the file.
    pub fn read(&self) -> Result<Events> {
        let mut buf = [0u8; 128];
        match rustix::io::pread(&self.fd, &mut buf, 0) {
            Ok(n) => Ok(Events::parse(&String::from_utf8_lossy(&buf[..n]))),
            Err(Errno::NOENT | Errno::NODEV) => Ok(Events::default()),
            Err(e) => Err(Error::os("read", &self.path, e)),
        }
    }

    /// The file descriptor, to register with epoll for `EPOLLPRI`.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The cgroup v2 path of `/proc/<proc_path>/cgroup` (`proc_path`: `<pid>` or
/// `<pid>/task/<tid>`), byte for byte: only the line's terminator is removed, so a cgroup named
/// `"web "` is never taken for `"web"`.
pub fn proc_cgroup(proc_path: &str) -> Option<Vec<u8>> {
    try_proc_cgroup(proc_path).ok().flatten()
}

/// [`proc_cgroup`], telling a process that is gone (`Ok(None)`: `ENOENT`, `ESRCH`) from a read
/// that failed (out of descriptors, say), for callers that must not take the one for the other.
///
/// # Errors
/// Opening or reading the file failed for another reason than the process being gone.
pub fn try_proc_cgroup(proc_path: &str) -> std::io::Result<Option<Vec<u8>>> {
    // Read in chunks: `std::fs::read` would first `statx` a file whose size procfs reports as 0.
    // Room for the usual file at once (a hybrid host's has a dozen lines): `read_to_end` into
    // an empty vector starts with a 32-byte probe and doubles, five reads for 300 bytes.
    let mut raw = Vec::with_capacity(4096);
    let read = std::fs::File::open(format!("/proc/{proc_path}/cgroup"))
        .and_then(|f| std::io::Read::read_to_end(&mut std::io::Read::take(f, 1 << 20), &mut raw));
    match read {
        Ok(_) => Ok(raw
            .split(|b| *b == b'\n')
            .find_map(|l| l.strip_prefix(b"0::"))
            .map(<[u8]>::to_vec)),
        Err(e) if is_gone_io(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A `/proc` file of a process that has exited (or was never there): `ENOENT`, `ESRCH`.
pub(crate) fn is_gone_io(e: &std::io::Error) -> bool {
    matches!(errno_of(e), Errno::NOENT | Errno::SRCH)
}

/// Is `inner` equal to `outer` or below it? Byte paths as `/proc/<pid>/cgroup` gives them.
pub fn is_within_bytes(inner: &[u8], outer: &[u8]) -> bool {
    outer == b"/"
        || inner == outer
        || (inner.starts_with(outer) && inner.get(outer.len()) == Some(&b'/'))
}

/// Flags for opening a cgroup directory to walk it.
const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::CLOEXEC)
    .union(OFlags::NOFOLLOW);

/// How many child names [`Cgroup::remove_tree`] reads from a directory at a time.
pub const REMOVE_BATCH: usize = 64;

/// How many ancestors' names [`Cgroup::remove_tree`] keeps (at most 255 bytes each); deeper
/// ones are looked up by inode number when they are removed.
pub const REMOVE_NAMED_LEVELS: usize = 1024;

#[derive(Debug, PartialEq, Eq)]
enum RemoveStep {
    More,
    Done,
}

/// The state of one bottom-up removal (see [`Cgroup::remove_tree`]).
struct Remover<'a> {
    /// The top of the subtree, for messages.
    top: &'a Path,
    /// The directory being emptied, `depth` levels below the top.
    cur: OwnedFd,
    /// The names of `cur` and its ancestors below the top, where known (the first
    /// [`REMOVE_NAMED_LEVELS`] levels).
    names: Vec<OsString>,
    depth: usize,
    removed: usize,
}

impl Remover<'_> {
    /// Where the walk is, for messages (its full path is not kept).
    fn here(&self) -> PathBuf {
        self.top.join(format!("<{} levels down>", self.depth))
    }

    /// Removes the leaf children of `cur` that come first in one read of it, or goes down into
    /// the first that has children of its own, or, when `cur` is empty, goes up and removes it.
    fn step(&mut self) -> Result<RemoveStep> {
        let batch = first_children(&self.cur, REMOVE_BATCH)
            .map_err(|e| Error::os("list", &self.here(), e))?;
        for name in &batch {
            match fs::unlinkat(&self.cur, name.as_os_str(), fs::AtFlags::REMOVEDIR) {
                Ok(()) => self.removed += 1,
                Err(Errno::NOENT | Errno::NODEV) => {}
                // It has children of its own (or processes: found out at the bottom).
                Err(Errno::BUSY | Errno::NOTEMPTY) => {
                    match fs::openat2(
                        &self.cur,
                        name.as_os_str(),
                        DIR_FLAGS,
                        Mode::empty(),
                        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_XDEV,
                    ) {
                        Ok(fd) => {
                            self.cur = fd;
                            self.depth += 1;
                            if self.names.len() < REMOVE_NAMED_LEVELS {
                                self.names.push(name.clone());
                            }
                            return Ok(RemoveStep::More);
                        }
                        Err(Errno::NOENT | Errno::NODEV) => {}
                        Err(e) => return Err(Error::os("open", &self.here().join(name), e)),
                    }
                }
                Err(e) => return Err(Error::os("remove cgroup", &self.here().join(name), e)),
            }
        }
        if !batch.is_empty() {
            return Ok(RemoveStep::More);
        }
        if self.depth == 0 {
            return Ok(RemoveStep::Done);
        }
        // `cur` is empty: up to its parent, and remove it there.
        let parent = fs::openat(&self.cur, "..", DIR_FLAGS, Mode::empty())
            .map_err(|e| Error::os("open the parent of", &self.here(), e))?;
        let name = if self.depth <= self.names.len() {
            self.names.pop()
        } else {
            let ino = fs::fstat(&self.cur)
                .map_err(|e| Error::os("stat", &self.here(), e))?
                .st_ino;
            name_of(&parent, ino).map_err(|e| Error::os("list", &self.here(), e))?
        };
        self.cur = parent;
        self.depth -= 1;
        if let Some(name) = name {
            match fs::unlinkat(&self.cur, name.as_os_str(), fs::AtFlags::REMOVEDIR) {
                Ok(()) => self.removed += 1,
                Err(Errno::NOENT | Errno::NODEV) => {}
                Err(e) => return Err(Error::os("remove cgroup", &self.here().join(&name), e)),
            }
        }
        Ok(RemoveStep::More)
    }
}

/// Removes every directory below `dir` (whose path, for messages, is `top`), deepest first, as
/// [`Cgroup::remove_tree`] describes; returns how many it removed. Works on any directory (the
/// unit tests use a temporary one), although only cgroups are removed this way in use.
fn remove_below(dir: BorrowedFd<'_>, top: &Path, until: Option<Instant>) -> Result<usize> {
    let mut remover = Remover {
        top,
        cur: fs::openat(dir, ".", DIR_FLAGS, Mode::empty())
            .map_err(|e| Error::os("open", top, e))?,
        names: Vec::new(),
        depth: 0,
        removed: 0,
    };
    loop {
        // A step is at most one listing and 64 removals: the clock (vDSO) costs nothing beside.
        if until.is_some_and(|u| Instant::now() >= u) {
            return Err(Error::Busy(format!(
                "gave up removing '{}' after removing {} cgroups: more cgroups below it \
                 remain (remove them deepest first with rmdir)",
                top.display(),
                remover.removed
            )));
        }
        if remover.step()? == RemoveStep::Done {
            return Ok(remover.removed);
        }
    }
}

/// The names of the first `max` child directories of `dir`, in the order the kernel lists them.
fn first_children(dir: &OwnedFd, max: usize) -> std::result::Result<Vec<OsString>, Errno> {
    let mut out = Vec::new();
    // cgroupfs (kernfs) counts a directory's links as 2 + its subdirectories, as a disk
    // filesystem does: a leaf, the usual cgroup, is known from one statx instead of reading the
    // directory's ~20 entries (an open, two reads and a close).
    if fs::statx(dir, "", fs::AtFlags::EMPTY_PATH, fs::StatxFlags::NLINK)
        .is_ok_and(|st| st.stx_mask & fs::StatxFlags::NLINK.bits() != 0 && st.stx_nlink == 2)
    {
        return Ok(out);
    }
    for entry in fs::Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if entry.file_type() == fs::FileType::Directory && name != b"." && name != b".." {
            out.push(OsStr::from_bytes(name).to_os_string());
            if out.len() == max {
                break;
            }
        }
    }
    Ok(out)
}

/// The name of the child directory of `dir` whose inode number is `ino`, if there is one.
fn name_of(dir: &OwnedFd, ino: u64) -> std::result::Result<Option<OsString>, Errno> {
    for entry in fs::Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if entry.ino() == ino && name != b"." && name != b".." {
            return Ok(Some(OsStr::from_bytes(name).to_os_string()));
        }
    }
    Ok(None)
}

/// Did this error mean "the cgroup is gone"?
pub fn is_gone(e: &Error) -> bool {
    matches!(
        e,
        Error::Os {
            errno: Errno::NOENT | Errno::NODEV,
            ..
        }
    )
}

/// Reads `fd` to its end, or until a read would start after `until`; then only whole lines are
/// kept. Returns the text and whether it is all of it.
fn read_all(fd: &OwnedFd, until: Option<Instant>) -> std::result::Result<(String, bool), Errno> {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let mut late = false;
    let whole = loop {
        match rustix::io::read(fd, &mut buf) {
            Ok(0) => break true,
            // Past the time, one more read only to see the end after a short one.
            Ok(_) if late => break false,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if until.is_some_and(|t| Instant::now() >= t) {
                    if n == buf.len() {
                        break false;
                    }
                    late = true;
                }
            }
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
    };
    if !whole {
        out.truncate(out.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1));
    }
    Ok((String::from_utf8_lossy(&out).into_owned(), whole))
}

pub(crate) fn errno_of(e: &std::io::Error) -> Errno {
    Errno::from_io_error(e).unwrap_or(Errno::IO)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh empty directory for one test, removed (what is left of it) at the end.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let p = std::env::temp_dir().join(format!("gk-unit-{}-{tag}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir(&p).unwrap();
            TempDir(p)
        }
        fn fd(&self) -> OwnedFd {
            fs::open(&self.0, DIR_FLAGS, Mode::empty()).unwrap()
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Makes `depth` nested directories `d` below `dir`, relative to descriptors (the path
    /// outgrows PATH_MAX).
    fn chain(dir: &Path, depth: usize) {
        let mut cur = fs::open(dir, DIR_FLAGS, Mode::empty()).unwrap();
        for _ in 0..depth {
            fs::mkdirat(&cur, "d", Mode::from_raw_mode(0o755)).unwrap();
            cur = fs::openat(&cur, "d", DIR_FLAGS, Mode::empty()).unwrap();
        }
    }

    #[test]
    fn removal_takes_deep_and_wide_trees() {
        let t = TempDir::new("rm-shape");
        for i in 0..300 {
            std::fs::create_dir(t.0.join(format!("w{i}"))).unwrap();
        }
        std::fs::create_dir_all(t.0.join("w7/x/y")).unwrap();
        // Deeper than the names kept: the deepest levels are found again by inode number.
        chain(&t.0, REMOVE_NAMED_LEVELS + 300);
        let fd = t.fd();
        // (How many descriptors the walk holds is checked by the root test that runs it under
        // a 64-descriptor limit: other unit tests open files in parallel with this one.)
        let removed = remove_below(fd.as_fd(), &t.0, None).unwrap();
        assert_eq!(removed, 300 + 2 + REMOVE_NAMED_LEVELS + 300);
        assert_eq!(std::fs::read_dir(&t.0).unwrap().count(), 0);
    }

    #[test]
    fn a_list_read_stops_at_its_time_with_whole_lines_and_says_so() {
        let dir = TempDir::new("listread");
        let path = dir.0.join("cgroup.procs");
        let text: String = (100_000..120_000).map(|p| format!("{p}\n")).collect();
        std::fs::write(&path, &text).unwrap();
        let open = || -> OwnedFd { std::fs::File::open(&path).unwrap().into() };
        assert_eq!(read_all(&open(), None).unwrap(), (text.clone(), true));
        let far = Instant::now() + std::time::Duration::from_secs(3600);
        assert_eq!(read_all(&open(), Some(far)).unwrap(), (text.clone(), true));
        // Already past: one read of 8 KiB, cut back to its last whole line.
        let (part, whole) = read_all(&open(), Some(Instant::now())).unwrap();
        assert!(!whole);
        assert!(!part.is_empty() && part.len() <= 8192 && part.ends_with('\n'));
        assert!(text.starts_with(&part));
        assert_eq!(parse_ids(&part).len(), part.len() / 7);
        // A file that fits in one read is whole even when the time is up.
        std::fs::write(&path, "1\n2\n").unwrap();
        assert_eq!(
            read_all(&open(), Some(Instant::now())).unwrap(),
            ("1\n2\n".to_string(), true)
        );
    }

    #[test]
    fn removal_gives_up_at_its_deadline_and_on_what_it_cannot_remove() {
        let t = TempDir::new("rm-limits");
        for i in 0..200 {
            std::fs::create_dir(t.0.join(format!("w{i}"))).unwrap();
        }
        let fd = t.fd();
        let e = remove_below(fd.as_fd(), &t.0, Some(Instant::now())).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Busy, "{e}");
        assert!(e.to_string().contains("gave up removing"), "{e}");
        // A directory that cannot be emptied (here a file in it; in cgroupfs, a process)
        // ends the walk with its error instead of looping.
        std::fs::create_dir_all(t.0.join("w3/held")).unwrap();
        std::fs::write(t.0.join("w3/held/file"), "x").unwrap();
        let e = remove_below(fd.as_fd(), &t.0, None).unwrap_err();
        assert_eq!(e.errno(), Some(Errno::NOTEMPTY.raw_os_error()), "{e}");
        assert!(t.0.join("w3/held/file").exists());
    }

    #[test]
    fn finds_cgroup2_in_hybrid_and_pure_mountinfo() {
        let hybrid = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
                      37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer\n\
                      41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(
            parse_mountinfo(hybrid),
            Some(("/sys/fs/cgroup/unified".into(), "/".into()))
        );
        let pure =
            "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            parse_mountinfo(pure),
            Some(("/sys/fs/cgroup".into(), "/".into()))
        );
        let odd = "30 23 0:26 /docker/abc /mnt/my\\040cg rw - cgroup2 none rw\n";
        assert_eq!(
            parse_mountinfo(odd),
            Some(("/mnt/my cg".into(), "/docker/abc".into()))
        );
        assert_eq!(
            parse_mountinfo("31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n"),
            None
        );
        // In a cgroup namespace: a mount made outside it is passed over for one made inside.
        let ns = "30 23 0:26 /../.. /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n\
                  90 23 0:26 / /mnt/cg rw - cgroup2 cgroup2 rw\n";
        assert_eq!(parse_mountinfo(ns), Some(("/mnt/cg".into(), "/".into())));
        for outside in ["/..", "/../..", "/../b/c", "/a/../.."] {
            let line = format!("30 23 0:26 {outside} /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
            assert_eq!(parse_mountinfo(&line), None, "{outside}");
        }
        // A name that merely holds dots is inside.
        let dots = "30 23 0:26 /a/..b/... /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            parse_mountinfo(dots),
            Some(("/sys/fs/cgroup".into(), "/a/..b/...".into()))
        );
    }

    #[test]
    fn normalizes_and_refuses_dot_dot() {
        assert_eq!(normalize("a//b/").unwrap(), "/a/b");
        assert_eq!(normalize("/").unwrap(), "/");
        assert_eq!(normalize("").unwrap(), "/");
        assert!(normalize("/a/../b").is_err());
        assert!(normalize("./a").is_err());
        assert!(normalize("a\0b").is_err());
    }

    #[test]
    fn ancestry() {
        assert!(is_within_bytes(b"/a/b", b"/a"));
        assert!(is_within_bytes(b"/a", b"/a"));
        assert!(is_within_bytes(b"/a", b"/"));
        assert!(!is_within_bytes(b"/ab", b"/a"));
        assert!(!is_within_bytes(b"/a", b"/a/b"));
        assert_eq!(parent_of("/a/b"), "/a");
        assert_eq!(parent_of("/a"), "/");
    }

    #[test]
    fn events_parse() {
        assert_eq!(
            Events::parse("populated 1\nfrozen 0\n"),
            Events {
                populated: true,
                frozen: false
            }
        );
        assert_eq!(
            Events::parse("populated 0\nfrozen 1\n"),
            Events {
                populated: false,
                frozen: true
            }
        );
    }
}
