#include "bindings/bindings.h"

#include <dlfcn.h>

#include <string>

#include "ggml-backend.h"
#include "ggml-cpu.h"
#include "ggml.h"
#include "gptj/kernels/decode_attention.h"
#include "gptj/kernels/dequantize.h"
#include "gptj/kernels/gemm_amx.h"
#include "gptj/kernels/gemm_avx512_bf16.h"
#include "gptj/kernels/gemm_int8_avx2.h"
#include "gptj/kernels/gemm_vnni.h"
#include "gptj/kernels/isa.h"
#include "gptj/kernels/matvec_int8.h"
#include "gptj/kernels/matvec_int8_avx2.h"
#include "gptj/kernels/matmul.h"


namespace {

// The file (shared library or executable) that holds the code at `address`.
std::string object_path(const void * address) {
    Dl_info info{};
    if (dladdr(address, &info) == 0 || info.dli_fname == nullptr) return "";
    return info.dli_fname;
}

const char * const kMergesKey = "tokenizer.ggml.merges";

// The ggml type named `name` ("q4_0"); a ValueError naming it when there is none.
ggml_type type_named(const std::string & name) {
    for (int t = 0; t < GGML_TYPE_COUNT; ++t) {
        const char * type_name = ggml_type_name(static_cast<ggml_type>(t));
        if (type_name != nullptr && name == type_name) return static_cast<ggml_type>(t);
    }
    throw py::value_error("no ggml type is named " + name);
}

}  // namespace

py::list tensor_info(const gptj::Model & model) {
    py::list out;
    for (const gptj::GgufTensorInfo & tensor : model.file().tensors()) {
        py::list shape;
        for (int i = 0; i < tensor.n_dims; ++i) shape.append(tensor.ne[i]);
        out.append(py::make_tuple(tensor.name, ggml_type_name(tensor.type), py::tuple(shape), tensor.n_bytes));
    }
    return out;
}

size_t n_merges(const gptj::Model & model) {
    return model.file().has_key(kMergesKey) ? model.file().get_string_array(kMergesKey).size() : 0;
}

