// Model: a loaded GGUF file's weights, hyper-parameters, vocabulary and metadata.

#include <memory>
#include <string>
#include <variant>

#include "bindings/bindings.h"
#include "gptj/model.h"

namespace {

py::object scalar_to_python(const gptj::GgufScalar & value) {
    return std::visit([](const auto & v) -> py::object { return py::cast(v); }, value);
}

}  // namespace

void bind_model(py::module_ & m) {
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

}
