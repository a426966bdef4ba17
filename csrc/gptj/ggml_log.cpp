#include "gptj/ggml_log.h"

#include <cstdio>
#include <cstdlib>
#include <mutex>

#include "ggml.h"

namespace gptj {
namespace {

thread_local std::string last_error;

void log_callback(ggml_log_level level, const char * text, void * /*user_data*/) {
    static const bool verbose = std::getenv("GPTJ_GGML_VERBOSE") != nullptr;
    if (verbose) {
        std::fputs(text, stderr);
    }
    if (level == GGML_LOG_LEVEL_ERROR || level == GGML_LOG_LEVEL_WARN) {
        last_error = text;
        while (!last_error.empty() && (last_error.back() == '\n' || last_error.back() == ' ')) {
            last_error.pop_back();
        }
    }
}

}  // namespace

void install_ggml_log() {
    static std::once_flag once;
    std::call_once(once, [] { ggml_log_set(log_callback, nullptr); });
}

void clear_last_ggml_error() { last_error.clear(); }

std::string last_ggml_error() { return last_error; }

}  // namespace gptj
