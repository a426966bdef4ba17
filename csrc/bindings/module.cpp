// pybind11 only: type conversion, GIL release and error translation. The public API,
// its documentation and its checks live in python/gptj_ggml/.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <atomic>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "ggml.h"
#include "gptj/error.h"
#include "gptj/ggml_log.h"
#include "gptj/model.h"
#include "gptj/sampling.h"
#include "gptj/session.h"
#include "gptj/threads.h"

namespace py = pybind11;

void bind_vocab(py::module_ & m);  // vocab_bindings.cpp

namespace {

// The Python classes are defined in gptj_ggml/errors.py so that Python code and the engine
// raise the same types.
void translate_error(const gptj::Error & e) {
    const char * name = "GptjError";
    PyObject * fallback = PyExc_RuntimeError;
    switch (e.kind()) {
        case gptj::Error::Kind::file_not_found: PyErr_SetString(PyExc_FileNotFoundError, e.what()); return;
        case gptj::Error::Kind::invalid_argument: PyErr_SetString(PyExc_ValueError, e.what()); return;
        case gptj::Error::Kind::invalid_file: name = "ModelFormatError"; fallback = PyExc_ValueError; break;
        case gptj::Error::Kind::context_full: name = "ContextFullError"; break;
        case gptj::Error::Kind::evaluation: name = "EvaluationError"; break;
    }
    try {
        py::object cls = py::module_::import("gptj_ggml.errors").attr(name);
        PyErr_SetString(cls.ptr(), e.what());
    } catch (py::error_already_set &) {
        PyErr_SetString(fallback, e.what());
    }
}

py::object scalar_to_python(const gptj::GgufScalar & value) {
    return std::visit([](const auto & v) -> py::object { return py::cast(v); }, value);
}

// A Session plus a guard: one session used from two threads at once would corrupt its
// cache, so the second caller gets an exception instead.
class PySession {
public:
    PySession(std::shared_ptr<const gptj::Model> model, const gptj::SessionParams & params)
        : session_(std::move(model), params) {}

    class Use {
    public:
        explicit Use(std::atomic<bool> & busy) : busy_(busy) {
            if (busy_.exchange(true)) {
                throw std::runtime_error("this Session is already in use by another thread; create one Session per thread");
            }
        }
        ~Use() { busy_.store(false); }
        Use(const Use &) = delete;
        Use & operator=(const Use &) = delete;

    private:
        std::atomic<bool> & busy_;
    };

