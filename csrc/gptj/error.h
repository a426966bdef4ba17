// The one exception type the engine throws. The bindings turn each Kind into the
// matching Python exception (see python/gptj_ggml/errors.py).
#pragma once

#include <stdexcept>
#include <string>

namespace gptj {

class Error : public std::runtime_error {
public:
    enum class Kind {
        file_not_found,    // the path does not exist or cannot be opened
        invalid_file,      // a model file that is malformed or not GPT-J
        invalid_argument,  // a bad value passed by the caller (token id, size, ...)
        context_full,      // the evaluation would run past n_ctx
        evaluation,        // ggml failed to allocate or compute
        interrupted,       // the caller's interrupt check asked an evaluation to stop (Ctrl-C)
    };

    Error(Kind kind, const std::string & message) : std::runtime_error(message), kind_(kind) {}

    Kind kind() const { return kind_; }

private:
    Kind kind_;
};

// The error for a model file that is malformed or not GPT-J: "<path>: <what>".
inline Error invalid_file_error(const std::string & path, const std::string & what) {
    return Error(Error::Kind::invalid_file, path + ": " + what);
}

}  // namespace gptj
