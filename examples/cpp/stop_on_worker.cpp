// Stopping tasks through gracekill's C ABI from worker threads: the pattern a Mesos isolator
// (or any event-loop program) needs. gracekill_stop() blocks for up to the whole grace period,
// so it must never run on the libprocess actor or event loop; run it on a worker thread and
// hand the outcome back through a future.
//
// What it does: creates N cgroups (under the cgroup2 mount, or under --parent), starts in each a
// task shaped like a Thermos process (a `sh -c` wrapper around an app that flushes on SIGTERM),
// stops them all at once, each on its own worker thread, while the main thread keeps ticking,
// then prints each outcome and the JSON the library produced. Every cgroup it created is removed
// on exit, even on failure.
//
// Build (from the repository, after `cargo build`), static:
//   g++ -std=c++17 -O2 -pthread -Iinclude examples/cpp/stop_on_worker.cpp
//       target/debug/libgracekill.a -ldl -lm -o /tmp/stop_on_worker
// or against an installed library (ci/install-lib, or the libgracekill-dev package):
//   g++ -std=c++17 -O2 examples/cpp/stop_on_worker.cpp $(pkg-config --cflags --libs gracekill)
// Run as root (or inside a delegated cgroup subtree, with --parent):
//   sudo /tmp/stop_on_worker --tasks 3 --grace-ms 5000
//
// Exit status: 0 when every task stopped gracefully and flushed, 1 otherwise, 2 on bad usage.

#include <gracekill.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <future>
#include <iostream>
#include <memory>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

// The task: a `sh -c` wrapper (dies of SIGTERM at once, as Thermos' `bash -c` wrapper does)
// around an app that, on SIGTERM, flushes for 300 ms, writes a marker and exits 0. The app
// ignores further TERMs while flushing (`trap "" TERM`), so its flush helper (`sleep`, which
// gracekill also signals, being in the cgroup) is not cut short.
const char* kApp =
    "trap 'trap \"\" TERM; sleep 0.3; echo flushed > \"$MARKER\"; exit 0' TERM\n"
    "echo ready\n"
    "while :; do sleep 1 & wait $!; done\n";
const char* kWrapper = "sh -c \"$APP\"; echo wrapper-done";

std::string cgroup2_mount() {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream f(line);
    std::vector<std::string> fields;
    for (std::string w; f >> w;) fields.push_back(w);
    for (size_t i = 0; i + 1 < fields.size(); i++) {
      if (fields[i] == "-") {
        if (fields[i + 1] == "cgroup2" && fields.size() > 4) return fields[4];
        break;
      }
    }
  }
  throw std::runtime_error("no cgroup2 mount in /proc/self/mountinfo");
}

bool write_file(const std::string& path, const std::string& data) {
  int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = write(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size());
  close(fd);
  return ok;
}

bool populated(const std::string& cg) {
  std::ifstream in(cg + "/cgroup.events");
  std::string key, value;
  while (in >> key >> value)
    if (key == "populated") return value == "1";
  return false;
}

