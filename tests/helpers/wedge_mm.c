/*
 * wedge_mm.c - wedge this process's own mmap_lock (test helper for gracekill).
 *
 * Usage:  wedge_mm MOUNTDIR          (must run as root; MOUNTDIR = existing empty dir)
 *
 * What it does
 *   1. Mounts a tiny FUSE filesystem at MOUNTDIR, speaking the raw /dev/fuse
 *      protocol (no libfuse).  It serves a single 4096-byte file "MOUNTDIR/f".
 *      The FUSE daemon is a fork()ed child that answers INIT/LOOKUP/GETATTR/
 *      OPEN/... but NEVER answers FUSE_READ (and ignores FUSE_INTERRUPT).
 *      FUSE_ASYNC_READ is not negotiated, so reads are synchronous requests.
 *   2. The main process mmap()s f and starts thread R, which pread()s the
 *      mapped address through /proc/self/mem.  That goes through
 *      access_remote_vm() -> get_user_pages_remote(..., locked=NULL), i.e. a
 *      page fault WITHOUT FAULT_FLAG_ALLOW_RETRY, so R sleeps in the FUSE
 *      request while HOLDING mmap_lock for read.  (A plain touch, mlock,
 *      MADV_POPULATE_READ, read(2)/write(2) into/from the mapping and
 *      process_vm_readv all fault with retry allowed or under the per-VMA lock
 *      and do not keep mmap_lock: see FACTS.md.)
 *   3. Thread W then calls mmap(), which queues for mmap_lock in WRITE mode
 *      behind R (killable sleep).  From now on every mmap_read_lock() of this
 *      mm (e.g. /proc/PID/cmdline, environ, maps, ...) queues behind W and
 *      blocks (killable, state D).
 *   4. Prints "wedged <pid>\n" (flushed) on stdout and pause()s forever.
 *      SIGTERM, SIGINT, SIGHUP and SIGPIPE are ignored (process-wide); the
 *      worker threads block all signals.  The FUSE daemon ignores every
 *      catchable signal too.  Only SIGKILL ends it.
 *
 * Exit / cleanup
 *   On SIGKILL of the wedger (kill -9 PID, or cgroup.kill of its cgroup), W's
 *   killable wait aborts, the cmdline readers proceed at once, the main thread
 *   exits, the daemon gets PR_SET_PDEATHSIG=SIGKILL, the FUSE connection is
 *   aborted (daemon's /dev/fuse closed), R's request fails and the process is
 *   fully reaped.  The daemon also exits if reading /dev/fuse gives ENODEV
 *   (connection aborted / unmounted) or if it gets reparented.
 *   The mount itself is NOT removed (a dead connection stays mounted):
 *   the test must run `umount -l MOUNTDIR` (or umount2(MNT_DETACH)) afterwards.
 *   The daemon is a child of the wedger and lives in the same cgroup.
 *
 * Test usage
 *   spawn `wedge_mm DIR` inside the task cgroup, read the line "wedged PID",
 *   then exercise the kill engine; afterwards `umount -l DIR`.
 *
 * Exit status: 1 = setup error (message on stderr), never returns otherwise.
 *
 * Debug knob: env GK_WEDGE_METHOD=procmem|touch|populate|mlock|pipewrite|
 *   readinto|pvr selects how R touches the FUSE page (default procmem, the
 *   only one that holds mmap_lock on 6.18); env GK_WEDGE_NOWRITER=1 skips W.
 *
 * Build: cc -O2 -Wall -Wextra -o wedge_mm wedge_mm.c -lpthread
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/fuse.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif

#define FILE_SIZE 4096
#define FILE_INO 2
#define BUFSZ (256 * 1024)

static void die(const char *what)
{
	fprintf(stderr, "wedge_mm: %s: %s\n", what, strerror(errno));
	exit(1);
}

/* ------------------------------------------------------------------ */
/* FUSE daemon                                                          */

static int fuse_fd = -1;
static int ready_pipe_w = -1; /* daemon -> main: "a READ arrived" */

static void reply(uint64_t unique, int error, const void *data, size_t len)
{
	struct fuse_out_header oh;
	struct iovec iov[2];

	oh.len = sizeof(oh) + (error ? 0 : len);
	oh.error = error; /* 0 or -errno */
	oh.unique = unique;
	iov[0].iov_base = &oh;
	iov[0].iov_len = sizeof(oh);
	iov[1].iov_base = (void *)data;
	iov[1].iov_len = error ? 0 : len;
	if (writev(fuse_fd, iov, error || !len ? 1 : 2) < 0 && errno == ENODEV)
		_exit(0);
}

static void fill_attr(struct fuse_attr *a, uint64_t ino)
{
	memset(a, 0, sizeof(*a));
	a->ino = ino;
	a->nlink = 1;
	a->blksize = 4096;
	if (ino == FUSE_ROOT_ID) {
		a->mode = S_IFDIR | 0755;
		a->nlink = 2;
	} else {
		a->mode = S_IFREG | 0644;
		a->size = FILE_SIZE;
		a->blocks = FILE_SIZE / 512;
	}
}