    gptj::Session & session() { return session_; }
    std::atomic<bool> & busy() { return busy_; }

private:
    gptj::Session session_;
    std::atomic<bool> busy_{false};
};

std::vector<int32_t> to_ids(const py::handle & tokens) {
    return py::cast<std::vector<int32_t>>(tokens);
}

py::array_t<float> evaluate(PySession & self, const py::handle & tokens, bool all_logits) {
    const std::vector<int32_t> ids = to_ids(tokens);
    std::vector<float> logits;
    {
        PySession::Use use(self.busy());
        py::gil_scoped_release release;
        self.session().evaluate(ids, all_logits, logits);
    }
    const py::ssize_t n_vocab = self.session().model().hparams().n_vocab;
    auto * owned = new std::vector<float>(std::move(logits));
    py::capsule free_when_done(owned, [](void * p) { delete static_cast<std::vector<float> *>(p); });
    if (all_logits) {
        const py::ssize_t n = static_cast<py::ssize_t>(owned->size()) / n_vocab;
        return py::array_t<float>({n, n_vocab}, owned->data(), free_when_done);
    }
    return py::array_t<float>({static_cast<py::ssize_t>(owned->size())}, owned->data(), free_when_done);
}

// Evaluates tokens and draws the next one, without handing the logits to Python.
int32_t evaluate_and_sample(PySession & self, const py::handle & tokens, gptj::Sampler & sampler, float temperature) {
    const std::vector<int32_t> ids = to_ids(tokens);
    PySession::Use use(self.busy());
    py::gil_scoped_release release;
    std::vector<float> logits;
    self.session().evaluate(ids, false, logits);
    return sampler.sample(logits.data(), self.session().model().hparams().n_vocab, temperature);
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "gptj_ggml's native engine (private: use the gptj_ggml package)";
    gptj::install_ggml_log();
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const gptj::Error & e) {
            translate_error(e);
        }
    });

    bind_vocab(m);

    m.def("physical_core_count", &gptj::physical_core_count);
    m.def("ggml_version", [] { return std::string(ggml_version()); });
    m.def("ggml_commit", [] { return std::string(ggml_commit()); });

    using gptj::Model;
    py::class_<Model, std::shared_ptr<Model>>(m, "Model")
        .def(py::init([](const std::string & path) {
                 std::shared_ptr<const Model> model;
                 {
                     py::gil_scoped_release release;
                     model = Model::load(path);
                 }
                 // pybind11 holders cannot be shared_ptr<const T>; every bound method is const.
                 return std::const_pointer_cast<Model>(model);
             }),
             py::arg("path"))
        .def_property_readonly("path", &Model::path)
        .def_property_readonly("n_vocab", [](const Model & m) { return m.hparams().n_vocab; })
        .def_property_readonly("n_ctx_train", [](const Model & m) { return m.hparams().n_ctx_train; })
        .def_property_readonly("n_embd", [](const Model & m) { return m.hparams().n_embd; })
        .def_property_readonly("n_head", [](const Model & m) { return m.hparams().n_head; })
        .def_property_readonly("n_layer", [](const Model & m) { return m.hparams().n_layer; })
        .def_property_readonly("n_ff", [](const Model & m) { return m.hparams().n_ff; })
        .def_property_readonly("rotary_dim", [](const Model & m) { return m.hparams().rotary_dim; })
        .def_property_readonly("norm_eps", [](const Model & m) { return m.hparams().norm_eps; })
        .def_property_readonly("n_params", &Model::n_params)
        .def_property_readonly("weight_bytes", &Model::weight_bytes)
        .def_property_readonly("file_size", [](const Model & m) { return m.file().file_size(); })
        .def_property_readonly("weight_type", &Model::weight_type)
        .def_property_readonly("vocab", [](const Model & m) { return std::const_pointer_cast<gptj::Vocab>(m.shared_vocab()); })
        .def("metadata", [](const Model & m) {
            py::dict out;
            for (const auto & [key, value] : m.file().scalar_metadata()) {
                out[py::str(key)] = scalar_to_python(value);
            }
            return out;
        });

    py::class_<gptj::Sampler>(m, "Sampler")
        .def(py::init<uint64_t>(), py::arg("seed"))
        .def("sample", [](gptj::Sampler & s, py::array_t<float, py::array::c_style | py::array::forcecast> logits, float temperature) {
            return s.sample(logits.data(), static_cast<int32_t>(logits.size()), temperature);
        }, py::arg("logits"), py::arg("temperature"));

    py::class_<PySession>(m, "Session")
        .def(py::init([](std::shared_ptr<Model> model, int n_ctx, int n_threads, int n_batch) {
                 py::gil_scoped_release release;
                 return std::make_unique<PySession>(model, gptj::SessionParams{n_ctx, n_threads, n_batch});
             }),
             py::arg("model"), py::arg("n_ctx") = 0, py::arg("n_threads") = 0, py::arg("n_batch") = 512)
        .def("evaluate", &evaluate, py::arg("tokens"), py::arg("all_logits") = false)
        .def("evaluate_and_sample", &evaluate_and_sample, py::arg("tokens"), py::arg("sampler"), py::arg("temperature"))
        .def("truncate", [](PySession & s, int n_keep) {
            PySession::Use use(s.busy());
            s.session().truncate(n_keep);
        }, py::arg("n_keep"))
        .def_property_readonly("history", [](PySession & s) { return s.session().history(); })
        .def_property_readonly("n_past", [](PySession & s) { return s.session().n_past(); })
        .def_property_readonly("n_ctx", [](PySession & s) { return s.session().n_ctx(); })
        .def_property_readonly("n_batch", [](PySession & s) { return s.session().n_batch(); })
        .def_property_readonly("kv_cache_bytes", [](PySession & s) { return s.session().kv_cache_bytes(); })
        .def_property("n_threads", [](PySession & s) { return s.session().n_threads(); },
                      [](PySession & s, int n) {
                          PySession::Use use(s.busy());
                          s.session().set_n_threads(n);
                      });
}
