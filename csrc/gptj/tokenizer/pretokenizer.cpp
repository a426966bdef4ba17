#include "gptj/tokenizer/pretokenizer.h"

#include <cstddef>

#include "gptj/tokenizer/unicode.h"

namespace gptj {
namespace {

using unicode::CharClass;

struct Char {
    uint32_t code_point;
    uint32_t length;
    CharClass cls;
};

Char char_at(std::string_view text, size_t pos) {
    const unicode::Utf8Char c = unicode::decode_utf8(text, pos);
    return {c.code_point, c.length, unicode::char_class(c.code_point)};
}

// Length of the contraction ('s 't 're 've 'm 'll 'd; lower case only, as the pattern is
// case-sensitive) starting at `pos`, or 0.
size_t contraction_length(std::string_view text, size_t pos) {
    if (pos + 1 >= text.size() || text[pos] != '\'') return 0;
    const char c1 = text[pos + 1];
    if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') return 2;
    if (pos + 2 >= text.size()) return 0;
    const char c2 = text[pos + 2];
    if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) return 3;
    return 0;
}

}  // namespace

void split_gpt2_pieces(std::string_view text, std::vector<std::string_view> & pieces) {
    const size_t n = text.size();
    size_t start = 0;
    while (start < n) {
        const Char first = char_at(text, start);
        size_t end;
        if (const size_t contraction = contraction_length(text, start)) {
            end = start + contraction;
        } else {
            // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`: an optional ASCII space, then a run of
            // one class. The three classes are disjoint, so trying them in turn is one test.
            size_t run_start = start;
            Char run_char = first;
            if (first.code_point == ' ' && start + 1 < n) {
                run_start = start + 1;
                run_char = char_at(text, run_start);
            }
            if (run_char.cls != CharClass::whitespace) {
                end = run_start + run_char.length;
                while (end < n) {
                    const Char next = char_at(text, end);
                    if (next.cls != run_char.cls) break;
                    end += next.length;
                }
            } else {
                // `\s+(?!\S)|\s+`: a whitespace run; when a non-space follows, the run gives up its
                // last character (which then prefixes the next word as ` ?...`) unless that would
                // leave the run empty.
                size_t last_start = start;
                end = start + first.length;
                while (end < n) {
                    const Char next = char_at(text, end);
                    if (next.cls != CharClass::whitespace) break;
                    last_start = end;
                    end += next.length;
                }
                if (end < n && last_start > start) end = last_start;
            }
        }
        pieces.push_back(text.substr(start, end - start));
        start = end;
    }
}

}  // namespace gptj
