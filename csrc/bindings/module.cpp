// pybind11 only: type conversion, GIL release and error translation. The public API,
// its documentation and its checks live in python/gptj_ggml/.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "bindings/info_bindings.h"
#include "ggml.h"
#include "gptj/error.h"
#include "gptj/generation.h"
#include "gptj/ggml_log.h"
#include "gptj/model.h"
#include "gptj/sampling.h"
#include "gptj/session.h"
#include "gptj/threads.h"

namespace py = pybind11;

void bind_vocab(py::module_ & m);  // vocab_bindings.cpp
void bind_quantize(py::module_ & m);  // quantize_bindings.cpp

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

// Raised (as gptj_ggml.errors.SessionBusyError) when a second thread calls into a Session
// that is already evaluating.
class SessionBusy : public std::runtime_error {
    using std::runtime_error::runtime_error;
};

// A Session plus a guard: one session used from two threads at once would corrupt its
// cache, so the second caller gets an exception instead. (The Python Session extends the
// guard over a generator's whole life.)
class PySession {
public:
    PySession(std::shared_ptr<const gptj::Model> model, const gptj::SessionParams & params)
        : session_(std::move(model), params) {}

    class Use {
    public:
        explicit Use(std::atomic<bool> & busy) : busy_(busy) {
            if (busy_.exchange(true)) {
                throw SessionBusy("this Session is already in use by another thread; create one Session per thread");
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
    std::vector<float> & logits() { return logits_; }

private:
    gptj::Session session_;
    std::atomic<bool> busy_{false};
    std::vector<float> logits_;  // scratch for evaluate_and_sample
};

std::vector<int32_t> to_ids(const py::handle & tokens) {
    return py::cast<std::vector<int32_t>>(tokens);
}

void check_vocab(PySession & self, const gptj::Sampler & sampler) {
    if (sampler.n_vocab() != self.session().model().hparams().n_vocab) {
        throw gptj::Error(gptj::Error::Kind::invalid_argument, "the Sampler was made for another vocabulary size");
    }
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
py::tuple evaluate_and_sample(PySession & self, const py::handle & tokens, gptj::Sampler & sampler, bool logprob) {
    const std::vector<int32_t> ids = to_ids(tokens);
    check_vocab(self, sampler);
    gptj::Step step;
    {
        PySession::Use use(self.busy());
        py::gil_scoped_release release;
        step = gptj::evaluate_and_sample(self.session(), ids, sampler, logprob, self.logits());
    }
    return py::make_tuple(step.token, step.logprob, step.eval_ms, step.sample_ms);
}

py::tuple generate_loop(PySession & self, const py::handle & prompt, int n_tokens, gptj::Sampler & sampler) {
    const std::vector<int32_t> ids = to_ids(prompt);
    check_vocab(self, sampler);
    gptj::LoopResult result;
    {
        PySession::Use use(self.busy());
        py::gil_scoped_release release;
        result = gptj::generate_loop(self.session(), ids, n_tokens, sampler);
    }
    return py::make_tuple(result.tokens, result.prompt_ms, result.generation_ms);
}

// The numeric settings arrive as a dict keyed by GPTJ_SAMPLING_SETTINGS' names: the bindings
// never list them one by one, so a new setting needs no change here.
gptj::SamplingParams sampling_params(const py::dict & settings, const std::map<int32_t, float> & logit_bias, uint64_t seed) {
    gptj::SamplingParams p;
    for (const auto & [key, value] : settings) {
        const std::string name = py::cast<std::string>(key);
        // bool is an int in Python; temperature=True is a mistake, not 1.
        if (py::isinstance<py::bool_>(value) || !(py::isinstance<py::int_>(value) || py::isinstance<py::float_>(value))) {
            throw py::type_error(name + " must be a number, got " + py::cast<std::string>(py::str(py::type::of(value).attr("__name__"))));
        }
        gptj::set_sampling_setting(p, name, py::cast<double>(value));
    }
    p.logit_bias.assign(logit_bias.begin(), logit_bias.end());
    p.seed = seed;
    return p;
}

py::list sampling_settings() {
    py::list out;
    for (const gptj::SamplingSetting & s : gptj::sampling_settings()) {
        py::object default_value = s.is_integer ? py::object(py::int_(static_cast<long long>(s.default_value)))
                                                : py::object(py::float_(s.default_value));
        out.append(py::dict(py::arg("name") = s.name, py::arg("type") = s.is_integer ? "int" : "float",
                            py::arg("default") = default_value, py::arg("low") = s.low, py::arg("high") = s.high,
                            py::arg("low_inclusive") = s.low_inclusive, py::arg("high_inclusive") = s.high_inclusive,
                            py::arg("help") = s.help));
    }
    return out;
}

const float * checked_logits(const gptj::Sampler & sampler, const py::array_t<float, py::array::c_style | py::array::forcecast> & logits) {
    if (logits.ndim() != 1 || logits.shape(0) != sampler.n_vocab()) {
        throw gptj::Error(gptj::Error::Kind::invalid_argument,
                          "logits must have shape (" + std::to_string(sampler.n_vocab()) + ",), got " +
                              std::to_string(logits.ndim() == 1 ? logits.shape(0) : logits.size()) + " values");
    }
    return logits.data();
}

std::vector<int32_t> checked_history(const gptj::Sampler & sampler, const py::handle & history) {
    std::vector<int32_t> ids = to_ids(history);
    for (const int32_t id : ids) {
        if (id < 0 || id >= sampler.n_vocab()) {
            throw gptj::Error(gptj::Error::Kind::invalid_argument, "history token id " + std::to_string(id) + " is out of range");
        }
    }
    return ids;
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
        } catch (const SessionBusy & e) {
            try {
                PyErr_SetString(py::module_::import("gptj_ggml.errors").attr("SessionBusyError").ptr(), e.what());
            } catch (py::error_already_set &) {
                PyErr_SetString(PyExc_RuntimeError, e.what());
            }
        }
    });

