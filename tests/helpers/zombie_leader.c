/*
 * zombie_leader.c - a process whose thread-group leader is a zombie while a
 * second thread lives on in ANOTHER cgroup (test helper for gracekill).
 *
 * Usage:  zombie_leader CG_A_PROCS CG_B_FILE
 *
 *   Start it with its process already in cgroup A (e.g. `echo $$ >
 *   A/cgroup.procs; exec zombie_leader A/cgroup.procs B/cgroup.threads`).
 *   CG_A_PROCS is only used for a sanity check (our tgid must be listed
 *   there; if not, the program writes "0" to it to move itself into A).
 *   CG_B_FILE is where the live thread writes its own tid:
 *     - B/cgroup.threads when A and B are threaded cgroups under the same
 *       threaded-domain parent (thread migration; only allowed inside one
 *       threaded subtree, EOPNOTSUPP between domain cgroups), or
 *     - B/cgroup.procs when A and B are sibling domain cgroups.
 *
 *   Sequence: main() creates thread T, then pthread_exit()s, so the leader
 *   becomes a zombie (state Z) while T lives.  T waits until the leader is Z,
 *   then writes its tid to CG_B_FILE.  Because the leader has already
 *   exited (PF_EXITING), the kernel migrates only T, also for cgroup.procs:
 *   the zombie leader stays in A (writing cgroup.procs BEFORE the leader
 *   exits would move the whole process, leader included, to B).
 *   Then T prints "ready <tgid> <tid>\n" (flushed) on stdout and sleeps in
 *   pause() forever with default signal dispositions (SIGTERM kills).
 *
 *   Env ZL_MIGRATE=before: T writes CG_B_FILE before the leader exits
 *   (for exploring; with cgroup.procs that moves the whole process).
 *
 *   Exit status 1 (whole process) if the migration write fails; the error is
 *   printed on stderr as "zombie_leader: write CG_B_FILE: <strerror> (errno N)".
 *
 *   Resulting state on 6.18 (see FACTS.md): A's cgroup.procs still lists the
 *   tgid (domain A) while A's "populated" is 0; B is "populated 1" but B's
 *   cgroup.procs does not list the process (domain B) or is unreadable with
 *   EOPNOTSUPP (threaded B); only B's cgroup.threads lists the live tid.
 *   cgroup.kill does NOT kill this process: writing 1 to A, B (domain
 *   layout), or to the threaded-domain parent succeeds but is a no-op, and
 *   fails with EOPNOTSUPP on threaded A/B.  kill(2)/pidfd_send_signal() to
 *   the tgid or the live tid does kill it.  This holds even with no
 *   migration at all (CG_B_FILE = A's cgroup.procs): any process whose
 *   leader has pthread_exit()ed survives cgroup.kill.
 *   For a threaded A, CG_A_PROCS cannot be read (EOPNOTSUPP); the program
 *   then writes "0" to it, which is a no-op if it already is in A.
 *
 * Build: cc -O2 -Wall -Wextra -o zombie_leader zombie_leader.c -lpthread
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static const char *a_procs, *b_file;
static pid_t tgid;
static int migrate_before;

static int write_str(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ssize_t n = write(fd, s, strlen(s));
	int e = errno;
	close(fd);
	return n < 0 ? -e : 0;
}

static int listed(const char *path, pid_t pid)
{
	char buf[65536];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	for (char *p = buf; *p;) {
		if (atoi(p) == pid)
			return 1;
		p = strchr(p, '\n');
		if (!p)
			break;
		p++;
	}
	return 0;
}

static char leader_state(void)
{
	char path[64], buf[512];
	snprintf(path, sizeof(path), "/proc/self/task/%d/stat", (int)tgid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
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

static void migrate(pid_t tid)
{
	char s[32];
	snprintf(s, sizeof(s), "%d", (int)tid);
	int r = write_str(b_file, s);
	if (r < 0) {
		fprintf(stderr, "zombie_leader: write %s: %s (errno %d)\n", b_file,
			strerror(-r), -r);
		exit(1);
	}
}

static void *live_thread(void *unused)
{
	(void)unused;
	pid_t tid = (pid_t)syscall(SYS_gettid);

	if (migrate_before)
		migrate(tid);
	/* wait (up to 10 s) for the leader to become a zombie */
	for (int i = 0; i < 10000 && leader_state() != 'Z'; i++) {
		struct timespec ts = { 0, 1000000 };
		nanosleep(&ts, NULL);
	}
	if (leader_state() != 'Z') {
		fprintf(stderr, "zombie_leader: leader never became a zombie\n");
		exit(1);
	}
	if (!migrate_before)
		migrate(tid);
	printf("ready %d %d\n", (int)tgid, (int)tid);
	fflush(stdout);
	for (;;)
		pause();
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: %s CG_A_PROCS CG_B_THREADS_OR_PROCS\n", argv[0]);
		return 1;
	}
	a_procs = argv[1];
	b_file = argv[2];
	tgid = getpid();
	const char *m = getenv("ZL_MIGRATE");
	migrate_before = m && !strcmp(m, "before");

	if (!listed(a_procs, tgid)) {
		int r = write_str(a_procs, "0");
		if (r < 0) {
			fprintf(stderr, "zombie_leader: write 0 to %s: %s\n", a_procs,
				strerror(-r));
			return 1;
		}
	}
	pthread_t t;
	if (pthread_create(&t, NULL, live_thread, NULL)) {
		fprintf(stderr, "zombie_leader: pthread_create failed\n");
		return 1;
	}
	pthread_exit(NULL); /* leader -> zombie; process lives on in T */
}
