/* The kernel floor as a whole process: the least a stopper that is its own program can do.
 *
 *   gkbench-floor CGROUP_DIR GRACE_MS
 *
 * kill(2) every pid in CGROUP_DIR/cgroup.procs with SIGTERM, block in poll(POLLPRI) on
 * cgroup.events until "populated 0" or the deadline (GRACE_MS after the signals), then write
 * cgroup.kill and wait for "populated 0" again. Prints one line, `late_ms X` (how long after the
 * deadline cgroup.kill was written) or `late_ms -` (emptied in time), and exits 0; 1 on error.
 *
 * No pidfds, no membership proof, no second enumeration, no report: the bench compares the
 * gracekill CLI (a whole process too) against this. Plain kill(2) is safe in the scenarios it
 * runs in, as for the in-process floor (benches/support/contenders.rs).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* 1 if cgroup.events says "populated 0" (or the cgroup is gone), 0 if populated, -1 on error. */
static int empty(int ev) {
    char buf[128];
    ssize_t n = pread(ev, buf, sizeof buf - 1, 0);
    if (n < 0)
        return -1;
    buf[n] = 0;
    return strstr(buf, "populated 1") == NULL;
}

/* Waits until the cgroup is empty or `deadline` (ms, CLOCK_MONOTONIC): 1 emptied, 0 not. */
static int wait_empty(int ev, double deadline) {
    for (;;) {
        int e = empty(ev);
        if (e != 0)
            return e;
        double left = deadline - now_ms();
        if (left <= 0)
            return 0;
        struct timespec ts = {(time_t)(left / 1e3), (long)((left - (time_t)(left / 1e3) * 1e3) * 1e6)};
        struct pollfd p = {ev, POLLPRI, 0};
        ppoll(&p, 1, &ts, NULL);
    }
}

int main(int argc, char **argv) {
    if (argc != 3)
        return 1;
    int dir = open(argv[1], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int ev = openat(dir, "cgroup.events", O_RDONLY | O_CLOEXEC);
    FILE *procs = fdopen(openat(dir, "cgroup.procs", O_RDONLY | O_CLOEXEC), "r");
    if (dir < 0 || ev < 0 || !procs)
        return 1;
    double grace = atof(argv[2]);
    double signal_at = now_ms();
    int pid;
    while (fscanf(procs, "%d", &pid) == 1)
        kill(pid, SIGTERM);
    fclose(procs);
    int e = wait_empty(ev, signal_at + grace);
    if (e < 0)
        return 1;
    if (e) {
        puts("late_ms -");
        return 0;
    }
    double kill_at = now_ms();
    int k = openat(dir, "cgroup.kill", O_WRONLY | O_CLOEXEC);
    if (k < 0 || write(k, "1", 1) != 1)
        return 1;
    if (wait_empty(ev, kill_at + 10e3) != 1)
        return 1;
    printf("late_ms %.3f\n", kill_at - signal_at - grace);
    return 0;
}
