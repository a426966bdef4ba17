#include "gptj/threads.h"

#include <sched.h>
#include <time.h>

#include <algorithm>
#include <utility>

#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <utility>

#include "ggml.h"
#include "gptj/error.h"

namespace gptj {
namespace {

bool read_int(const std::string & path, int & value) {
    std::ifstream in(path);
    return static_cast<bool>(in >> value);
}

}  // namespace

int physical_core_count() {
    cpu_set_t allowed;
    CPU_ZERO(&allowed);
    if (sched_getaffinity(0, sizeof(allowed), &allowed) == 0) {
        // Count distinct (package, core) pairs among the CPUs we may use (Linux sysfs).
        std::set<std::pair<int, int>> cores;
        for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
            if (!CPU_ISSET(cpu, &allowed)) continue;
            const std::string dir = "/sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/topology/";
            int package = 0, core = 0;
            if (!read_int(dir + "physical_package_id", package) || !read_int(dir + "core_id", core)) {
                cores.clear();
                break;
            }
            cores.emplace(package, core);
        }
        if (!cores.empty()) return static_cast<int>(cores.size());
        const int n_allowed = CPU_COUNT(&allowed);
        if (n_allowed > 0) return n_allowed;
    }
    const unsigned n = std::thread::hardware_concurrency();
    return n > 0 ? static_cast<int>(n) : 1;
}

int max_thread_count() {
    constexpr int kThreadsPerLogicalCpu = 4;
    const unsigned n_logical = std::max(1u, std::thread::hardware_concurrency());
    return static_cast<int>(std::min<unsigned>(kThreadsPerLogicalCpu * n_logical, GGML_MAX_N_THREADS));
}

int checked_thread_count(int n_threads, const char * what) {
    if (n_threads < 0) {
        throw Error(Error::Kind::invalid_argument, std::string(what) + " must be positive, got " + std::to_string(n_threads));
    }
    if (n_threads > max_thread_count()) {
        throw Error(Error::Kind::invalid_argument,
                    std::string(what) + " = " + std::to_string(n_threads) + " is more than this machine can use: at most " +
                        std::to_string(max_thread_count()) + " (4 per logical CPU, " +
                        std::to_string(std::thread::hardware_concurrency()) + " here)");
    }
    return n_threads;
}

double thread_cpu_seconds() {
    timespec t{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) * 1e-9;
}

ThreadCountPolicy::ThreadCountPolicy(int max_threads, bool adaptive)
    : max_threads_(std::max(1, max_threads)), adaptive_(adaptive), current_(max_threads_), last_used_(max_threads_) {}

int ThreadCountPolicy::next(double now) {
    probing_ = adaptive_ && current_ < max_threads_ && now - changed_at_ >= probe_after_;
    last_used_ = probing_ ? current_ + 1 : current_;
    return last_used_;
}

void ThreadCountPolicy::record(int n_threads, double wall_seconds, double cpu_seconds, double now) {
    if (!adaptive_ || wall_seconds < kMinWallSeconds) return;
    if (!std::exchange(first_evaluation_seen_, true)) return;  // the first evaluation: see the header
    const bool waited_for_a_core = cpu_seconds < kBusyShare * wall_seconds;
    if (probing_) {
        probing_ = false;
        if (waited_for_a_core) {
            probe_after_ = std::min(2 * probe_after_, kMaxProbeSeconds);
        } else {
            current_ = n_threads;
            probe_after_ = kFirstProbeSeconds;
        }
        changed_at_ = now;
        return;
    }
    if (waited_for_a_core && n_threads > 1) {
        current_ = n_threads - 1;
        changed_at_ = now;
    }
}

}  // namespace gptj
