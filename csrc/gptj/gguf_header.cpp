#include "gptj/gguf_header.h"

#include <cstring>
#include <limits>
#include <string_view>
#include <unordered_set>

#include "ggml.h"
#include "gguf.h"
#include "gptj/error.h"

namespace gptj {
namespace {

// ggml's own limits (GGUF_MAX_STRING_LENGTH, GGUF_MAX_ARRAY_ELEMENTS in gguf.cpp, not exported).
constexpr uint64_t kMaxStringBytes = uint64_t{1} << 30;
constexpr uint64_t kMaxArrayElements = uint64_t{1} << 30;

// GGUF's scalar value types and their sizes in bytes (0: a string, or no scalar).
size_t scalar_size(uint32_t type) {
    switch (type) {
        case GGUF_TYPE_UINT8: case GGUF_TYPE_INT8: case GGUF_TYPE_BOOL: return 1;
        case GGUF_TYPE_UINT16: case GGUF_TYPE_INT16: return 2;
        case GGUF_TYPE_UINT32: case GGUF_TYPE_INT32: case GGUF_TYPE_FLOAT32: return 4;
        case GGUF_TYPE_UINT64: case GGUF_TYPE_INT64: case GGUF_TYPE_FLOAT64: return 8;
        default: return 0;
    }
}

// Printable form of a key or name for a message: bytes that are not UTF-8 or not printable
// ASCII become \xNN, and a long one is cut.
std::string printable(std::string_view text) {
    std::string out;
    const size_t shown = std::min<size_t>(text.size(), 80);
    for (size_t i = 0; i < shown; ++i) {
        const auto c = static_cast<unsigned char>(text[i]);
        if (c >= 0x20 && c < 0x7f && c != '\\') {
            out += static_cast<char>(c);
        } else {
            static const char hex[] = "0123456789abcdef";
            out += "\\x";
            out += hex[c >> 4];
            out += hex[c & 15];
        }
    }
    if (shown < text.size()) out += "...";
    return out;
}

// Reads the header front to back; every read is checked against the end of the file.
class HeaderReader {
public:
    HeaderReader(const std::string & path, const uint8_t * data, size_t size) : path_(path), data_(data), size_(size) {}

    [[noreturn]] void fail(const std::string & what) const { throw invalid_file_error(path_, "malformed GGUF file: " + what); }

    size_t position() const { return position_; }
    size_t remaining() const { return size_ - position_; }

    template <typename T>
    T read(const char * what) {
        if (remaining() < sizeof(T)) fail(std::string("truncated header: the file ends inside ") + what);
        T value;
        std::memcpy(&value, data_ + position_, sizeof(T));  // the header is not aligned
        position_ += sizeof(T);
        return value;
    }

    // A GGUF string (u64 length, then bytes), returned as a view into the file. describe() names
    // it for a message; it is called only on failure (the token list has 50,400 strings).
    template <typename Describe>
    std::string_view read_string(const Describe & describe) {
        if (remaining() < sizeof(uint64_t)) fail("truncated header: the file ends inside " + describe());
        const uint64_t n = read<uint64_t>("a string length");
        if (n > kMaxStringBytes) {
            fail(describe() + " is " + std::to_string(n) + " bytes long, more than ggml reads (" +
                 std::to_string(kMaxStringBytes) + ")");
        }
        if (n > remaining()) {
            fail("truncated header: " + describe() + " is " + std::to_string(n) + " bytes long, past the end of the file");
        }
        const std::string_view text(reinterpret_cast<const char *>(data_ + position_), static_cast<size_t>(n));
        position_ += static_cast<size_t>(n);
        return text;
    }

