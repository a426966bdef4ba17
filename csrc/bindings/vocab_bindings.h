// Registers the `Vocab` class on the extension module.
#pragma once

#include <pybind11/pybind11.h>

void bind_vocab(pybind11::module_ & m);