static void daemon_loop(pid_t parent)
{
	char *buf = malloc(BUFSZ);
	int reads = 0;

	if (!buf)
		_exit(1);
	for (;;) {
		if (getppid() != parent)
			_exit(0);
		ssize_t n = read(fuse_fd, buf, BUFSZ);
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN || errno == ENOENT)
				continue; /* ENOENT: request was interrupted/aborted */
			_exit(0);  /* ENODEV: connection aborted / unmounted */
		}
		if ((size_t)n < sizeof(struct fuse_in_header))
			continue;
		struct fuse_in_header *ih = (void *)buf;
		void *arg = buf + sizeof(*ih);

		switch (ih->opcode) {
		case FUSE_INIT: {
			struct fuse_init_in *in = arg;
			struct fuse_init_out out;
			memset(&out, 0, sizeof(out));
			out.major = FUSE_KERNEL_VERSION;
			out.minor = in->minor < FUSE_KERNEL_MINOR_VERSION ?
					    in->minor : FUSE_KERNEL_MINOR_VERSION;
			out.max_readahead = 0; /* no readahead: plain ->read_folio */
			out.flags = 0;         /* no FUSE_ASYNC_READ: sync READs */
			out.max_background = 16;
			out.congestion_threshold = 12;
			out.max_write = 4096;
			out.time_gran = 1;
			out.max_pages = 1;
			reply(ih->unique, 0, &out, sizeof(out));
			break;
		}
		case FUSE_LOOKUP: {
			struct fuse_entry_out e;
			if (ih->nodeid != FUSE_ROOT_ID || strcmp(arg, "f") != 0) {
				reply(ih->unique, -ENOENT, NULL, 0);
				break;
			}
			memset(&e, 0, sizeof(e));
			e.nodeid = FILE_INO;
			e.generation = 1;
			e.entry_valid = 3600;
			e.attr_valid = 3600;
			fill_attr(&e.attr, FILE_INO);
			reply(ih->unique, 0, &e, sizeof(e));
			break;
		}
		case FUSE_GETATTR: {
			struct fuse_attr_out a;
			memset(&a, 0, sizeof(a));
			a.attr_valid = 3600;
			fill_attr(&a.attr, ih->nodeid);
			reply(ih->unique, 0, &a, sizeof(a));
			break;
		}
		case FUSE_OPEN:
		case FUSE_OPENDIR: {
			struct fuse_open_out o;
			memset(&o, 0, sizeof(o));
			o.fh = 1;
			o.open_flags = 0; /* page cache, mmap allowed */
			reply(ih->unique, 0, &o, sizeof(o));
			break;
		}
		case FUSE_READDIR:
			reply(ih->unique, 0, NULL, 0); /* empty dir listing */
			break;
		case FUSE_STATFS: {
			struct fuse_statfs_out s;
			memset(&s, 0, sizeof(s));
			s.st.bsize = 4096;
			s.st.frsize = 4096;
			s.st.namelen = 255;
			reply(ih->unique, 0, &s, sizeof(s));
			break;
		}
		case FUSE_FLUSH:
		case FUSE_RELEASE:
		case FUSE_RELEASEDIR:
		case FUSE_ACCESS:
		case FUSE_FSYNC:
		case FUSE_FSYNCDIR:
		case FUSE_DESTROY:
			reply(ih->unique, 0, NULL, 0);
			break;
		case FUSE_FORGET:
		case FUSE_BATCH_FORGET:
		case FUSE_INTERRUPT:
			break; /* no reply; INTERRUPT deliberately ignored */
		case FUSE_READ:
			/* never answered: this is the wedge */
			if (reads++ == 0 && ready_pipe_w >= 0) {
				if (write(ready_pipe_w, "R", 1) < 0) { /* ignore */ }
				close(ready_pipe_w);
				ready_pipe_w = -1;
			}
			break;
		default:
			reply(ih->unique, -ENOSYS, NULL, 0);
			break;
		}
	}
}

/* ------------------------------------------------------------------ */
/* wedger                                                               */

static char *map;
static volatile int writer_done;
static const char *method = "procmem";

static void block_all_signals(void)
{
	sigset_t all;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
}

static void *reader_thread(void *unused)
{
	char c = 0;
	ssize_t r = 0;
	(void)unused;
	block_all_signals();

	if (!strcmp(method, "procmem")) {
		int mfd = open("/proc/self/mem", O_RDONLY | O_CLOEXEC);
		if (mfd < 0)
			die("open /proc/self/mem");
		r = pread(mfd, &c, 1, (off_t)(uintptr_t)map);
	} else if (!strcmp(method, "touch")) {
		c = *(volatile char *)map;
	} else if (!strcmp(method, "populate")) {
		r = madvise(map, FILE_SIZE, MADV_POPULATE_READ);
	} else if (!strcmp(method, "mlock")) {
		r = mlock(map, FILE_SIZE);
	} else if (!strcmp(method, "pipewrite")) {
		int p[2];
		if (pipe(p) < 0)
			die("pipe");
		r = write(p[1], map, FILE_SIZE); /* copy_from_user faults */
	} else if (!strcmp(method, "readinto")) {
		int z = open("/dev/zero", O_RDONLY);
		r = read(z, map, FILE_SIZE); /* copy_to_user faults (COW) */
	} else if (!strcmp(method, "pvr")) {
		struct iovec l = { &c, 1 }, rv = { map, 1 };
		r = syscall(SYS_process_vm_readv, getpid(), &l, 1UL, &rv, 1UL, 0UL);
	} else {
		fprintf(stderr, "wedge_mm: unknown method %s\n", method);
		exit(1);
	}
	fprintf(stderr, "wedge_mm: reader returned (r=%zd errno=%d c=%d): unwedged\n",
		r, errno, c);
	for (;;)
		pause();
	return NULL;
}

