// The extension module: error translation, ggml's log, and each part's registration.
#include <pybind11/pybind11.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <string>

#include "bindings/bindings.h"
#include "bindings/session_busy.h"
#include "ggml.h"
#include "gptj/error.h"
#include "gptj/ggml_log.h"
#include "gptj/threads.h"

namespace {

// PyErr_SetString decodes the message as strict UTF-8 and, on a path or a name that is not,
// raises UnicodeDecodeError instead of the error: undecodable bytes become \xNN here.
void set_error(PyObject * type, const char * message) {
    PyObject * text = PyUnicode_DecodeUTF8(message, static_cast<Py_ssize_t>(std::strlen(message)), "backslashreplace");
    if (text == nullptr) return;  // out of memory: that error stays set
    PyErr_SetObject(type, text);
    Py_DECREF(text);
}

void translate_error(const gptj::Error & e) {
    switch (e.kind()) {
        case gptj::Error::Kind::file_not_found: set_error(PyExc_FileNotFoundError, e.what()); return;
        case gptj::Error::Kind::invalid_argument: set_error(PyExc_ValueError, e.what()); return;
        case gptj::Error::Kind::invalid_file: set_python_error("ModelFormatError", PyExc_ValueError, e.what()); return;
        case gptj::Error::Kind::context_full: set_python_error("ContextFullError", PyExc_RuntimeError, e.what()); return;
        case gptj::Error::Kind::evaluation: set_python_error("EvaluationError", PyExc_RuntimeError, e.what()); return;
        // Reached only when no Python handler raised (PythonSignals re-raises the handler's own).
        case gptj::Error::Kind::interrupted: set_error(PyExc_KeyboardInterrupt, e.what()); return;
    }
}

}  // namespace

void set_python_error(const char * name, PyObject * fallback, const char * message) {
    try {
        set_error(py::module_::import("gptj_ggml.errors").attr(name).ptr(), message);
    } catch (py::error_already_set &) {
        set_error(fallback, message);
    }
}

namespace {

std::string type_name(const py::handle & value) { return py::str(py::type::of(value).attr("__name__")); }

}  // namespace

int32_t to_int32(const py::handle & value, const std::string & what) {
    // bool is an int in Python; a token id of True is a mistake, not 1.
    if (PyBool_Check(value.ptr())) throw py::type_error(what + " must be an integer, got bool");
    const py::object index = py::reinterpret_steal<py::object>(PyNumber_Index(value.ptr()));
    if (!index) {
        PyErr_Clear();
        throw py::type_error(what + " must be an integer, got " + type_name(value));
    }
    int overflow = 0;
    const long long v = PyLong_AsLongLongAndOverflow(index.ptr(), &overflow);
    if (overflow != 0 || v < INT32_MIN || v > INT32_MAX) {
        throw py::value_error(what + " = " + std::string(py::str(index)) + " is out of range (a 32-bit integer)");
    }
    return static_cast<int32_t>(v);
}

std::vector<int32_t> to_ids(const py::handle & tokens, const char * what) {
    if (PyUnicode_Check(tokens.ptr()) || PyBytes_Check(tokens.ptr())) {
        throw py::type_error(std::string(what) + " must be a sequence of token ids, not " + type_name(tokens));
    }
    if (!py::isinstance<py::iterable>(tokens)) {
        throw py::type_error(std::string(what) + " must be a sequence of token ids, not " + type_name(tokens));
    }
    std::vector<int32_t> ids;
    if (PySequence_Check(tokens.ptr())) ids.reserve(static_cast<size_t>(std::max<Py_ssize_t>(0, PySequence_Size(tokens.ptr()))));
    PyErr_Clear();  // PySequence_Size fails for sequences without a length; the loop below does not need it
    size_t i = 0;
    for (const py::handle item : tokens) {
        ids.push_back(to_int32(item, std::string(what) + "[" + std::to_string(i) + "]"));
        ++i;
    }
    return ids;
}

gptj::InterruptCheck PythonSignals::check() {
    return [this] {
        py::gil_scoped_acquire gil;
        if (PyErr_CheckSignals() == 0) return false;
        raised_ = std::make_shared<py::error_already_set>();  // takes the handler's exception
        return true;
    };
}

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
    bind_batch(m);
}