// A cgroup this program created; removed on destruction whatever happened. Cleanup only: the
// graceful stop itself is gracekill's job.
class CgroupGuard {
 public:
  explicit CgroupGuard(std::string path) : path_(std::move(path)) {
    if (mkdir(path_.c_str(), 0755) != 0)
      throw std::runtime_error("mkdir " + path_ + ": " + std::strerror(errno));
  }
  ~CgroupGuard() {
    if (populated(path_)) {
      write_file(path_ + "/cgroup.kill", "1");
      for (int i = 0; i < 500 && populated(path_); i++)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    rmdir(path_.c_str());
  }
  CgroupGuard(const CgroupGuard&) = delete;
  CgroupGuard& operator=(const CgroupGuard&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A task started inside a cgroup: the child joins the cgroup (writes "0" to cgroup.procs)
// before exec, so nothing of it ever runs outside. Reaped on destruction.
class Task {
 public:
  Task(const std::string& cgroup, const std::string& marker) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
    std::string procs = cgroup + "/cgroup.procs";
    // Everything the child needs is built before fork: after fork only async-signal-safe calls.
    std::vector<std::string> env_strings = {"MARKER=" + marker, std::string("APP=") + kApp,
                                            "PATH=/usr/local/bin:/usr/bin:/bin"};
    std::vector<char*> envp;
    for (auto& e : env_strings) envp.push_back(e.data());
    envp.push_back(nullptr);
    const char* argv[] = {"sh", "-c", kWrapper, nullptr};
    pid_ = fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      // Child: only async-signal-safe calls until exec.
      int fd = open(procs.c_str(), O_WRONLY | O_CLOEXEC);
      if (fd < 0 || write(fd, "0", 1) != 1) _exit(126);
      close(fd);
      dup2(fds[1], STDOUT_FILENO);
      execve("/bin/sh", const_cast<char* const*>(argv), envp.data());
      _exit(127);
    }
    close(fds[1]);
    // Readiness: the app prints "ready" once its TERM trap is installed.
    std::string got;
    char c;
    while (got.find("ready\n") == std::string::npos && read(fds[0], &c, 1) == 1) got += c;
    close(fds[0]);
    if (got.find("ready\n") == std::string::npos)
      throw std::runtime_error("task in " + cgroup + " never became ready");
  }
  ~Task() {
    int status;
    if (waitpid(pid_, &status, WNOHANG) == 0) {
      // Still running only if something failed before the stop: the cgroup guard kills it.
      waitpid(pid_, &status, 0);
    }
  }
  Task(const Task&) = delete;
  Task& operator=(const Task&) = delete;
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
};

// Log lines for one stop, filled by the callback on that stop's worker thread.
struct LogLines {
  std::vector<std::string> lines;
};

extern "C" void collect_log(void* user_data, int32_t level, const char* target,
                            const char* message) {
  // Must not throw: nothing may unwind into the library.
  try {
    static const char* names[] = {"?", "error", "warn", "info", "debug", "trace"};
    auto* logs = static_cast<LogLines*>(user_data);
    logs->lines.push_back(std::string(names[level >= 1 && level <= 5 ? level : 0]) + " " +
                          target + ": " + message);
  } catch (...) {
  }
}

// What a worker hands back to the main thread.
struct StopResult {
  int rc = 0;
  std::string error;
  struct gracekill_outcome* outcome = nullptr;  // owned: freed in ~StopResult
  LogLines logs;
  StopResult() = default;
  StopResult(StopResult&& o) noexcept
      : rc(o.rc), error(std::move(o.error)), outcome(o.outcome), logs(std::move(o.logs)) {
    o.outcome = nullptr;
  }
  StopResult(const StopResult&) = delete;
  ~StopResult() { gracekill_outcome_free(outcome); }
};

// Runs on a worker thread: the only place gracekill_stop() blocks.
StopResult stop_task(std::string cgroup, uint64_t grace_ms) {
  StopResult r;
  struct gracekill_policy policy;
  gracekill_policy_init(&policy);
  policy.grace_ms = grace_ms;
  policy.kill_timeout_ms = 5000;
  struct gracekill_stop_options options;
  gracekill_stop_options_init(&options);
  options.log_fn = collect_log;
  options.log_user_data = &r.logs;
  options.log_level = GRACEKILL_LOG_DEBUG;
  r.rc = gracekill_stop(cgroup.c_str(), &policy, &options, &r.outcome);
  if (r.rc < 0) {
    const char* msg = gracekill_last_error();  // this thread's error; copy it now
    r.error = msg ? msg : "(no message)";
  }
  return r;
}

void usage() {
  std::cerr << "usage: stop_on_worker [--tasks N] [--grace-ms MS] [--parent CGROUP_DIR]\n";
}

}  // namespace

