#include "gptj/kernels/quantize.h"

#include <algorithm>
#include <exception>
#include <string>
#include <thread>
#include <vector>

#include "gptj/error.h"
#include "gptj/threads.h"

namespace gptj {

bool is_quantize_target(ggml_type type) {
    switch (type) {
        case GGML_TYPE_F16: case GGML_TYPE_BF16:
        case GGML_TYPE_Q4_0: case GGML_TYPE_Q4_1: case GGML_TYPE_Q5_0: case GGML_TYPE_Q5_1: case GGML_TYPE_Q8_0:
        case GGML_TYPE_Q2_K: case GGML_TYPE_Q3_K: case GGML_TYPE_Q4_K: case GGML_TYPE_Q5_K: case GGML_TYPE_Q6_K:
        case GGML_TYPE_IQ4_NL:
            return true;
        default:
            return false;
    }
}

namespace {

void check(ggml_type type, int64_t n_rows, int64_t row_length) {
    if (static_cast<int>(type) < 0 || type >= GGML_TYPE_COUNT || !is_quantize_target(type)) {
        throw Error(Error::Kind::invalid_argument,
                    "cannot quantize to ggml type " + std::to_string(static_cast<int>(type)) +
                        (static_cast<int>(type) >= 0 && type < GGML_TYPE_COUNT ? std::string(" (") + ggml_type_name(type) + ")" : ""));
    }
    if (n_rows < 0 || row_length <= 0) {
        throw Error(Error::Kind::invalid_argument, "bad quantization shape: " + std::to_string(n_rows) + " rows of " +
                                                       std::to_string(row_length) + " values");
    }
    const int64_t block = ggml_blck_size(type);
    if (row_length % block != 0) {
        throw Error(Error::Kind::invalid_argument,
                    std::string("rows of ") + std::to_string(row_length) + " values cannot be quantized to " +
                        ggml_type_name(type) + ", whose blocks hold " + std::to_string(block) + " values");
    }
}

}  // namespace

size_t quantized_size(ggml_type type, int64_t n_rows, int64_t row_length) {
    check(type, n_rows, row_length);
    return ggml_row_size(type, row_length) * static_cast<size_t>(n_rows);
}

void quantize_rows(ggml_type type, const float * src, void * dst, int64_t n_rows, int64_t row_length, int n_threads) {
    check(type, n_rows, row_length);
    if (n_threads > 0) checked_thread_count(n_threads);
    if (n_rows == 0) return;
    if (n_threads <= 0) n_threads = physical_core_count();
    // Below a few thousand rows a thread costs more to start than it saves.
    const int64_t min_rows_per_thread = std::max<int64_t>(1, 65536 / row_length);
    const int64_t n_workers = std::clamp<int64_t>(n_rows / min_rows_per_thread, 1, n_threads);
    ggml_quantize_init(type);  // its tables are built once, before the threads share them

    auto run = [&](int64_t first_row, int64_t count) {
        ggml_quantize_chunk(type, src, dst, first_row * row_length, count, row_length, nullptr);
    };
    if (n_workers == 1) {
        run(0, n_rows);
        return;
    }
    ThreadGroup workers;
    const int64_t per_worker = (n_rows + n_workers - 1) / n_workers;
    for (int64_t first = 0; first < n_rows; first += per_worker) {
        workers.start(run, first, std::min(per_worker, n_rows - first));
    }
    workers.join();
}

}  // namespace gptj
