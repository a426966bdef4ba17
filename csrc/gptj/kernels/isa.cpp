#include "gptj/kernels/isa.h"

#include <cstdlib>
#include <cstring>
#include <string>

namespace gptj {
namespace {

struct IsaCap {
    IsaLevel level = IsaLevel::amx;
    std::string error;
};

const IsaCap & cap() {
    static const IsaCap value = [] {
        IsaCap read;
        const char * env = std::getenv("GPTJ_GGML_ISA");
        if (env == nullptr || *env == '\0') return read;
        if (std::strcmp(env, "avx2") == 0) {
            read.level = IsaLevel::avx2;
        } else if (std::strcmp(env, "avx512") == 0) {
            read.level = IsaLevel::avx512;
        } else if (std::strcmp(env, "avx512bf16") == 0) {
            read.level = IsaLevel::avx512bf16;
        } else if (std::strcmp(env, "amx") != 0) {
            read.error = std::string("GPTJ_GGML_ISA=") + env + " is not an instruction set level: use avx2, avx512, avx512bf16 or amx";
        }
        return read;
    }();
    return value;
}

}  // namespace

IsaLevel isa_cap() { return cap().level; }

const char * isa_cap_name() {
    switch (cap().level) {
        case IsaLevel::avx2: return "avx2";
        case IsaLevel::avx512: return "avx512";
        case IsaLevel::avx512bf16: return "avx512bf16";
        case IsaLevel::amx: return "amx";
    }
    return "amx";
}

const char * isa_cap_error() { return cap().error.c_str(); }

bool cpu_has_avx2() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                            __builtin_cpu_supports("f16c");
    return has;
#else
    return false;
#endif
}

bool cpu_has_avx_vnni() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    static const bool has = cpu_has_avx2() && __builtin_cpu_supports("avxvnni");
    return has;
#else
    return false;
#endif
}

}  // namespace gptj
