/*
 * The smallest C embedder of libgracekill: stop one task, print what happened.
 *
 * Built against an installed copy (ci/install-lib, or the libgracekill-dev package) with no
 * flags but pkg-config's, shared or fully static:
 *   cc -o stop_task examples/c/stop_task.c $(pkg-config --cflags --libs gracekill)
 *   cc -static -o stop_task examples/c/stop_task.c $(pkg-config --static --cflags --libs gracekill)
 *
 * Usage: stop_task TASK GRACE_MS
 *   TASK as `gracekill stop` takes it: a cgroup path, a path under the cgroup2 mount, or a name
 *   under gracekill's root. The stop signal is SIGTERM; what is left after GRACE_MS is killed.
 *
 * Prints `libgracekill VERSION abi N`, `verdict=NAME exit_code=N`, then `json: {...}` (the
 * outcome `gracekill stop --json` prints). Exits with the outcome's exit code (0 graceful or
 * empty, 3 killed, 4 survivors), or 2 when the stop was refused or failed (nothing signalled),
 * with the library's one-line message on stderr.
 */
#include <gracekill.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s TASK GRACE_MS\n", argv[0]);
    return 2;
  }
  char *end = NULL;
  errno = 0;
  unsigned long grace = strtoul(argv[2], &end, 10);
  if (errno != 0 || end == argv[2] || *end != '\0' || grace > 86400000UL) {
    fprintf(stderr, "%s: GRACE_MS must be milliseconds (0 to 86400000), not '%s'\n", argv[0],
            argv[2]);
    return 2;
  }
  if (gracekill_abi_version() < GRACEKILL_ABI_VERSION) {
    fprintf(stderr, "%s: libgracekill %s has ABI %u; this program needs %u\n", argv[0],
            gracekill_version(), gracekill_abi_version(), (unsigned)GRACEKILL_ABI_VERSION);
    return 2;
  }
  printf("libgracekill %s abi %u\n", gracekill_version(), gracekill_abi_version());

  struct gracekill_policy policy;
  gracekill_policy_init(&policy);
  policy.grace_ms = (uint64_t)grace;

  struct gracekill_outcome *out = NULL;
  int rc = gracekill_stop(argv[1], &policy, NULL, &out);
  if (rc < 0) {
    fprintf(stderr, "%s: %s\n", argv[0], gracekill_last_error());
    return 2;
  }
  printf("verdict=%s exit_code=%d\n", out->verdict_name, out->exit_code);
  printf("json: %s\n", out->json);
  int code = out->exit_code;
  gracekill_outcome_free(out);
  return code;
}
