// A single linear pass over a GGUF file's header -- metadata and tensor table -- before ggml
// parses it (gguf_file.cpp runs it first).
//
// Why our own pass: ggml's gguf_init_* compares every key with every earlier key, and every
// tensor name with every earlier one, so a crafted file with 80,000 keys took 37 s to be
// refused; and it accepts strings that are not UTF-8, which reached Python as a bare
// UnicodeDecodeError without the file's name. This pass refuses, in time proportional to the
// header, every header ggml would refuse (so that ggml's parse of a header we passed cannot
// fail) and a few more, each with a message naming the key or tensor at fault.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace gptj {

// Bounds far above any GPT-J file (GPT-J-6B: 285 tensors, about 25 keys, names under 40 bytes)
// that keep ggml's quadratic duplicate checks below a few tens of milliseconds.
namespace gguf_limits {
constexpr int64_t kMaxKeys = 4096;
constexpr size_t kMaxKeyBytes = 256;
// 5 + 10 * n_layer tensors make a GPT-J: this allows 409 layers (GPT-J-6B has 28).
constexpr int64_t kMaxTensors = 4096;
}  // namespace gguf_limits

// Throws invalid_file_error(path, ...) for the first problem found: a count the file's size
// cannot hold, a read past the end, an unknown type, an empty, overlong or duplicate key, a
// string that is not valid UTF-8 (keys, string values, array elements, tensor names), a
// duplicate or overlong tensor name, a bad shape, type or offset, a bad general.alignment.
void check_gguf_header(const std::string & path, const uint8_t * data, size_t size);

// Whether text is well-formed UTF-8 (no overlong forms, no surrogates, nothing past U+10FFFF).
bool is_valid_utf8(const char * text, size_t n_bytes);

}  // namespace gptj
