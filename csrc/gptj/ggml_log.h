// ggml reports errors (why gguf_init_from_file returned NULL, why an allocation failed) only
// through its log. We route that log here: nothing is printed unless GPTJ_GGML_VERBOSE is set
// (a library stays quiet), and the last error on each thread is kept for our exceptions.
#pragma once

#include <string>

namespace gptj {

// Installs the log callback; idempotent and thread-safe.
void install_ggml_log();

// Clears / returns the last warning or error ggml logged on this thread.
void clear_last_ggml_error();
std::string last_ggml_error();

}  // namespace gptj
