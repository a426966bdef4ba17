// The instruction sets our kernels may use: what the CPU has, capped by the environment
// variable GPTJ_GGML_ISA, so that one machine can measure and test the paths another CPU
// would take (an AVX-512 machine standing in for an AVX2 laptop). ggml's own kernels are
// not affected: they are chosen when its library was built.
#pragma once

namespace gptj {

// Ordered: a cap allows its level and those below it.
enum class IsaLevel { avx2 = 0, avx512 = 1, avx512bf16 = 2, amx = 3 };

// GPTJ_GGML_ISA read once: "avx2" (our AVX-512 and AMX kernels off, the AVX2 ones on),
// "avx512" (AVX512-BF16 and AMX off), "avx512bf16" (AMX off), "amx" or unset (no cap). An unknown value caps nothing and is reported by
// isa_cap_error(), which the Python layer raises on import.
IsaLevel isa_cap();
const char * isa_cap_name();
// Empty when GPTJ_GGML_ISA is unset or understood; otherwise what is wrong with it.
const char * isa_cap_error();

// Whether this CPU runs our AVX2 kernels: AVX2 with FMA and F16C (every x86-64 laptop and
// desktop of the last decade), checked once at run time. No cap turns them off: GPTJ_GGML_ISA=avx2
// is the level that runs them on a CPU with more.
bool cpu_has_avx2();

// Whether it also has AVX-VNNI (vpdpbusd on ymm, VEX-encoded: Intel's laptop and desktop cores
// since the 12th generation, which lack AVX-512; AMD's since Zen 5). Like AVX2, no cap turns it off.
bool cpu_has_avx_vnni();

}  // namespace gptj
