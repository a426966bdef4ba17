// GPT-2's pre-tokenizer: splits text into the pieces that BPE then encodes one by one.
#pragma once

#include <string_view>
#include <vector>

namespace gptj {

// Appends to `pieces` the matches of GPT-2's pattern, in order; together they cover `text`:
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// with the alternatives tried in that order at each position (Oniguruma's semantics, as in
// Hugging Face tokenizers). Written by hand rather than with <regex>: std::regex knows neither
// \p{L} nor lookahead over Unicode, and a hand-written scanner is linear and allocation-free.
void split_gpt2_pieces(std::string_view text, std::vector<std::string_view> & pieces);

}  // namespace gptj
