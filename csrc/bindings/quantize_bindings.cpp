// pybind11 for csrc/gptj/quantize: numpy float32 rows in, quantized bytes out, GIL released.
#include <pybind11/numpy.h>

#include <string>

#include "bindings/bindings.h"
#include "gptj/error.h"
#include "gptj/kernels/quantize.h"

namespace {

ggml_type to_type(int type) {
    if (type < 0 || type >= GGML_TYPE_COUNT) {
        throw gptj::Error(gptj::Error::Kind::invalid_argument, "unknown ggml type " + std::to_string(type));
    }
    return static_cast<ggml_type>(type);
}

py::array_t<uint8_t> quantize_rows(int type, py::array_t<float, py::array::c_style | py::array::forcecast> rows,
                                   int n_threads) {
    if (rows.ndim() != 2) {
        throw gptj::Error(gptj::Error::Kind::invalid_argument,
                          "quantize_rows expects a 2-D array (rows, row_length), got " + std::to_string(rows.ndim()) +
                              " dimensions");
    }
    const ggml_type t = to_type(type);
    const int64_t n_rows = rows.shape(0), row_length = rows.shape(1);
    const size_t n_bytes = gptj::quantized_size(t, n_rows, row_length);
    py::array_t<uint8_t> out(static_cast<py::ssize_t>(n_bytes));
    const float * src = rows.data();
    void * dst = out.mutable_data();
    {
        py::gil_scoped_release release;
        gptj::quantize_rows(t, src, dst, n_rows, row_length, n_threads);
    }
    return out;
}

}  // namespace

void bind_quantize(py::module_ & m) {
    m.def("quantize_rows", &quantize_rows, py::arg("type"), py::arg("rows"), py::arg("n_threads") = 0,
          "Quantize float32 rows (n_rows, row_length) to ggml type `type` (a GGMLQuantizationType value); "
          "returns the bytes as ggml lays them out.");
    m.def("is_quantize_target", [](int type) { return type >= 0 && type < GGML_TYPE_COUNT && gptj::is_quantize_target(static_cast<ggml_type>(type)); },
          py::arg("type"));
}
