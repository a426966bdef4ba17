// Raised (as gptj_ggml.errors.SessionBusyError) when a second thread calls into a Session
// that is already evaluating. Thrown in session_bindings.cpp, translated in module.cpp.
#pragma once

#include <stdexcept>

class SessionBusy : public std::runtime_error {
    using std::runtime_error::runtime_error;
};