    void skip(uint64_t n_bytes, const std::string & what) {
        if (n_bytes > remaining()) fail("truncated header: the file ends inside " + what);
        position_ += static_cast<size_t>(n_bytes);
    }

private:
    const std::string & path_;
    const uint8_t * data_;
    size_t size_;
    size_t position_ = 0;
};

void check_utf8(const HeaderReader & reader, std::string_view text, const std::string & what) {
    if (!is_valid_utf8(text.data(), text.size())) reader.fail(what + " is not valid UTF-8");
}

}  // namespace

bool is_valid_utf8(const char * text, size_t n_bytes) {
    const auto * s = reinterpret_cast<const unsigned char *>(text);
    size_t i = 0;
    while (i < n_bytes) {
        const unsigned char c = s[i];
        if (c < 0x80) {
            ++i;
            continue;
        }
        size_t length;
        uint32_t code_point, minimum;
        if ((c & 0xE0) == 0xC0) {
            length = 2, code_point = c & 0x1F, minimum = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            length = 3, code_point = c & 0x0F, minimum = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            length = 4, code_point = c & 0x07, minimum = 0x10000;
        } else {
            return false;  // a continuation byte first, or 0xF8..0xFF
        }
        if (n_bytes - i < length) return false;
        for (size_t k = 1; k < length; ++k) {
            if ((s[i + k] & 0xC0) != 0x80) return false;
            code_point = (code_point << 6) | (s[i + k] & 0x3F);
        }
        if (code_point < minimum || code_point > 0x10FFFF || (code_point >= 0xD800 && code_point <= 0xDFFF)) return false;
        i += length;
    }
    return true;
}

void check_gguf_header(const std::string & path, const uint8_t * data, size_t size) {
    using namespace gguf_limits;
    HeaderReader reader(path, data, size);

    char magic[4];
    for (char & c : magic) c = reader.read<char>("the magic");
    if (std::memcmp(magic, GGUF_MAGIC, 4) != 0) reader.fail("not a GGUF file (bad magic)");

    const auto version = reader.read<uint32_t>("the version");
    if (version != 0 && (version & 0xFFFF) == 0) {
        reader.fail("GGUF version " + std::to_string(version) + " looks byte-swapped: a big-endian file?");
    }
    if (version < 2 || version > GGUF_VERSION) {
        reader.fail("GGUF version " + std::to_string(version) + " is not supported (2 to " +
                    std::to_string(GGUF_VERSION) + ")");
    }

    const auto n_tensors = reader.read<int64_t>("the tensor count");
    const auto n_kv = reader.read<int64_t>("the metadata count");
    // The smallest key/value takes 8 + 1 + 4 + 1 bytes and the smallest tensor entry 8 + 1 + 4 + 4 + 8;
    // a count beyond what the rest of the file can hold is refused before anything is read.
    const auto room = static_cast<int64_t>(std::min<size_t>(reader.remaining(), std::numeric_limits<int64_t>::max()));
    if (n_kv < 0 || n_kv > room / 14) {
        reader.fail("the header says " + std::to_string(n_kv) + " metadata keys, more than the file's " +
                    std::to_string(size) + " bytes can hold");
    }
    if (n_kv > kMaxKeys) {
        reader.fail("the file has " + std::to_string(n_kv) + " metadata keys, more than the " + std::to_string(kMaxKeys) +
                    " a model file may have");
    }
    if (n_tensors < 0 || n_tensors > room / 25) {
        reader.fail("the header says " + std::to_string(n_tensors) + " tensors, more than the file's " +
                    std::to_string(size) + " bytes can hold");
    }
    if (n_tensors > kMaxTensors) {
        reader.fail("the file has " + std::to_string(n_tensors) + " tensors, more than the " + std::to_string(kMaxTensors) +
                    " a GPT-J model may have");
    }

    std::unordered_set<std::string_view> keys;
    keys.reserve(static_cast<size_t>(n_kv));
    uint32_t alignment = GGUF_DEFAULT_ALIGNMENT;
    for (int64_t i = 0; i < n_kv; ++i) {
        const std::string_view key = reader.read_string([&] { return "metadata key " + std::to_string(i); });
        if (key.empty()) reader.fail("metadata key " + std::to_string(i) + " is empty");
        if (key.size() > kMaxKeyBytes) {
            reader.fail("metadata key " + std::to_string(i) + " ('" + printable(key) + "') is " +
                        std::to_string(key.size()) + " bytes long, more than " + std::to_string(kMaxKeyBytes));
        }
        check_utf8(reader, key, "metadata key " + std::to_string(i) + " ('" + printable(key) + "')");
        // ggml looks keys up as C strings: "a\0b" would answer for "a".
        if (std::memchr(key.data(), '\0', key.size()) != nullptr) {
            reader.fail("metadata key " + std::to_string(i) + " ('" + printable(key) + "') holds a NUL byte");
        }
        const std::string name = "metadata '" + std::string(key) + "'";
        if (!keys.insert(key).second) reader.fail("duplicate metadata key '" + std::string(key) + "'");

        const auto type = reader.read<uint32_t>(("the type of " + name).c_str());
        if (type == GGUF_TYPE_ARRAY) {
            const auto element_type = reader.read<uint32_t>(("the element type of " + name).c_str());
            const auto n = reader.read<uint64_t>(("the length of " + name).c_str());
            if (n > kMaxArrayElements) {
                reader.fail(name + " holds " + std::to_string(n) + " elements, more than ggml reads (" +
                            std::to_string(kMaxArrayElements) + ")");
            }
            if (element_type == GGUF_TYPE_STRING) {
                if (n > reader.remaining() / 8) {
                    reader.fail(name + " says it holds " + std::to_string(n) + " strings, more than the file can hold");
                }
                for (uint64_t k = 0; k < n; ++k) {
                    const auto element = [&] { return name + "[" + std::to_string(k) + "]"; };
                    const std::string_view text = reader.read_string(element);
                    if (!is_valid_utf8(text.data(), text.size())) reader.fail(element() + " is not valid UTF-8");
                }
            } else if (const size_t element_size = scalar_size(element_type); element_size > 0) {
                if (n > reader.remaining() / element_size) {
                    reader.fail(name + " says it holds " + std::to_string(n) + " values, more than the file can hold");
                }
                reader.skip(n * element_size, name);
            } else {
                reader.fail(name + " is an array of unknown type " + std::to_string(element_type));
            }
            if (key == GGUF_KEY_GENERAL_ALIGNMENT) reader.fail(name + " must be a uint32, not an array");
        } else if (type == GGUF_TYPE_STRING) {
            check_utf8(reader, reader.read_string([&] { return name; }), name);
            if (key == GGUF_KEY_GENERAL_ALIGNMENT) reader.fail(name + " must be a uint32, not a string");
        } else if (const size_t value_size = scalar_size(type); value_size > 0) {
            if (key == GGUF_KEY_GENERAL_ALIGNMENT) {
                if (type != GGUF_TYPE_UINT32) reader.fail(name + " must be a uint32");
                alignment = reader.read<uint32_t>(name.c_str());
                // The GGUF specification asks for a multiple of 8; ggml for a power of 2.
                if (alignment < 8 || (alignment & (alignment - 1)) != 0) {
                    reader.fail(name + " = " + std::to_string(alignment) + " is not a power of 2 of at least 8");
                }
            } else {
                reader.skip(value_size, name);
            }
        } else {
            reader.fail(name + " has unknown type " + std::to_string(type));
        }
    }

    std::unordered_set<std::string_view> names;
    names.reserve(static_cast<size_t>(n_tensors));
    uint64_t expected_offset = 0;  // tensors follow each other in the data section, each padded
    for (int64_t i = 0; i < n_tensors; ++i) {
        const std::string_view name_bytes = reader.read_string([&] { return "the name of tensor " + std::to_string(i); });
        if (name_bytes.empty()) reader.fail("tensor " + std::to_string(i) + " has an empty name");
        if (name_bytes.size() >= GGML_MAX_NAME) {
            reader.fail("tensor " + std::to_string(i) + "'s name ('" + printable(name_bytes) + "') is " +
                        std::to_string(name_bytes.size()) + " bytes long; ggml allows " + std::to_string(GGML_MAX_NAME - 1));
        }
        check_utf8(reader, name_bytes, "the name of tensor " + std::to_string(i) + " ('" + printable(name_bytes) + "')");
        if (std::memchr(name_bytes.data(), '\0', name_bytes.size()) != nullptr) {
            reader.fail("the name of tensor " + std::to_string(i) + " ('" + printable(name_bytes) + "') holds a NUL byte");
        }
        const std::string name = "tensor '" + std::string(name_bytes) + "'";
        if (!names.insert(name_bytes).second) reader.fail("duplicate " + name);

        const auto n_dims = reader.read<uint32_t>(("the dimension count of " + name).c_str());
        if (n_dims > GGML_MAX_DIMS) {
            reader.fail(name + " has " + std::to_string(n_dims) + " dimensions; ggml allows " + std::to_string(GGML_MAX_DIMS));
        }
        int64_t ne[GGML_MAX_DIMS] = {1, 1, 1, 1};
        for (uint32_t d = 0; d < n_dims; ++d) {
            ne[d] = reader.read<int64_t>(("the shape of " + name).c_str());
            if (ne[d] < 0) reader.fail(name + " has a negative dimension (" + std::to_string(ne[d]) + ")");
        }
        int64_t n_elements = 1;
        for (const int64_t n : ne) {
            if (n != 0 && n_elements > std::numeric_limits<int64_t>::max() / n) {
                reader.fail(name + " has more elements than a 64-bit count holds");
            }
            n_elements *= n;
        }

        const auto type = reader.read<int32_t>(("the type of " + name).c_str());
        if (type < 0 || type >= GGML_TYPE_COUNT || ggml_blck_size(static_cast<ggml_type>(type)) == 0) {
            reader.fail(name + " has unknown or removed ggml type " + std::to_string(type));
        }
        const auto ggml_t = static_cast<ggml_type>(type);
        const int64_t block = ggml_blck_size(ggml_t);
        if (ne[0] % block != 0) {
            reader.fail(name + " has rows of " + std::to_string(ne[0]) + " values, not a multiple of the " +
                        std::to_string(block) + " in a block of " + ggml_type_name(ggml_t));
        }
        const uint64_t n_blocks = static_cast<uint64_t>(n_elements / block);
        const uint64_t type_size = ggml_type_size(ggml_t);
        if (n_blocks > std::numeric_limits<uint64_t>::max() / type_size) {
            reader.fail(name + " is larger than memory can address");
        }
        const uint64_t n_bytes = n_blocks * type_size;
        if (n_bytes > size) {
            reader.fail(name + " needs " + std::to_string(n_bytes) + " bytes of data, more than the file's " +
                        std::to_string(size) + " (truncated file?)");
        }

        const auto offset = reader.read<uint64_t>(("the data offset of " + name).c_str());
        if (offset != expected_offset) {
            reader.fail(name + " has data offset " + std::to_string(offset) + ", expected " +
                        std::to_string(expected_offset) + " (tensors are stored in order, each padded to " +
                        std::to_string(alignment) + " bytes)");
        }
        expected_offset += (n_bytes + alignment - 1) / alignment * alignment;  // n_bytes <= size: no overflow
    }

    if (n_tensors > 0) {
        const uint64_t data_start = (reader.position() + alignment - 1) / alignment * alignment;
        if (data_start > size) reader.fail("truncated file: the tensor data would start past its end");
    }
}

}  // namespace gptj