static int go_pipe[2];

static void *writer_thread(void *unused)
{
	char go;
	(void)unused;
	block_all_signals();
	/* created before the wedge (pthread_create itself needs mmap_lock) */
	if (read(go_pipe[0], &go, 1) != 1)
		for (;;)
			pause();
	/* needs mmap_lock for write: queues behind the reader */
	void *p = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	writer_done = 1;
	fprintf(stderr, "wedge_mm: writer mmap returned %p\n", p);
	for (;;)
		pause();
	return NULL;
}

static char task_state(pid_t tid)
{
	char path[64], buf[512];
	snprintf(path, sizeof(path), "/proc/self/task/%d/stat", tid);
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return '?';
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return '?';
	buf[n] = 0;
	char *p = strrchr(buf, ')');
	return p && p[1] && p[2] ? p[2] : '?';
}

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

static pid_t writer_tid;
static void *writer_start(void *a)
{
	writer_tid = (pid_t)syscall(SYS_gettid);
	return writer_thread(a);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s MOUNTDIR\n", argv[0]);
		return 1;
	}
	const char *dir = argv[1];
	if (getenv("GK_WEDGE_METHOD"))
		method = getenv("GK_WEDGE_METHOD");
	int nowriter = getenv("GK_WEDGE_NOWRITER") != NULL;

	signal(SIGTERM, SIG_IGN);
	signal(SIGINT, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);

	fuse_fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
	if (fuse_fd < 0)
		die("open /dev/fuse");
	char opts[128];
	snprintf(opts, sizeof(opts), "fd=%d,rootmode=40000,user_id=0,group_id=0,allow_other",
		 fuse_fd);
	if (mount("gkwedge", dir, "fuse.gkwedge", MS_NOSUID | MS_NODEV, opts) < 0)
		die("mount fuse");

	int rp[2];
	if (pipe2(rp, O_CLOEXEC) < 0)
		die("pipe");
	pid_t parent = getpid();
	pid_t d = fork();
	if (d < 0)
		die("fork");
	if (d == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(0);
		for (int s = 1; s < NSIG; s++)
			signal(s, SIG_IGN); /* SIGKILL/SIGSTOP fail harmlessly */
		close(rp[0]);
		ready_pipe_w = rp[1];
		daemon_loop(parent);
		_exit(0);
	}
	close(fuse_fd);
	close(rp[1]);

	char path[4096];
	snprintf(path, sizeof(path), "%s/f", dir);
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		die("open fuse file");
	int prot = PROT_READ;
	if (!strcmp(method, "readinto"))
		prot |= PROT_WRITE;
	map = mmap(NULL, FILE_SIZE, prot, MAP_PRIVATE, fd, 0);
	if (map == MAP_FAILED)
		die("mmap fuse file");
	close(fd);

	/*
	 * Everything that may need mmap_lock in this thread (thread stacks,
	 * stdio buffers) must be set up before the wedge.
	 */
	pthread_t t;
	if (pipe2(go_pipe, O_CLOEXEC) < 0)
		die("pipe");
	if (!nowriter && pthread_create(&t, NULL, writer_start, NULL))
		die("pthread_create writer");
	if (pthread_create(&t, NULL, reader_thread, NULL))
		die("pthread_create reader");
	char c;
	if (read(rp[0], &c, 1) != 1) {
		fprintf(stderr, "wedge_mm: daemon never saw FUSE_READ\n");
		return 1;
	}
	close(rp[0]);
	sleep_ms(100); /* let the reader settle into the request wait */

	if (!nowriter) {
		if (write(go_pipe[1], "G", 1) != 1)
			die("write go pipe");
		int i;
		for (i = 0; i < 500; i++) { /* up to 5 s */
			sleep_ms(10);
			if (writer_done) {
				fprintf(stderr, "wedge_mm: method %s does not hold mmap_lock\n",
					method);
				return 1;
			}
			if (writer_tid && task_state(writer_tid) == 'D')
				break;
		}
		if (i == 500) {
			fprintf(stderr, "wedge_mm: writer never blocked\n");
			return 1;
		}
	}
	char line[64];
	int len = snprintf(line, sizeof(line), "wedged %d\n", (int)getpid());
	if (write(1, line, len) != len) /* no stdio: malloc could need mmap_lock */
		return 1;
	for (;;)
		pause();
}
