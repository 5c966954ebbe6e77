/*
 * drop_held_thread.c - a task in a threaded cgroup that, once asked to stop,
 * ends the one thread a stopper is most likely to hold, then hides its lists
 * (test helper for gracekill).
 *
 * Usage:  drop_held_thread CGROUP_DIR
 *
 *   Start it with its process in the threaded cgroup CGROUP_DIR. It blocks
 *   SIGTERM, starts 3 worker threads (in CGROUP_DIR, like their creator) and
 *   prints "ready <tgid>\n". The caller may then move the main thread
 *   elsewhere (another threaded cgroup of the same subtree), so that only the
 *   workers are listed in CGROUP_DIR/cgroup.threads.
 *
 *   On SIGTERM (taken by sigwait in the main thread) it reads
 *   CGROUP_DIR/cgroup.threads, picks the first listed thread that is one of
 *   its workers (a stopper that walks the list in order met that one first),
 *   makes that worker exit and joins it, then chmods CGROUP_DIR/cgroup.procs
 *   and CGROUP_DIR/cgroup.threads to 0 (possible for the files' owner, as in
 *   a delegated subtree). It prints "dropped <tid>\n" and waits forever;
 *   later SIGTERMs stay blocked, only SIGKILL ends it.
 *
 *   Exit status 1 with a message on stderr if any step fails.
 *
 * Build: cc -O2 -Wall -Wextra -o drop_held_thread drop_held_thread.c -lpthread
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define WORKERS 3

static pthread_t threads[WORKERS];
static pid_t tids[WORKERS];
static int pipes[WORKERS][2];
static pthread_barrier_t started;

static void die(const char *what)
{
	fprintf(stderr, "drop_held_thread: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void *worker(void *arg)
{
	int i = (int)(long)arg;
	char c;

	tids[i] = (pid_t)syscall(SYS_gettid);
	pthread_barrier_wait(&started);
	while (read(pipes[i][0], &c, 1) < 0 && errno == EINTR)
		;
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s CGROUP_DIR\n", argv[0]);
		return 1;
	}
	char threads_file[4096], procs_file[4096];
	snprintf(threads_file, sizeof(threads_file), "%s/cgroup.threads", argv[1]);
	snprintf(procs_file, sizeof(procs_file), "%s/cgroup.procs", argv[1]);

	sigset_t term;
	sigemptyset(&term);
	sigaddset(&term, SIGTERM);
	if (pthread_sigmask(SIG_BLOCK, &term, NULL))
		die("block SIGTERM");
	pthread_barrier_init(&started, NULL, WORKERS + 1);
	for (int i = 0; i < WORKERS; i++) {
		if (pipe2(pipes[i], O_CLOEXEC))
			die("pipe2");
		if (pthread_create(&threads[i], NULL, worker, (void *)(long)i))
			die("pthread_create");
	}
	pthread_barrier_wait(&started);
	printf("ready %d\n", (int)getpid());
	fflush(stdout);

	int sig;
	if (sigwait(&term, &sig))
		die("sigwait");

	char buf[65536];
	int fd = open(threads_file, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		die("open cgroup.threads");
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	if (n < 0)
		die("read cgroup.threads");
	close(fd);
	buf[n] = 0;
	int victim = -1;
	for (char *p = buf; *p && victim < 0;) {
		pid_t tid = (pid_t)atoi(p);
		for (int i = 0; i < WORKERS; i++)
			if (tids[i] == tid)
				victim = i;
		p = strchr(p, '\n');
		if (!p)
			break;
		p++;
	}
	if (victim < 0) {
		fprintf(stderr, "drop_held_thread: no worker listed in %s\n", threads_file);
		return 1;
	}
	if (write(pipes[victim][1], "x", 1) != 1)
		die("wake the worker");
	pthread_join(threads[victim], NULL);
	if (chmod(procs_file, 0) || chmod(threads_file, 0))
		die("chmod the lists");
	printf("dropped %d\n", (int)tids[victim]);
	fflush(stdout);
	for (;;)
		sigwait(&term, &sig);
}
