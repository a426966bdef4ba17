// BatchEvaluator: several Sessions' tokens in one evaluation, each then sampled with its own
// sampler (the server's continuous batching and Model.generate_batch step through it).
#include <memory>
#include <string>
#include <unordered_set>
#include <vector>

#include "bindings/bindings.h"
#include "bindings/py_session.h"
#include "gptj/batch_evaluator.h"
#include "gptj/generation.h"
#include "gptj/sampling.h"
#include "gptj/speculation.h"

namespace {

py::tuple step_tuple(const gptj::Step & step) {
    return py::make_tuple(step.token, step.logprob, step.eval_ms, step.sample_ms, step.top_logprobs);
}

// items: (session, tokens, sampler or None, want_logprob, n_top_logprobs[, draft]) per session.
// Runs the batched evaluate_and_verify; each item's Steps come back as a list of step tuples.
std::vector<std::vector<gptj::Step>> verify_items(gptj::BatchEvaluator & self, const py::sequence & items,
                                                  bool drafts_allowed) {
    std::vector<gptj::BatchStepItem> steps;
    std::vector<PySession *> sessions;
    for (size_t i = 0; i < items.size(); ++i) {
        const std::string where = "items[" + std::to_string(i) + "]";
        const py::tuple item = py::reinterpret_borrow<py::object>(items[i]).cast<py::tuple>();
        const size_t n_fields = drafts_allowed ? 6 : 5;
        if (item.size() != n_fields) {
            throw py::value_error(where + (drafts_allowed ? " must be (session, tokens, sampler, want_logprob, n_top_logprobs, draft)"
                                                          : " must be (session, tokens, sampler, want_logprob, n_top_logprobs)"));
        }
        auto & session = item[0].cast<PySession &>();
        gptj::Sampler * sampler = item[2].is_none() ? nullptr : &item[2].cast<gptj::Sampler &>();
        std::vector<int32_t> draft = drafts_allowed ? to_ids(item[5], (where + " draft").c_str()) : std::vector<int32_t>{};
        steps.push_back({&session.session(), to_ids(item[1], (where + " tokens").c_str()), sampler, item[3].cast<bool>(),
                         to_int32(item[4], where + " n_top_logprobs"), std::move(draft)});
        sessions.push_back(&session);
    }
    // Each session is claimed once (a session given twice is the engine's ValueError, not a
    // busy session), and stays claimed for the whole call.
    std::vector<std::unique_ptr<PySession::Use>> claims;
    std::unordered_set<PySession *> claimed;
    for (PySession * session : sessions) {
        if (claimed.insert(session).second) claims.push_back(std::make_unique<PySession::Use>(session->busy()));
    }
    std::vector<std::vector<gptj::Step>> results;
    PythonSignals signals;
    signals.run([&](const gptj::InterruptCheck & interrupted) { results = gptj::evaluate_and_verify(self, steps, interrupted); });
    return results;
}

py::list evaluate_and_sample(gptj::BatchEvaluator & self, const py::sequence & items) {
    py::list out;
    for (const std::vector<gptj::Step> & steps : verify_items(self, items, /*drafts_allowed=*/false)) {
        out.append(step_tuple(steps.front()));
    }
    return out;
}

py::list evaluate_and_verify(gptj::BatchEvaluator & self, const py::sequence & items) {
    py::list out;
    for (const std::vector<gptj::Step> & steps : verify_items(self, items, /*drafts_allowed=*/true)) {
        py::list item_steps;
        for (const gptj::Step & step : steps) item_steps.append(step_tuple(step));
        out.append(item_steps);
    }
    return out;
}

}  // namespace

void bind_batch(py::module_ & m) {
    py::class_<gptj::BatchEvaluator>(m, "BatchEvaluator")
        .def(py::init([](std::shared_ptr<gptj::Model> model, int n_threads, int n_batch) {
                 return std::make_unique<gptj::BatchEvaluator>(model, n_threads, n_batch);
             }),
             py::arg("model"), py::arg("n_threads") = 0, py::arg("n_batch") = 512)
        .def("evaluate_and_sample", &evaluate_and_sample, py::arg("items"))
        .def("evaluate_and_verify", &evaluate_and_verify, py::arg("items"))
        .def_property_readonly("n_batch", &gptj::BatchEvaluator::n_batch)
        .def_property_readonly("n_threads_last_used", &gptj::BatchEvaluator::n_threads_last_used)
        .def_property_readonly("adaptive_threads", &gptj::BatchEvaluator::adaptive_threads)
        .def_property("n_threads", &gptj::BatchEvaluator::n_threads, &gptj::BatchEvaluator::set_n_threads);
}