    bind_vocab(m);
    bind_quantize(m);
    bind_info(m);

    // The thread-count policy alone, so tests can drive it with made-up timings.
    py::class_<gptj::ThreadCountPolicy>(m, "ThreadCountPolicy")
        .def(py::init<int, bool>(), py::arg("max_threads"), py::arg("adaptive"))
        .def("next", &gptj::ThreadCountPolicy::next, py::arg("now"))
        .def("record", &gptj::ThreadCountPolicy::record, py::arg("n_threads"), py::arg("wall_seconds"),
             py::arg("cpu_seconds"), py::arg("now"))
        .def_readonly_static("busy_share", &gptj::ThreadCountPolicy::kBusyShare)
        .def_readonly_static("first_probe_seconds", &gptj::ThreadCountPolicy::kFirstProbeSeconds)
        .def_readonly_static("max_probe_seconds", &gptj::ThreadCountPolicy::kMaxProbeSeconds);

    m.def("physical_core_count", &gptj::physical_core_count);
    m.def("sampling_settings", &sampling_settings);
    m.def("check_sampling_settings", [](const py::dict & settings) { sampling_params(settings, {}, 0); }, py::arg("settings"));
    m.def("ggml_version", [] { return std::string(ggml_version()); });
    m.def("ggml_commit", [] { return std::string(ggml_commit()); });

    using gptj::Model;
    py::class_<Model, std::shared_ptr<Model>>(m, "Model")
        .def(py::init([](const std::string & path, bool repack, int n_threads, bool mmap) {
                 std::shared_ptr<const Model> model;
                 {
                     py::gil_scoped_release release;
                     model = Model::load(path, gptj::ModelParams{repack, mmap, n_threads});
                 }
                 // pybind11 holders cannot be shared_ptr<const T>; every bound method is const.
                 return std::const_pointer_cast<Model>(model);
             }),
             py::arg("path"), py::arg("repack") = true, py::arg("n_threads") = 0, py::arg("mmap") = true)
        .def_property_readonly("repacked_bytes", &Model::repacked_bytes)
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
        .def_property_readonly("n_merges", &n_merges)
        .def("tensor_info", &tensor_info)
        .def("metadata", [](const Model & m) {
            py::dict out;
            for (const auto & [key, value] : m.file().scalar_metadata()) {
                out[py::str(key)] = scalar_to_python(value);
            }
            return out;
        });

