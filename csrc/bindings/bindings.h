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
#include <vector>

#include "gptj/model.h"

namespace py = pybind11;

// Each registers its part of the extension module; module.cpp calls them in this order (a
// class is registered before the signatures that name it).
void bind_info(py::module_ & m);      // info_bindings.cpp: the ggml build, CPU features, kernels
void bind_vocab(py::module_ & m);     // vocab_bindings.cpp: Vocab
void bind_quantize(py::module_ & m);  // quantize_bindings.cpp: quantize_rows
void bind_model(py::module_ & m);     // model_bindings.cpp: Model
void bind_sampler(py::module_ & m);   // sampler_bindings.cpp: Sampler, the sampling settings
void bind_session(py::module_ & m);   // session_bindings.cpp: Session, ThreadCountPolicy

// Token ids from any Python sequence of ints.
std::vector<int32_t> to_ids(const py::handle & tokens);

// Model.tensor_info(): [(name, type, shape, n_bytes)] in file order; shape as ggml counts it
// (ne[0] first, trailing dimensions of size 1 left out). In info_bindings.cpp.
py::list tensor_info(const gptj::Model & model);

// Model.n_merges: BPE merges stored in the file (0 when the file has none and ranks come from ids).
size_t n_merges(const gptj::Model & model);

// Raises gptj_ggml.errors.<name> (a class defined in Python, so that Python code and the
// engine raise the same types), or `fallback` if that module cannot be imported.
void set_python_error(const char * name, PyObject * fallback, const char * message);
