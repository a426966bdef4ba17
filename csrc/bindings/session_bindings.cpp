// Session (a KV cache over a shared Model, guarded against use from two threads at once),
// the generation steps that run on it, and the thread-count policy it uses.
#include <pybind11/numpy.h>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "bindings/bindings.h"
#include "bindings/py_session.h"
#include "gptj/error.h"
#include "gptj/generation.h"
#include "gptj/speculation.h"
#include "gptj/sampling.h"
#include "gptj/session.h"
#include "gptj/threads.h"

namespace {

void check_vocab(PySession & self, const gptj::Sampler & sampler) {
    if (sampler.n_vocab() != self.session().model().hparams().n_vocab) {
        throw gptj::Error(gptj::Error::Kind::invalid_argument, "the Sampler was made for another vocabulary size");
    }
}

py::array_t<float> evaluate(PySession & self, const py::handle & tokens, bool all_logits) {
    const std::vector<int32_t> ids = to_ids(tokens, "tokens");
    std::vector<float> logits;
    {
        PySession::Use use(self.busy());
        PythonSignals signals;
        signals.run([&](const gptj::InterruptCheck & interrupted) {
            self.session().evaluate(ids, all_logits, logits, interrupted);
        });
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
py::tuple evaluate_and_sample(PySession & self, const py::handle & tokens, gptj::Sampler & sampler, bool logprob,
                              const py::handle & top_logprobs) {
    const std::vector<int32_t> ids = to_ids(tokens, "tokens");
    const int32_t n_top = to_int32(top_logprobs, "top_logprobs");
    check_vocab(self, sampler);
    gptj::Step step;
    {
        PySession::Use use(self.busy());
        PythonSignals signals;
        signals.run([&](const gptj::InterruptCheck & interrupted) {
            step = gptj::evaluate_and_sample(self.session(), ids, sampler, logprob, self.logits(), n_top, interrupted);
        });
    }
    return py::make_tuple(step.token, step.logprob, step.eval_ms, step.sample_ms, step.top_logprobs);
}

py::list evaluate_and_verify(PySession & self, const py::handle & tokens, const py::handle & draft,
                             gptj::Sampler & sampler, bool logprob, const py::handle & top_logprobs) {
    const std::vector<int32_t> ids = to_ids(tokens, "tokens");
    const std::vector<int32_t> drafted = to_ids(draft, "draft");
    const int32_t n_top = to_int32(top_logprobs, "top_logprobs");
    check_vocab(self, sampler);
    std::vector<gptj::Step> steps;
    {
        PySession::Use use(self.busy());
        PythonSignals signals;
        signals.run([&](const gptj::InterruptCheck & interrupted) {
            steps = gptj::evaluate_and_verify(self.session(), ids, drafted, sampler, logprob, self.logits(), n_top,
                                              interrupted);
        });
    }
    py::list out;
    for (const gptj::Step & step : steps) {
        out.append(py::make_tuple(step.token, step.logprob, step.eval_ms, step.sample_ms, step.top_logprobs));
    }
    return out;
}

py::tuple generate_loop(PySession & self, const py::handle & prompt, const py::handle & n_tokens, gptj::Sampler & sampler) {
    const std::vector<int32_t> ids = to_ids(prompt, "prompt");
    const int32_t count = to_int32(n_tokens, "n_tokens");
    if (count < 0) throw gptj::Error(gptj::Error::Kind::invalid_argument, "n_tokens must be >= 0, got " + std::to_string(count));
    check_vocab(self, sampler);
    gptj::LoopResult result;
    {
        PySession::Use use(self.busy());
        PythonSignals signals;
        signals.run([&](const gptj::InterruptCheck & interrupted) {
            result = gptj::generate_loop(self.session(), ids, count, sampler, interrupted);
        });
    }
    return py::make_tuple(result.tokens, result.prompt_ms, result.generation_ms);
}

}  // namespace

void bind_session(py::module_ & m) {
    // The thread-count policy alone, so tests can drive it with made-up timings.
    py::class_<gptj::ThreadCountPolicy>(m, "ThreadCountPolicy")
        .def(py::init<int, bool>(), py::arg("max_threads"), py::arg("adaptive"))
        .def("next", &gptj::ThreadCountPolicy::next, py::arg("now"))
        .def("record", &gptj::ThreadCountPolicy::record, py::arg("n_threads"), py::arg("wall_seconds"),
             py::arg("cpu_seconds"), py::arg("now"))
        .def_readonly_static("busy_share", &gptj::ThreadCountPolicy::kBusyShare)
        .def_readonly_static("first_probe_seconds", &gptj::ThreadCountPolicy::kFirstProbeSeconds)
        .def_readonly_static("max_probe_seconds", &gptj::ThreadCountPolicy::kMaxProbeSeconds);

    py::class_<PySession>(m, "Session")
        .def(py::init([](std::shared_ptr<gptj::Model> model, int n_ctx, int n_threads, int n_batch,
                         const std::string & cache_type, bool flash_attention) {
                 const gptj::CacheLayout cache{gptj::parse_cache_type(cache_type), flash_attention};
                 py::gil_scoped_release release;
                 return std::make_unique<PySession>(model, gptj::SessionParams{n_ctx, n_threads, n_batch, cache});
             }),
             py::arg("model"), py::arg("n_ctx") = 0, py::arg("n_threads") = 0, py::arg("n_batch") = 512,
             py::arg("cache_type") = "f16", py::arg("flash_attention") = false)
        .def("evaluate", &evaluate, py::arg("tokens"), py::arg("all_logits") = false)
        .def("evaluate_and_sample", &evaluate_and_sample, py::arg("tokens"), py::arg("sampler"), py::arg("logprob") = false,
             py::arg("top_logprobs") = 0)
        .def("evaluate_and_verify", &evaluate_and_verify, py::arg("tokens"), py::arg("draft"), py::arg("sampler"),
             py::arg("logprob") = false, py::arg("top_logprobs") = 0)
        .def("generate_loop", &generate_loop, py::arg("prompt"), py::arg("n_tokens"), py::arg("sampler"))
        .def("copy_from", [](PySession & s, PySession & source, int n_tokens) {
            if (&s == &source) {
                PySession::Use use(s.busy());
                s.session().copy_from(source.session(), n_tokens);
                return;
            }
            PySession::Use use(s.busy());
            PySession::Use reading(source.busy());
            py::gil_scoped_release release;
            s.session().copy_from(source.session(), n_tokens);
        }, py::arg("source"), py::arg("n_tokens"))
        .def("truncate", [](PySession & s, int n_keep) {
            PySession::Use use(s.busy());
            s.session().truncate(n_keep);
        }, py::arg("n_keep"))
        .def("discard", [](PySession & s, int n_keep, int n_discard) {
            PySession::Use use(s.busy());
            PythonSignals signals;
            signals.run([&](const gptj::InterruptCheck & interrupted) { s.session().discard(n_keep, n_discard, interrupted); });
        }, py::arg("n_keep"), py::arg("n_discard"))
        .def_property_readonly("history", [](PySession & s) {
            PySession::Use use(s.busy());
            return s.session().history();
        })
        .def_property_readonly("n_past", [](PySession & s) { return s.session().n_past(); })
        .def_property_readonly("n_ctx", [](PySession & s) { return s.session().n_ctx(); })
        .def_property_readonly("n_batch", [](PySession & s) { return s.session().n_batch(); })
        .def_property_readonly("kv_cache_bytes", [](PySession & s) { return s.session().kv_cache_bytes(); })
        .def_property_readonly("cache_type",
                               [](PySession & s) { return std::string(ggml_type_name(s.session().cache_layout().type)); })
        .def_property_readonly("flash_attention", [](PySession & s) { return s.session().cache_layout().flash_attention; })
        .def_property_readonly("n_threads_last_used", [](PySession & s) { return s.session().n_threads_last_used(); })
        .def_property_readonly("adaptive_threads", [](PySession & s) { return s.session().adaptive_threads(); })
        .def_property("n_threads", [](PySession & s) { return s.session().n_threads(); },
                      [](PySession & s, int n) {
                          PySession::Use use(s.busy());
                          s.session().set_n_threads(n);
                      });
}
