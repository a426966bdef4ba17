// Sampler and the sampling settings: the settings reach C++ as a dict keyed by the names in
// csrc/gptj/sampling_settings.h, so no setting is named here.
#include <pybind11/numpy.h>

#include <cmath>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "bindings/bindings.h"
#include "gptj/error.h"
#include "gptj/sampling.h"

namespace {

// The numeric settings arrive as a dict keyed by GPTJ_SAMPLING_SETTINGS' names: the bindings
// never list them one by one, so a new setting needs no change here.
gptj::SamplingParams sampling_params(const py::dict & settings, const py::dict & logit_bias, uint64_t seed) {
    gptj::SamplingParams p;
    for (const auto & [key, value] : settings) {
        const std::string name = py::cast<std::string>(key);
        // bool is an int in Python; temperature=True is a mistake, not 1.
        if (py::isinstance<py::bool_>(value) || !(py::isinstance<py::int_>(value) || py::isinstance<py::float_>(value))) {
            throw py::type_error(name + " must be a number, got " + py::cast<std::string>(py::str(py::type::of(value).attr("__name__"))));
        }
        gptj::set_sampling_setting(p, name, py::cast<double>(value));
    }
    // Sorted by id, as the std::map this replaced: the bias is applied in a fixed order.
    std::map<int32_t, float> bias;
    for (const auto & [key, value] : logit_bias) {
        const int32_t id = to_int32(key, "logit_bias key");
        if (py::isinstance<py::bool_>(value) || !(py::isinstance<py::int_>(value) || py::isinstance<py::float_>(value))) {
            throw py::type_error("logit_bias of token " + std::to_string(id) + " must be a number, got " +
                                 py::cast<std::string>(py::str(py::type::of(value).attr("__name__"))));
        }
        const double v = PyFloat_AsDouble(value.ptr());
        if (PyErr_Occurred()) {
            PyErr_Clear();
            throw py::value_error("logit_bias of token " + std::to_string(id) + " is out of range");
        }
        // Finite values beyond float's range would become inf (and +inf is refused).
        if (std::isfinite(v) && std::fabs(v) > std::numeric_limits<float>::max()) {
            throw py::value_error("logit_bias of token " + std::to_string(id) + " is out of range");
        }
        bias[id] = static_cast<float>(v);
    }
    p.logit_bias.assign(bias.begin(), bias.end());
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
    std::vector<int32_t> ids = to_ids(history, "history");
    for (const int32_t id : ids) {
        if (id < 0 || id >= sampler.n_vocab()) {
            throw gptj::Error(gptj::Error::Kind::invalid_argument, "history token id " + std::to_string(id) + " is out of range");
        }
    }
    return ids;
}

}  // namespace

void bind_sampler(py::module_ & m) {
    m.def("sampling_settings", &sampling_settings);
    m.def("check_sampling_settings", [](const py::dict & settings) { sampling_params(settings, py::dict(), 0); },
          py::arg("settings"));
    py::class_<gptj::Sampler>(m, "Sampler")
        .def(py::init([](const py::handle & n_vocab, const py::dict & settings, const py::dict & logit_bias, uint64_t seed) {
                 const int32_t n = to_int32(n_vocab, "n_vocab");  // the engine refuses n <= 0
                 return gptj::Sampler(sampling_params(settings, logit_bias, seed), n);
             }),
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
}
