#pragma once

namespace gptj {

// Physical cores this process may run on. ggml's matrix kernels gain nothing from SMT
// siblings (they share the core's vector units), so this is the default thread count.
int physical_core_count();

}  // namespace gptj