int main(int argc, char** argv) {
  int tasks = 3;
  uint64_t grace_ms = 5000;
  std::string parent;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if (a == "--tasks" && i + 1 < argc) {
      tasks = std::atoi(argv[++i]);
    } else if (a == "--grace-ms" && i + 1 < argc) {
      grace_ms = std::strtoull(argv[++i], nullptr, 10);
    } else if (a == "--parent" && i + 1 < argc) {
      parent = argv[++i];
    } else {
      usage();
      return 2;
    }
  }
  if (tasks < 1 || tasks > 64) {
    usage();
    return 2;
  }
  // Newer libraries only append: a library at least as new as the header will do.
  if (gracekill_abi_version() < GRACEKILL_ABI_VERSION) {
    std::cerr << "libgracekill ABI " << gracekill_abi_version() << " is older than the header's "
              << GRACEKILL_ABI_VERSION << "\n";
    return 1;
  }
  std::cout << "libgracekill " << gracekill_version() << "\n";

  bool ok = true;
  try {
    if (parent.empty()) parent = cgroup2_mount();
    char scratch_tmpl[] = "/tmp/gk-cxx-XXXXXX";
    if (!mkdtemp(scratch_tmpl)) throw std::runtime_error("mkdtemp failed");
    std::string scratch = scratch_tmpl;

    // Declared first, destroyed last: on an error the cgroup guards kill what is left, then the
    // tasks are reaped.
    std::vector<std::unique_ptr<Task>> running;
    std::vector<std::unique_ptr<CgroupGuard>> cgroups;
    std::vector<std::string> markers;
    for (int i = 0; i < tasks; i++) {
      std::ostringstream name;
      name << parent << "/gk-cxx-example-" << getpid() << "-" << i;
      cgroups.push_back(std::make_unique<CgroupGuard>(name.str()));
      markers.push_back(scratch + "/marker-" + std::to_string(i));
      running.push_back(std::make_unique<Task>(cgroups.back()->path(), markers.back()));
    }

    // Hand every stop to a worker thread; the main thread stays free (in Mesos: the actor
    // would `defer` a continuation onto the future instead of waiting for it).
    std::vector<std::future<StopResult>> pending;
    for (auto& cg : cgroups)
      pending.push_back(std::async(std::launch::async, stop_task, cg->path(), grace_ms));
    int ticks = 0;
    for (auto& f : pending)
      while (f.wait_for(std::chrono::milliseconds(20)) != std::future_status::ready) ticks++;
    std::cout << "main thread stayed responsive: " << ticks << " ticks while stopping\n";

    for (int i = 0; i < tasks; i++) {
      StopResult r = pending[i].get();
      if (r.rc < 0) {
        std::cout << "task " << i << ": error " << r.rc << ": " << r.error << "\n";
        ok = false;
        continue;
      }
      const gracekill_outcome* o = r.outcome;
      bool flushed = std::ifstream(markers[i]).good();
      std::cout << "task " << i << ": cgroup=" << o->cgroup << " verdict=" << o->verdict_name
                << " exit_code=" << o->exit_code << " elapsed_ms=" << o->elapsed_ms
                << " flushed=" << (flushed ? "yes" : "no") << " logs=" << r.logs.lines.size()
                << "\n";
      for (size_t s = 0; s < o->steps_len; s++)
        std::cout << "  step " << o->steps[s].signal_name << " to " << o->steps[s].signalled
                  << (o->steps[s].via ? std::string(" via ") + o->steps[s].via : "") << "\n";
      for (size_t s = 0; s < o->survivors_len; s++)
        std::cout << "  survivor " << o->survivors[s].pid << " " << o->survivors[s].comm
                  << " state " << o->survivors[s].state << "\n";
      for (const auto& l : r.logs.lines) std::cout << "  log " << l << "\n";
      std::cout << "json: " << o->json << "\n";
      ok = ok && o->verdict == GRACEKILL_VERDICT_GRACEFUL && flushed;
      unlink(markers[i].c_str());
    }
    running.clear();  // reap before the cgroups are removed
    cgroups.clear();
    rmdir(scratch.c_str());
  } catch (const std::exception& e) {
    std::cerr << "stop_on_worker: " << e.what() << "\n";
    return 1;
  }
  return ok ? 0 : 1;
}
