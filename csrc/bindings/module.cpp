// The extension module: error translation, ggml's log, and each part's registration.
#include <pybind11/pybind11.h>

#include <string>

#include "bindings/bindings.h"
#include "bindings/session_busy.h"
#include "ggml.h"
#include "gptj/error.h"
#include "gptj/ggml_log.h"
#include "gptj/threads.h"

namespace {

void translate_error(const gptj::Error & e) {
    switch (e.kind()) {
        case gptj::Error::Kind::file_not_found: PyErr_SetString(PyExc_FileNotFoundError, e.what()); return;
        case gptj::Error::Kind::invalid_argument: PyErr_SetString(PyExc_ValueError, e.what()); return;
        case gptj::Error::Kind::invalid_file: set_python_error("ModelFormatError", PyExc_ValueError, e.what()); return;
        case gptj::Error::Kind::context_full: set_python_error("ContextFullError", PyExc_RuntimeError, e.what()); return;
        case gptj::Error::Kind::evaluation: set_python_error("EvaluationError", PyExc_RuntimeError, e.what()); return;
    }
}

}  // namespace

void set_python_error(const char * name, PyObject * fallback, const char * message) {
    try {
        PyErr_SetString(py::module_::import("gptj_ggml.errors").attr(name).ptr(), message);
    } catch (py::error_already_set &) {
        PyErr_SetString(fallback, message);
    }
}

std::vector<int32_t> to_ids(const py::handle & tokens) { return py::cast<std::vector<int32_t>>(tokens); }

PYBIND11_MODULE(_core, m) {
    m.doc() = "gptj_ggml's native engine (private: use the gptj_ggml package)";
    gptj::install_ggml_log();
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const gptj::Error & e) {
            translate_error(e);
        } catch (const SessionBusy & e) {
            set_python_error("SessionBusyError", PyExc_RuntimeError, e.what());
        }
    });

    m.def("physical_core_count", &gptj::physical_core_count);
    m.def("ggml_version", [] { return std::string(ggml_version()); });
    m.def("ggml_commit", [] { return std::string(ggml_commit()); });

    bind_info(m);
    bind_vocab(m);
    bind_quantize(m);
    bind_model(m);
    bind_sampler(m);
    bind_session(m);
}
