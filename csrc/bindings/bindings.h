// pybind11 only: type conversion, GIL release and error translation. The public API, its
// documentation and its checks live in python/gptj_ggml/. One file per bound class (or group
// of module functions); this header is what they share.
#pragma once

#include <pybind11/pybind11.h>
// In every binding file alike: pybind11's casters for std containers must be the same in each
// translation unit (a file without them would fail to convert a list at run time).
#include <pybind11/stl.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "gptj/error.h"
#include "gptj/model.h"
#include "gptj/session.h"

namespace py = pybind11;

// Each registers its part of the extension module; module.cpp calls them in this order (a
// class is registered before the signatures that name it).
void bind_info(py::module_ & m);      // info_bindings.cpp: the ggml build, CPU features, kernels
void bind_vocab(py::module_ & m);     // vocab_bindings.cpp: Vocab
void bind_quantize(py::module_ & m);  // quantize_bindings.cpp: quantize_rows
void bind_model(py::module_ & m);     // model_bindings.cpp: Model
void bind_sampler(py::module_ & m);   // sampler_bindings.cpp: Sampler, the sampling settings
void bind_session(py::module_ & m);   // session_bindings.cpp: Session, ThreadCountPolicy
void bind_batch(py::module_ & m);     // batch_bindings.cpp: BatchEvaluator

// Token ids from any Python iterable of integers (numpy integers included). Raises TypeError
// naming `what` for an element that is no integer (a float, a bool, a str) and ValueError for
// one outside int32 (pybind11's own cast said only "Unable to cast"); the engine checks the
// ids against the vocabulary.
std::vector<int32_t> to_ids(const py::handle & tokens, const char * what);
// One such integer (a token id, a count): `what` names it in the error.
int32_t to_int32(const py::handle & value, const std::string & what);

// Lets a long evaluation notice Ctrl-C. check() is called by the engine without the GIL
// (gptj::InterruptCheck); it takes the GIL briefly and runs Python's signal handlers, and when
// one raises (KeyboardInterrupt) it keeps that exception and asks the engine to stop. Run the
// engine call through run(): the exception is raised again once the GIL is back.
class PythonSignals {
public:
    gptj::InterruptCheck check();
    // Calls work(check()) with the GIL released; an interrupt that came from a Python signal
    // handler re-raises the handler's exception, every other error propagates as it is.
    template <typename Work>
    void run(Work && work) {
        bool stopped = false;
        {
            py::gil_scoped_release release;
            try {
                work(check());
            } catch (const gptj::Error & e) {
                if (e.kind() != gptj::Error::Kind::interrupted || !raised_) throw;
                stopped = true;
            }
        }
        if (stopped) throw *raised_;
    }

private:
    std::shared_ptr<py::error_already_set> raised_;
};

// Model.tensor_info(): [(name, type, shape, n_bytes)] in file order; shape as ggml counts it
// (ne[0] first, trailing dimensions of size 1 left out). In info_bindings.cpp.
py::list tensor_info(const gptj::Model & model);

// Model.n_merges: BPE merges stored in the file (0 when the file has none and ranks come from ids).
size_t n_merges(const gptj::Model & model);

// Raises gptj_ggml.errors.<name> (a class defined in Python, so that Python code and the
// engine raise the same types), or `fallback` if that module cannot be imported.
void set_python_error(const char * name, PyObject * fallback, const char * message);
