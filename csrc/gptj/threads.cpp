#include "gptj/threads.h"

#include <sched.h>

#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <utility>

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

}  // namespace gptj
