#include "gptj/repack.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <thread>

#include "ggml-backend.h"
#include "ggml-cpu.h"
#include "gptj/error.h"
#include "gptj/memory.h"
#include "gptj/threads.h"

namespace gptj {
namespace {

ggml_backend_buffer_type_t cpu_repack_buffer_type(ggml_backend_dev_t device) {
    ggml_backend_reg_t reg = ggml_backend_cpu_reg();
    auto get_extra_bufts = reinterpret_cast<ggml_backend_dev_get_extra_bufts_t>(
        ggml_backend_reg_get_proc_address(reg, "ggml_backend_dev_get_extra_bufts"));
    if (get_extra_bufts == nullptr) return nullptr;
    for (ggml_backend_buffer_type_t * buft = get_extra_bufts(device); buft != nullptr && *buft != nullptr; ++buft) {
        if (std::strcmp(ggml_backend_buft_name(*buft), "CPU_REPACK") == 0) return *buft;
    }
    return nullptr;
}

// Asks the CPU device whether it would multiply by `matrix` if it lived in a buffer of type
// `buft` (ggml decides per type, row count and CPU feature), with a stand-in product.
bool supports_repacked(ggml_backend_dev_t device, ggml_backend_buffer_type_t buft, ggml_tensor * matrix) {
    ggml_init_params params{4 * ggml_tensor_overhead(), nullptr, /*no_alloc=*/true};
    ggml_context_ptr ctx(ggml_init(params));
    ggml_tensor * activations = ggml_new_tensor_2d(ctx.get(), GGML_TYPE_F32, matrix->ne[0], 8);
    ggml_tensor * product = ggml_mul_mat(ctx.get(), matrix, activations);
    ggml_backend_buffer_ptr placeholder(ggml_backend_buft_alloc_buffer(buft, 0));
    ggml_backend_buffer_t saved = matrix->buffer;
    matrix->buffer = placeholder.get();
    const bool supported = ggml_backend_dev_supports_op(device, product);
    matrix->buffer = saved;
    return supported;
}

}  // namespace

ggml_backend_buffer_ptr repack_matrices(const std::vector<ggml_tensor *> & matrices,
                                        const std::function<const void *(const ggml_tensor *)> & source,
                                        const std::function<void(const ggml_tensor *)> & done, int n_threads) {
    ggml_backend_dev_t device = ggml_backend_reg_dev_get(ggml_backend_cpu_reg(), 0);
    ggml_backend_buffer_type_t buft = cpu_repack_buffer_type(device);
    if (buft == nullptr) return nullptr;

    std::vector<ggml_tensor *> chosen;
    std::vector<size_t> offsets;
    size_t total = 0;
    const size_t alignment = ggml_backend_buft_get_alignment(buft);
    for (ggml_tensor * matrix : matrices) {
        if (!supports_repacked(device, buft, matrix)) continue;
        chosen.push_back(matrix);
        offsets.push_back(total);
        total += (ggml_backend_buft_get_alloc_size(buft, matrix) + alignment - 1) / alignment * alignment;
    }
    if (chosen.empty()) return nullptr;

    ggml_backend_buffer_ptr buffer(ggml_backend_buft_alloc_buffer(buft, total));
    if (!buffer) throw Error(Error::Kind::evaluation, "cannot allocate " + std::to_string(total) + " bytes for repacked weights");
    advise_huge_pages(buffer.get());
    auto * base = static_cast<uint8_t *>(ggml_backend_buffer_get_base(buffer.get()));
    for (size_t i = 0; i < chosen.size(); ++i) {
        if (ggml_backend_tensor_alloc(buffer.get(), chosen[i], base + offsets[i]) != GGML_STATUS_SUCCESS) {
            throw Error(Error::Kind::evaluation, std::string("cannot place '") + ggml_get_name(chosen[i]) + "' for repacking");
        }
    }

    // Repacking is a shuffle of every block: spread the tensors over the threads.
    std::atomic<size_t> next{0};
    auto work = [&] {
        for (size_t i = next++; i < chosen.size(); i = next++) {
            ggml_backend_tensor_set(chosen[i], source(chosen[i]), 0, ggml_nbytes(chosen[i]));
            done(chosen[i]);
        }
    };
    {
        ThreadGroup workers;  // joined before `next` and the buffer go out of scope, even on a throw
        for (int t = 1; t < std::max(1, n_threads); ++t) workers.start(work);
        work();
    }
    return buffer;
}

}  // namespace gptj
