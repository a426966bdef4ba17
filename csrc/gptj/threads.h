#pragma once

#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "gptj/error.h"

namespace gptj {

// Physical cores this process may run on. ggml's matrix kernels gain nothing from SMT
// siblings (they share the core's vector units), so this is the default thread count.
int physical_core_count();

// The most threads one evaluation, repack or quantization may use: 4 per logical CPU (more
// only queue for the same cores), and never more than ggml's GGML_MAX_N_THREADS (512), past
// which its thread pool asserts. A count far above the CPUs is a mistake worth reporting:
// 100,000 made ggml abort() in thread creation.
int max_thread_count();

// Returns n_threads when it is in [0, max_thread_count()] (0: the caller's default); otherwise
// throws Error(invalid_argument) naming `what` ("n_threads") and the bound. Every thread count
// a caller gives passes through here before a thread is made.
int checked_thread_count(int n_threads, const char * what = "n_threads");

// Threads joined when the group is destroyed. Why: when the system refuses one more thread,
// std::thread throws, and a vector of joinable std::threads destroyed by that exception calls
// std::terminate. Here the threads already started finish their work and are joined, and the
// caller gets Error(evaluation).
class ThreadGroup {
public:
    ThreadGroup() = default;
    ~ThreadGroup() { join(); }
    ThreadGroup(const ThreadGroup &) = delete;
    ThreadGroup & operator=(const ThreadGroup &) = delete;

    template <typename Function, typename... Args>
    void start(Function && function, Args &&... args) {
        try {
            threads_.emplace_back(std::forward<Function>(function), std::forward<Args>(args)...);
        } catch (const std::system_error & e) {
            throw Error(Error::Kind::evaluation, std::string("cannot start a thread: ") + e.what());
        }
    }
    void join() {
        for (std::thread & thread : threads_) {
            if (thread.joinable()) thread.join();
        }
        threads_.clear();
    }

private:
    std::vector<std::thread> threads_;
};

// CPU time the calling thread has used, in seconds.
double thread_cpu_seconds();

// How many threads the next evaluation uses, when the user did not choose a count.
//
// Why: ggml's threads meet at a spinning barrier after every graph node. When another
// process holds one of the cores, the thread it displaced stops the others at each barrier
// until the scheduler runs it again: on a 2-core machine with one busy process, a 4-layer
// tiny model went from 4-8 ms per token on 1 thread to 190-230 ms on 2 (6B-shaped layers
// lose less, their nodes are long). The calling thread computes or spins for the whole
// evaluation whenever it runs, so its CPU time falling well below the wall time says the
// cores are shared: then the next evaluations use one thread fewer, and after a while one
// evaluation tries one more again (backing off while the cores stay busy). A session's first
// evaluation is not judged: it first touches the KV cache and the compute buffers, kernel time
// that showed as a low share on an idle machine. (Waiting for a second low reading instead
// cost a tiny model 13 slow tokens of 32 under a load that came and went.) The thread count
// does not change the results: each output is summed in one thread, in a fixed order.
class ThreadCountPolicy {
public:
    // adaptive false: always max_threads (a count the user chose).
    ThreadCountPolicy(int max_threads, bool adaptive);

    // Threads for the next evaluation; now is a steady clock in seconds.
    int next(double now);
    // What an evaluation with n_threads cost: wall and calling-thread CPU seconds.
    void record(int n_threads, double wall_seconds, double cpu_seconds, double now);

    int max_threads() const { return max_threads_; }
    bool adaptive() const { return adaptive_; }
    int last_used() const { return last_used_; }

    // Below this share of the wall time the calling thread is taken to have waited for a core
    // (two of our threads and one busy process on two cores give each about 0.67).
    static constexpr double kBusyShare = 0.8;
    // Evaluations shorter than this say too little about the machine.
    static constexpr double kMinWallSeconds = 2e-4;
    static constexpr double kFirstProbeSeconds = 1.0;
    static constexpr double kMaxProbeSeconds = 8.0;

private:
    int max_threads_;
    bool adaptive_;
    int current_;
    int last_used_;
    bool probing_ = false;
    bool first_evaluation_seen_ = false;
    double changed_at_ = 0.0;
    double probe_after_ = kFirstProbeSeconds;
};

}  // namespace gptj