    py::class_<gptj::Sampler>(m, "Sampler")
        .def(py::init([](int32_t n_vocab, const py::dict & settings, const std::map<int32_t, float> & logit_bias,
                         uint64_t seed) { return gptj::Sampler(sampling_params(settings, logit_bias, seed), n_vocab); }),
             py::arg("n_vocab"), py::arg("settings"), py::kw_only(), py::arg("logit_bias"), py::arg("seed"))
        .def_property_readonly("n_vocab", &gptj::Sampler::n_vocab)
        .def("sample", [](gptj::Sampler & s, py::array_t<float, py::array::c_style | py::array::forcecast> logits,
                          const py::handle & history) {
            const std::vector<int32_t> ids = checked_history(s, history);
            return s.sample(checked_logits(s, logits), ids);
        }, py::arg("logits"), py::arg("history"))
        .def("distribution", [](gptj::Sampler & s, py::array_t<float, py::array::c_style | py::array::forcecast> logits,
                                const py::handle & history) {
            const std::vector<int32_t> ids = checked_history(s, history);
            return py::array_t<double>(py::cast(s.distribution(checked_logits(s, logits), ids)));
        }, py::arg("logits"), py::arg("history"));

    py::class_<PySession>(m, "Session")
        .def(py::init([](std::shared_ptr<Model> model, int n_ctx, int n_threads, int n_batch) {
                 py::gil_scoped_release release;
                 return std::make_unique<PySession>(model, gptj::SessionParams{n_ctx, n_threads, n_batch});
             }),
             py::arg("model"), py::arg("n_ctx") = 0, py::arg("n_threads") = 0, py::arg("n_batch") = 512)
        .def("evaluate", &evaluate, py::arg("tokens"), py::arg("all_logits") = false)
        .def("evaluate_and_sample", &evaluate_and_sample, py::arg("tokens"), py::arg("sampler"), py::arg("logprob") = false)
        .def("generate_loop", &generate_loop, py::arg("prompt"), py::arg("n_tokens"), py::arg("sampler"))
        .def("truncate", [](PySession & s, int n_keep) {
            PySession::Use use(s.busy());
            s.session().truncate(n_keep);
        }, py::arg("n_keep"))
        .def("discard", [](PySession & s, int n_keep, int n_discard) {
            PySession::Use use(s.busy());
            py::gil_scoped_release release;
            s.session().discard(n_keep, n_discard);
        }, py::arg("n_keep"), py::arg("n_discard"))
        .def_property_readonly("history", [](PySession & s) {
            PySession::Use use(s.busy());
            return s.session().history();
        })
        .def_property_readonly("n_past", [](PySession & s) { return s.session().n_past(); })
        .def_property_readonly("n_ctx", [](PySession & s) { return s.session().n_ctx(); })
        .def_property_readonly("n_batch", [](PySession & s) { return s.session().n_batch(); })
        .def_property_readonly("kv_cache_bytes", [](PySession & s) { return s.session().kv_cache_bytes(); })
        .def_property_readonly("n_threads_last_used", [](PySession & s) { return s.session().n_threads_last_used(); })
        .def_property_readonly("adaptive_threads", [](PySession & s) { return s.session().adaptive_threads(); })
        .def_property("n_threads", [](PySession & s) { return s.session().n_threads(); },
                      [](PySession & s, int n) {
                          PySession::Use use(s.busy());
                          s.session().set_n_threads(n);
                      });
}
