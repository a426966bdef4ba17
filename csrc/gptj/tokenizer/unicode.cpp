#include "gptj/tokenizer/unicode.h"

#include <algorithm>
#include <array>
#include <vector>

namespace gptj::unicode {
namespace {

struct CodePointRange {
    uint32_t first;
    uint32_t last;
};

#include "gptj/tokenizer/unicode_tables.inc"

constexpr uint32_t kCodePointCount = 0x110000;
constexpr uint32_t kBlockSize = 256;

// Two-stage lookup table (block index -> block of 256 classes), built once from the range tables:
// char_class runs for every character of every input, and a binary search over ~800 ranges
// costs several times more than two array reads.
class CharClassTable {
public:
    CharClassTable() {
        std::vector<CharClass> flat(kCodePointCount, CharClass::other);
        auto fill = [&](const auto & ranges, CharClass cls) {
            for (const CodePointRange & range : ranges) {
                for (uint32_t c = range.first; c <= range.last; ++c) flat[c] = cls;
            }
        };
        fill(kLetterRanges, CharClass::letter);
        fill(kNumberRanges, CharClass::number);
        fill(kWhitespaceRanges, CharClass::whitespace);

        for (uint32_t block = 0; block < kCodePointCount / kBlockSize; ++block) {
            const CharClass * begin = flat.data() + block * kBlockSize;
            size_t found = blocks_.size();
            for (size_t b = 0; b < blocks_.size(); ++b) {
                if (std::equal(begin, begin + kBlockSize, blocks_[b].begin())) {
                    found = b;
                    break;
                }
            }
            if (found == blocks_.size()) {
                blocks_.emplace_back();
                std::copy(begin, begin + kBlockSize, blocks_.back().begin());
            }
            block_index_[block] = static_cast<uint16_t>(found);
        }
    }

    CharClass operator()(uint32_t code_point) const {
        if (code_point >= kCodePointCount) return CharClass::other;
        return blocks_[block_index_[code_point / kBlockSize]][code_point % kBlockSize];
    }

private:
    std::array<uint16_t, kCodePointCount / kBlockSize> block_index_{};
    std::vector<std::array<CharClass, kBlockSize>> blocks_;
};

const CharClassTable & char_class_table() {
    static const CharClassTable table;  // immutable after construction; C++11 statics are thread-safe
    return table;
}

bool is_continuation(uint8_t byte) { return (byte & 0xC0) == 0x80; }

}  // namespace

CharClass char_class(uint32_t code_point) { return char_class_table()(code_point); }

Utf8Char decode_utf8(std::string_view text, size_t pos) {
    const auto byte = [&](size_t i) { return static_cast<uint8_t>(text[pos + i]); };
    const size_t available = text.size() - pos;
    const uint8_t lead = byte(0);
    if (lead < 0x80) return {lead, 1};
    const Utf8Char invalid{kInvalidCodePoint, 1};
    if (lead >= 0xC2 && lead <= 0xDF) {
        if (available < 2 || !is_continuation(byte(1))) return invalid;
        return {(lead & 0x1Fu) << 6 | (byte(1) & 0x3Fu), 2};
    }
    if (lead >= 0xE0 && lead <= 0xEF) {
        if (available < 3 || !is_continuation(byte(1)) || !is_continuation(byte(2))) return invalid;
        const uint32_t c = (lead & 0x0Fu) << 12 | (byte(1) & 0x3Fu) << 6 | (byte(2) & 0x3Fu);
        if (c < 0x800 || (c >= 0xD800 && c <= 0xDFFF)) return invalid;  // overlong or surrogate
        return {c, 3};
    }
    if (lead >= 0xF0 && lead <= 0xF4) {
        if (available < 4 || !is_continuation(byte(1)) || !is_continuation(byte(2)) || !is_continuation(byte(3))) {
            return invalid;
        }
        const uint32_t c =
            (lead & 0x07u) << 18 | (byte(1) & 0x3Fu) << 12 | (byte(2) & 0x3Fu) << 6 | (byte(3) & 0x3Fu);
        if (c < 0x10000 || c > 0x10FFFF) return invalid;
        return {c, 4};
    }
    return invalid;
}

namespace {

bool is_printable_byte(uint32_t b) { return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF); }

}  // namespace

uint32_t byte_to_code_point(uint8_t byte) {
    if (is_printable_byte(byte)) return byte;
    // The n-th non-printable byte (in byte order) becomes U+0100 + n.
    uint32_t n = 0;
    for (uint32_t b = 0; b < byte; ++b) n += is_printable_byte(b) ? 0 : 1;
    return 0x100 + n;
}

}  // namespace gptj::unicode