void bind_info(py::module_ & m) {
    // What the CPU backend itself reports (the same list llama.cpp prints as system info): the
    // instruction sets this ggml build was compiled for and detected, and optional parts
    // such as LLAMAFILE (its sgemm) or REPACK (the interleaved quantized layouts). Only
    // features that are on appear.
    m.def("cpu_features", [] {
        py::dict out;
        ggml_backend_reg_t reg = ggml_backend_cpu_reg();
        auto get_features = reinterpret_cast<ggml_backend_get_features_t>(
            ggml_backend_reg_get_proc_address(reg, "ggml_backend_get_features"));
        if (get_features == nullptr) return out;
        for (const ggml_backend_feature * f = get_features(reg); f->name != nullptr; ++f) {
            out[py::str(f->name)] = py::str(f->value);
        }
        return out;
    });
    m.def("batch_matmul_kernel", [] { return std::string(gptj::batch_matmul_kernel()); },
          "Our kernel for prompt batches with f32/f16/bf16 weights on this CPU: \"avx512\", or \"\" (ggml's then).");
    m.def("set_batch_matmul_enabled", &gptj::set_batch_matmul_enabled, py::arg("enabled"),
          "Turn our prompt-batch kernel off (every product by ggml_mul_mat) or back on, for graphs built afterwards.");
    m.def("isa_cap", [] { return std::string(gptj::isa_cap_name()); },
          "The highest instruction set level our kernels may use (GPTJ_GGML_ISA: avx2, avx512, avx512bf16 or amx; amx when unset).");
    m.def("isa_cap_error", [] { return std::string(gptj::isa_cap_error()); },
          "What is wrong with GPTJ_GGML_ISA (\"\" when it is unset or understood).");
    m.def("amx_available", &gptj::amx_available, "Whether prompt batches can use our AMX (bf16) kernel on this CPU.");
    m.def("bf16_gemm_available", &gptj::avx512_bf16_gemm_available,
          "Whether prompt batches of bf16 and quantized weights can use our AVX512-BF16 kernel on this CPU.");
    m.def("set_bf16_gemm_enabled", &gptj::set_bf16_gemm_enabled, py::arg("enabled"),
          "Turn the AVX512-BF16 kernel off (those batches then take the f32 AVX-512 kernel) or back on.");
    m.def("vnni_gemm_available", &gptj::vnni_gemm_available,
          "Whether prompt batches of q8_0 / q4_0 / q4_K weights use our 8-bit (AVX512-VNNI) kernel on this CPU (AMX aside).");
    m.def("set_vnni_gemm_enabled", &gptj::set_vnni_gemm_enabled, py::arg("enabled"),
          "Turn the VNNI prompt kernel off (those batches then take the bf16 or f32 kernel) or back on.");
    m.def("int8_gemm_avx2_available", &gptj::int8_gemm_avx2_available,
          "Whether prompt batches of q4_0 / q4_K weights use our 8-bit AVX2 kernel on this CPU (no AVX-512, or capped).");
    m.def("set_int8_gemm_avx2_enabled", &gptj::set_int8_gemm_avx2_enabled, py::arg("enabled"),
          "Turn the AVX2 int8 prompt kernel off (those batches then take the f32 AVX2 kernel or ggml's) or back on.");
    m.def("int8_gemm_avx_vnni_available", &gptj::int8_gemm_avx_vnni_available,
          "Whether the AVX2 int8 prompt kernel uses AVX-VNNI's vpdpbusd on this CPU (when that kernel runs).");
    m.def("set_int8_gemm_avx_vnni_enabled", &gptj::set_int8_gemm_avx_vnni_enabled, py::arg("enabled"),
          "Turn AVX-VNNI off in the AVX2 int8 prompt kernel (vpmaddubsw, as on AVX2 CPUs without it) or back on.");
    m.def("decode_attention_available", &gptj::decode_attention_available,
          "Whether single tokens' attention over a flash-attention cache (f16, q8_0, q4_0) uses our AVX2 kernel on this CPU.");
    m.def("set_decode_attention_enabled", &gptj::set_decode_attention_enabled, py::arg("enabled"),
          "Turn the decode attention kernel off (single tokens then take ggml_flash_attn_ext) or back on.");
    m.def("set_matvec_max_tokens", &gptj::set_matvec_max_tokens, py::arg("n_tokens"),
          "The most tokens a product sends to the matrix-vector kernel (default and most: 16); for benchmarks.");
    m.def("set_amx_min_tokens", &gptj::set_amx_min_tokens, py::arg("n_tokens"),
          "The fewest tokens a product sends to the AMX kernel where it applies; for benchmarks.");
    m.def("set_amx_enabled", &gptj::set_amx_enabled, py::arg("enabled"),
          "Turn the AMX kernel off (non-f32 prompt batches then take the f32 AVX-512 kernel) or back on.");
    m.def("set_int8_matvec_enabled", &gptj::set_int8_matvec_enabled, py::arg("enabled"),
          "Turn the int8 (VNNI) kernel for q8_0 / q4_0 products of 2-16 tokens off (AMX or the f32 kernel then) "
          "or back on, for graphs built afterwards.");
    m.def("int8_matvec_available", &gptj::cpu_has_avx512vnni,
          "Whether this CPU runs the int8 (AVX512-VNNI) kernel for q8_0 / q4_0 products of a few tokens.");
    m.def("avx2_kernels_active", [] { return gptj::cpu_has_avx2() && !gptj::cpu_has_avx512f(); },
          "Whether our AVX2 kernels run the products here (an AVX2 CPU without AVX-512, or GPTJ_GGML_ISA=avx2).");
    m.def("keeps_file_layout", [](const std::string & type) { return gptj::keeps_file_layout(type_named(type)); },
          py::arg("type"),
          "Whether a Model leaves matrices of this type in the file's layout even with repack=True (our kernel "
          "multiplies them faster than ggml's repacked one on this CPU).");
    m.def("ggml_library_path", [] { return object_path(reinterpret_cast<const void *>(&ggml_version)); },
          "The shared library ggml_version() lives in (this extension itself when ggml is built in).");
    m.def("ggml_built_in", [] {
        return object_path(reinterpret_cast<const void *>(&ggml_version)) ==
               object_path(reinterpret_cast<const void *>(&bind_info));
    }, "Whether ggml is compiled into this extension (a build from a ggml source tree).");
}
