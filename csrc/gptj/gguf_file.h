// A GGUF file opened for reading: its metadata, parsed by ggml's gguf API, and its tensor
// data, memory-mapped (never copied). Every accessor checks types and bounds first and
// throws gptj::Error: ggml's typed getters abort() on a type mismatch.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <variant>
#include <vector>

#include "ggml-cpp.h"
#include "gptj/memory.h"

namespace gptj {

struct GgufTensorInfo {
    std::string name;
    ggml_type type;
    int n_dims;             // as stored: trailing dimensions of size 1 are not counted
    int64_t ne[GGML_MAX_DIMS];
    size_t file_offset;     // from the start of the file
    size_t n_bytes;
};

// A scalar metadata value, for display (Model.metadata in Python).
using GgufScalar = std::variant<int64_t, uint64_t, double, bool, std::string>;

class GgufFile {
public:
    // Throws Error(file_not_found) when the path cannot be opened or is not a regular file,
    // Error(invalid_argument) when it holds a NUL byte, and Error(invalid_file) when it is not a
    // well-formed GGUF file whose tensors all lie inside it (see gguf_header.h for what is
    // checked before ggml parses it: counts, duplicates, UTF-8 of every string).
    explicit GgufFile(const std::string & path);
    GgufFile(const GgufFile &) = delete;
    GgufFile & operator=(const GgufFile &) = delete;

    const std::string & path() const { return path_; }
    size_t file_size() const { return mapping_.size(); }

    bool has_key(const std::string & key) const;
    // Integer-valued keys accept any GGUF integer type, converted with a range check.
    int64_t get_int(const std::string & key) const;
    std::optional<int64_t> find_int(const std::string & key) const;
    std::optional<float> find_float(const std::string & key) const;
    std::optional<std::string> find_string(const std::string & key) const;
    std::vector<std::string> get_string_array(const std::string & key) const;
    std::vector<int32_t> get_int_array(const std::string & key) const;
    // Every key whose value is a scalar or a string, in file order (arrays are left out).
    std::vector<std::pair<std::string, GgufScalar>> scalar_metadata() const;

    const std::vector<GgufTensorInfo> & tensors() const { return tensors_; }
    const GgufTensorInfo * find_tensor(const std::string & name) const;

    // The mapped file: tensor data lives at mapping() + info.file_offset.
    uint8_t * mapping() const { return mapping_.data(); }
    // Tells the kernel this process no longer needs the mapped pages of a byte range (they
    // stay in the page cache but leave our resident set); the range stays readable.
    void release_pages(size_t offset, size_t n_bytes) const;

private:
    int64_t key_id(const std::string & key) const;  // -1 when absent
    [[noreturn]] void fail(const std::string & what) const;

    std::string path_;
    FileMapping mapping_;  // before gguf_, so it outlives the metadata parsed from it
    gguf_context_ptr gguf_;
    std::vector<GgufTensorInfo> tensors_;
    std::unordered_map<std::string, size_t> tensor_index_;  // name -> index in tensors_
};

}  // namespace gptj
