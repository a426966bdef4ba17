#include "gptj/gguf_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <limits>
#include <utility>

#include "gguf.h"
#include "gptj/error.h"
#include "gptj/ggml_log.h"
#include "gptj/gguf_header.h"
#include "gptj/memory.h"

namespace gptj {
namespace {

// The first four bytes of the model files people may hand us by mistake.
std::string describe_magic(const char magic[4]) {
    const std::string m(magic, 4);
    if (m == "GGUF") return "";
    // Legacy GGML-family files store the magic as a little-endian uint32, so it reads reversed.
    if (m == "lmgg" || m == "fmgg" || m == "tjgg" || m == "algg") {
        return "a legacy GGML file, not GGUF: convert it with `gptj-ggml convert`";
    }
    if (m.substr(0, 2) == "PK") return "a zip archive (a PyTorch checkpoint?), not GGUF: convert it with `gptj-ggml convert`";
    return "not a GGUF file (bad magic)";
}

bool is_integer(gguf_type type) {
    switch (type) {
        case GGUF_TYPE_UINT8: case GGUF_TYPE_INT8: case GGUF_TYPE_UINT16: case GGUF_TYPE_INT16:
        case GGUF_TYPE_UINT32: case GGUF_TYPE_INT32: case GGUF_TYPE_UINT64: case GGUF_TYPE_INT64:
            return true;
        default:
            return false;
    }
}

// An open file descriptor, closed when destroyed; move-only.
class FileDescriptor {
public:
    explicit FileDescriptor(int fd) : fd_(fd) {}
    ~FileDescriptor() {
        if (fd_ >= 0) ::close(fd_);
    }
    FileDescriptor(FileDescriptor && other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
    FileDescriptor & operator=(FileDescriptor && other) noexcept {
        if (this != &other) {
            if (fd_ >= 0) ::close(fd_);
            fd_ = std::exchange(other.fd_, -1);
        }
        return *this;
    }
    FileDescriptor(const FileDescriptor &) = delete;
    FileDescriptor & operator=(const FileDescriptor &) = delete;

    int get() const { return fd_; }
    bool is_open() const { return fd_ >= 0; }

private:
    int fd_;
};

std::string describe_file_type(mode_t mode) {
    if (S_ISDIR(mode)) return "a directory";
    if (S_ISFIFO(mode)) return "a named pipe";
    if (S_ISCHR(mode)) return "a character device";
    if (S_ISBLK(mode)) return "a block device";
    if (S_ISSOCK(mode)) return "a socket";
    return "not a regular file";
}

// Opens `path`, checks that it is a regular file that starts with GGUF's magic, and maps it
// whole. The descriptor is closed on return: the mapping does not need it.
FileMapping map_gguf_file(const std::string & path) {
    // A C string ends at the first NUL: "model.gguf\0junk" would open model.gguf.
    if (path.find('\0') != std::string::npos) {
        throw Error(Error::Kind::invalid_argument, "the model path holds a NUL byte: " + path.substr(0, path.find('\0')) + "\\0...");
    }
    // O_NONBLOCK: opening a named pipe for reading would otherwise wait for a writer forever.
    // It changes nothing for a regular file, the only kind accepted below.
    const FileDescriptor fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
    if (!fd.is_open()) {
        throw Error(Error::Kind::file_not_found, path + ": cannot open: " + std::strerror(errno));
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) {
        throw Error(Error::Kind::file_not_found, path + ": cannot stat: " + std::strerror(errno));
    }
    if (!S_ISREG(st.st_mode)) {
        throw Error(Error::Kind::file_not_found, path + ": " + describe_file_type(st.st_mode) + ", not a regular file");
    }
    const auto file_size = static_cast<size_t>(st.st_size);

    char magic[4] = {0, 0, 0, 0};
    if (file_size < 4 || ::pread(fd.get(), magic, 4, 0) != 4) {
        throw invalid_file_error(path, "file too short to be a GGUF file (" + std::to_string(file_size) + " bytes)");
    }
    if (const std::string problem = describe_magic(magic); !problem.empty()) {
        throw invalid_file_error(path, problem);
    }
    return FileMapping(path, fd.get(), file_size);
}

}  // namespace

[[noreturn]] void GgufFile::fail(const std::string & what) const { throw invalid_file_error(path_, what); }

GgufFile::GgufFile(const std::string & path) : path_(path) {
    install_ggml_log();
    mapping_ = map_gguf_file(path);
    advise_huge_pages(mapping_);
    const size_t file_size = mapping_.size();

    // Our own linear pass first: ggml's parse is quadratic in the key and tensor counts and
    // takes any bytes for a string (see gguf_header.h).
    check_gguf_header(path_, mapping_.data(), file_size);

    // Parse the metadata from the mapping (no second read of the file). With ctx == nullptr
    // ggml creates no tensors: we create our own after checking them against the hparams.
    clear_last_ggml_error();
    gguf_init_params params{/*no_alloc=*/true, /*ctx=*/nullptr};
    gguf_.reset(gguf_init_from_buffer(mapping_.data(), file_size, params));
    if (!gguf_) {
        const std::string reason = last_ggml_error();
        fail("malformed GGUF file" + (reason.empty() ? std::string() : " (" + reason + ")"));
    }

    const size_t data_offset = gguf_get_data_offset(gguf_.get());
    const int64_t n_tensors = gguf_get_n_tensors(gguf_.get());
    tensors_.reserve(static_cast<size_t>(n_tensors));
    for (int64_t i = 0; i < n_tensors; ++i) {
        GgufTensorInfo info;
        info.name = gguf_get_tensor_name(gguf_.get(), i);
        info.type = gguf_get_tensor_type(gguf_.get(), i);
        const int64_t * ne = gguf_get_tensor_ne(gguf_.get(), i);
        info.n_dims = 1;
        for (int d = 0; d < GGML_MAX_DIMS; ++d) {
            info.ne[d] = ne[d];
            if (ne[d] != 1) info.n_dims = d + 1;
        }
        info.file_offset = data_offset + gguf_get_tensor_offset(gguf_.get(), i);
        info.n_bytes = gguf_get_tensor_size(gguf_.get(), i);
        if (info.file_offset > file_size || info.n_bytes > file_size - info.file_offset) {
            fail("tensor '" + info.name + "' lies outside the file (truncated file? it needs " +
                 std::to_string(info.file_offset + info.n_bytes) + " bytes, the file has " +
                 std::to_string(file_size) + ")");
        }
        tensor_index_.emplace(info.name, tensors_.size());
        tensors_.push_back(std::move(info));
    }
}

void GgufFile::release_pages(size_t offset, size_t n_bytes) const {
    const auto * begin = reinterpret_cast<const char *>(mapping_.data() + offset);
    release_mapped_pages(begin, begin + n_bytes);
}

int64_t GgufFile::key_id(const std::string & key) const { return gguf_find_key(gguf_.get(), key.c_str()); }

bool GgufFile::has_key(const std::string & key) const { return key_id(key) >= 0; }

std::optional<int64_t> GgufFile::find_int(const std::string & key) const {
    const int64_t id = key_id(key);
    if (id < 0) return std::nullopt;
    const gguf_type type = gguf_get_kv_type(gguf_.get(), id);
    const gguf_context * g = gguf_.get();
    switch (type) {
        case GGUF_TYPE_UINT8: return gguf_get_val_u8(g, id);
        case GGUF_TYPE_INT8: return gguf_get_val_i8(g, id);
        case GGUF_TYPE_UINT16: return gguf_get_val_u16(g, id);
        case GGUF_TYPE_INT16: return gguf_get_val_i16(g, id);
        case GGUF_TYPE_UINT32: return gguf_get_val_u32(g, id);
        case GGUF_TYPE_INT32: return gguf_get_val_i32(g, id);
        case GGUF_TYPE_INT64: return gguf_get_val_i64(g, id);
        case GGUF_TYPE_UINT64: {
            const uint64_t v = gguf_get_val_u64(g, id);
            if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
                fail("metadata '" + key + "' is out of range");
            }
            return static_cast<int64_t>(v);
        }
        default:
            fail("metadata '" + key + "' should be an integer, it is " + gguf_type_name(type));
    }
}

int64_t GgufFile::get_int(const std::string & key) const {
    if (auto v = find_int(key)) return *v;
    fail("missing metadata '" + key + "'");
}

std::optional<float> GgufFile::find_float(const std::string & key) const {
    const int64_t id = key_id(key);
    if (id < 0) return std::nullopt;
    const gguf_type type = gguf_get_kv_type(gguf_.get(), id);
    if (type == GGUF_TYPE_FLOAT32) return gguf_get_val_f32(gguf_.get(), id);
    if (type == GGUF_TYPE_FLOAT64) return static_cast<float>(gguf_get_val_f64(gguf_.get(), id));
    fail("metadata '" + key + "' should be a float, it is " + gguf_type_name(type));
}

std::optional<std::string> GgufFile::find_string(const std::string & key) const {
    const int64_t id = key_id(key);
    if (id < 0) return std::nullopt;
    const gguf_type type = gguf_get_kv_type(gguf_.get(), id);
    if (type != GGUF_TYPE_STRING) {
        fail("metadata '" + key + "' should be a string, it is " + gguf_type_name(type));
    }
    return std::string(gguf_get_val_str(gguf_.get(), id));
}

std::vector<std::string> GgufFile::get_string_array(const std::string & key) const {
    const int64_t id = key_id(key);
    if (id < 0) fail("missing metadata '" + key + "'");
    if (gguf_get_kv_type(gguf_.get(), id) != GGUF_TYPE_ARRAY ||
        gguf_get_arr_type(gguf_.get(), id) != GGUF_TYPE_STRING) {
        fail("metadata '" + key + "' should be an array of strings");
    }
    const size_t n = gguf_get_arr_n(gguf_.get(), id);
    std::vector<std::string> out;
    out.reserve(n);
    for (size_t i = 0; i < n; ++i) {
        out.emplace_back(gguf_get_arr_str(gguf_.get(), id, i));
    }
    return out;
}

std::vector<int32_t> GgufFile::get_int_array(const std::string & key) const {
    const int64_t id = key_id(key);
    if (id < 0) fail("missing metadata '" + key + "'");
    if (gguf_get_kv_type(gguf_.get(), id) != GGUF_TYPE_ARRAY) {
        fail("metadata '" + key + "' should be an array of integers");
    }
    const gguf_type type = gguf_get_arr_type(gguf_.get(), id);
    const size_t n = gguf_get_arr_n(gguf_.get(), id);
    // gguf_get_arr_data aborts on an array of strings: only ask for the data of integers.
    if (!is_integer(type)) {
        fail("metadata '" + key + "' should be an array of integers, it holds " + gguf_type_name(type));
    }
    const void * data = gguf_get_arr_data(gguf_.get(), id);
    std::vector<int32_t> out(n);
    auto copy = [&](auto * typed) {
        for (size_t i = 0; i < n; ++i) {
            const int64_t v = static_cast<int64_t>(typed[i]);
            if (v < std::numeric_limits<int32_t>::min() || v > std::numeric_limits<int32_t>::max()) {
                fail("metadata '" + key + "' holds a value out of range");
            }
            out[i] = static_cast<int32_t>(v);
        }
    };
    switch (type) {
        case GGUF_TYPE_INT32: copy(static_cast<const int32_t *>(data)); break;
        case GGUF_TYPE_UINT32: copy(static_cast<const uint32_t *>(data)); break;
        case GGUF_TYPE_INT8: copy(static_cast<const int8_t *>(data)); break;
        case GGUF_TYPE_UINT8: copy(static_cast<const uint8_t *>(data)); break;
        case GGUF_TYPE_INT16: copy(static_cast<const int16_t *>(data)); break;
        case GGUF_TYPE_UINT16: copy(static_cast<const uint16_t *>(data)); break;
        case GGUF_TYPE_INT64: copy(static_cast<const int64_t *>(data)); break;
        case GGUF_TYPE_UINT64: copy(static_cast<const uint64_t *>(data)); break;  // > INT64_MAX wraps negative: refused
        default:
            fail("metadata '" + key + "' should be an array of integers, it holds " + gguf_type_name(type));
    }
    return out;
}

std::vector<std::pair<std::string, GgufScalar>> GgufFile::scalar_metadata() const {
    std::vector<std::pair<std::string, GgufScalar>> out;
    const gguf_context * g = gguf_.get();
    for (int64_t id = 0; id < gguf_get_n_kv(g); ++id) {
        const std::string key = gguf_get_key(g, id);
        const gguf_type type = gguf_get_kv_type(g, id);
        if (type == GGUF_TYPE_UINT64) {
            out.emplace_back(key, gguf_get_val_u64(g, id));
        } else if (is_integer(type)) {
            out.emplace_back(key, *find_int(key));
        } else if (type == GGUF_TYPE_FLOAT32 || type == GGUF_TYPE_FLOAT64) {
            out.emplace_back(key, static_cast<double>(*find_float(key)));
        } else if (type == GGUF_TYPE_BOOL) {
            out.emplace_back(key, gguf_get_val_bool(g, id));
        } else if (type == GGUF_TYPE_STRING) {
            out.emplace_back(key, std::string(gguf_get_val_str(g, id)));
        }
    }
    return out;
}

const GgufTensorInfo * GgufFile::find_tensor(const std::string & name) const {
    const auto it = tensor_index_.find(name);
    return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

}  // namespace gptj
