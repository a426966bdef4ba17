// Descriptions for `gptj-ggml info`: the ggml build in use and a model's tensors.
#pragma once

#include <pybind11/pybind11.h>

#include "gptj/model.h"

// Registers cpu_features(), ggml_library_path() and ggml_built_in() on the extension module.
void bind_info(pybind11::module_ & m);

// Model.tensor_info(): [(name, type, shape, n_bytes)] in file order; shape as ggml counts it
// (ne[0] first, trailing dimensions of size 1 left out).
pybind11::list tensor_info(const gptj::Model & model);

// Model.n_merges: BPE merges stored in the file (0 when the file has none and ranks come from ids).
size_t n_merges(const gptj::Model & model);
