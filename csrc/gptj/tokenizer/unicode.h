// UTF-8 decoding, the code point classes of GPT-2's pre-tokenizer regex, and GPT-2's
// byte-to-unicode alphabet. Pure C++17; the class tables are generated (unicode_tables.inc).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace gptj::unicode {

// The classes GPT-2's regex tells apart: \p{L}, \p{N}, \s and everything else
// (combining marks, punctuation, symbols, unassigned code points, invalid UTF-8 bytes).
enum class CharClass : uint8_t { other, letter, number, whitespace };

CharClass char_class(uint32_t code_point);

// One decoded character. An invalid or truncated UTF-8 sequence decodes as its first byte alone,
// with code_point = kInvalidCodePoint, so that every byte of any input still reaches the BPE.
struct Utf8Char {
    uint32_t code_point;
    uint32_t length;  // in bytes, 1..4
};
constexpr uint32_t kInvalidCodePoint = 0x110000;

Utf8Char decode_utf8(std::string_view text, size_t pos);

// GPT-2 spells every byte as a printable code point so that vocab.json and merges.txt are text:
// printable Latin-1 bytes stand for themselves, the others are moved to U+0100 upwards.
uint32_t byte_to_code_point(uint8_t byte);

}  // namespace gptj::unicode
