#include "gptj/tokenizer/vocab.h"

#include <algorithm>
#include <array>
#include <mutex>
#include <shared_mutex>
#include <unordered_map>

#include "gptj/error.h"
#include "gptj/tokenizer/bpe.h"
#include "gptj/tokenizer/pretokenizer.h"
#include "gptj/tokenizer/unicode.h"

namespace gptj {
namespace {

// Pieces longer than this are encoded every time rather than cached (Hugging Face tokenizers
// uses the same bound): they are rare, and one 100 kB piece must not pin 100 kB of cache.
constexpr size_t kMaxCachedPieceBytes = 256;
// Enough for the distinct words of a large corpus; once full, new pieces are not cached, so the
// memory stays bounded (~10 MB) in a long-running process.
constexpr size_t kMaxCachedPieces = 1 << 17;

// The inverse of GPT-2's byte-to-unicode alphabet.
class ByteAlphabet {
public:
    ByteAlphabet() {
        byte_of_.fill(-1);
        for (int b = 0; b < 256; ++b) byte_of_[unicode::byte_to_code_point(static_cast<uint8_t>(b))] = b;
    }
    // The bytes `token` stands for, or false if a character is not in the alphabet.
    bool to_bytes(const std::string & token, std::string & bytes) const {
        bytes.clear();
        for (size_t pos = 0; pos < token.size();) {
            const unicode::Utf8Char c = unicode::decode_utf8(token, pos);
            if (c.code_point >= byte_of_.size() || byte_of_[c.code_point] < 0) return false;
            bytes += static_cast<char>(byte_of_[c.code_point]);
            pos += c.length;
        }
        return true;
    }

private:
    std::array<int16_t, 0x144> byte_of_;  // the alphabet's largest code point is U+0143
};

// Finds the strings of added tokens in text: leftmost match first, the longest one at a
// position, like the Aho-Corasick (LeftmostLongest) search of Hugging Face tokenizers.
class AddedTokenMatcher {
public:
    void add(const std::string & content, int32_t id) {
        if (content.empty()) return;
        ids_.emplace(content, id);  // a repeated content keeps its first id
        first_bytes_[static_cast<uint8_t>(content[0])] = true;
        if (std::find(lengths_.begin(), lengths_.end(), content.size()) == lengths_.end()) {
            lengths_.push_back(content.size());
            std::sort(lengths_.rbegin(), lengths_.rend());
        }
    }
    bool empty() const { return ids_.empty(); }

    struct Match {
        size_t pos;
        size_t length;
        int32_t id;
    };
    // The first match at or after `from`, or pos == npos.
    Match find(std::string_view text, size_t from) const {
        for (size_t pos = from; pos < text.size(); ++pos) {
            if (!first_bytes_[static_cast<uint8_t>(text[pos])]) continue;
            for (size_t length : lengths_) {  // longest first
                if (length > text.size() - pos) continue;
                auto it = ids_.find(std::string(text.substr(pos, length)));
                if (it != ids_.end()) return {pos, length, it->second};
            }
        }
        return {std::string_view::npos, 0, -1};
    }

private:
    std::unordered_map<std::string, int32_t> ids_;
    std::array<bool, 256> first_bytes_{};
    std::vector<size_t> lengths_;  // distinct content lengths, descending
};

}  // namespace

struct Vocab::Impl {
    std::vector<std::string> tokens;
    std::vector<TokenType> token_types;
    std::vector<std::string> token_bytes;  // what decode emits for each id
    std::vector<bool> spelled_in_alphabet; // a BPE token (not added, not unused) in the byte alphabet
    std::unordered_map<std::string, int32_t> ids;  // token string -> id (first id of a repeated string)
    std::array<int32_t, 256> byte_ids;             // the single-byte token of each byte, -1 if none
    BpeMerges merges;
    AddedTokenMatcher added_tokens;
    int32_t bos_id = -1;
    int32_t eos_id = -1;

    // Pieces already encoded. encode() is const and may run on several threads at once.
    mutable std::shared_mutex cache_mutex;
    mutable std::unordered_map<std::string, std::vector<int32_t>> cache;

    void encode_piece(std::string_view piece, std::vector<int32_t> & out, std::vector<int32_t> & symbols,
                      BpeMerges::Workspace & workspace) const;
    void encode_plain(std::string_view text, std::vector<int32_t> & out) const;
    void derive_merges_from_ids();
};

namespace {

TokenType checked_token_type(int32_t value, int32_t id) {
    if (value < static_cast<int32_t>(TokenType::undefined) || value > static_cast<int32_t>(TokenType::byte)) {
        throw Error(Error::Kind::invalid_file,
                    "token " + std::to_string(id) + " has token type " + std::to_string(value) + ", not 0..6");
    }
    return static_cast<TokenType>(value);
}

bool is_added(TokenType type) { return type == TokenType::control || type == TokenType::user_defined; }

void check_id(int32_t id, size_t n_tokens) {
    if (id < 0 || static_cast<size_t>(id) >= n_tokens) {
        throw Error(Error::Kind::invalid_argument, "token id " + std::to_string(id) +
                                                       " is outside the vocabulary of " +
                                                       std::to_string(n_tokens) + " tokens");
    }
}

}  // namespace

Vocab::Vocab(VocabData data) : impl_(std::make_unique<Impl>()) {
    Impl & v = *impl_;
    const int32_t n_tokens = static_cast<int32_t>(data.tokens.size());
    if (!data.token_types.empty() && data.token_types.size() != data.tokens.size()) {
        throw Error(Error::Kind::invalid_file, "the vocabulary has " + std::to_string(data.tokens.size()) +
                                                   " tokens but " + std::to_string(data.token_types.size()) +
                                                   " token types");
    }
    for (const auto & [role, id] : {std::pair{"bos", data.bos_id}, std::pair{"eos", data.eos_id}}) {
        if (id < -1 || id >= n_tokens) {
            throw Error(Error::Kind::invalid_file, std::string("the ") + role + " token id " + std::to_string(id) +
                                                       " is outside the vocabulary of " +
                                                       std::to_string(n_tokens) + " tokens");
        }
    }
    v.bos_id = data.bos_id;
    v.eos_id = data.eos_id;
    v.tokens = std::move(data.tokens);

    const ByteAlphabet alphabet;
    v.token_types.reserve(n_tokens);
    v.token_bytes.resize(n_tokens);
    v.spelled_in_alphabet.assign(n_tokens, false);
    v.byte_ids.fill(-1);
    for (int32_t id = 0; id < n_tokens; ++id) {
        const std::string & token = v.tokens[id];
        const TokenType type =
            data.token_types.empty() ? TokenType::normal : checked_token_type(data.token_types[id], id);
        v.token_types.push_back(type);
        v.ids.emplace(token, id);
        if (is_added(type)) v.added_tokens.add(token, id);
        // Unused rows pad the embedding; they stand for no text.
        if (type == TokenType::unused) continue;
        // As tokenizers' ByteLevel decoder: a token spelled in the byte alphabet stands for those
        // bytes; any other token (an added token with a space, say) for its own UTF-8.
        std::string & bytes = v.token_bytes[id];
        const bool in_alphabet = alphabet.to_bytes(token, bytes);
        if (!in_alphabet) bytes = token;
        if (in_alphabet && !is_added(type)) {
            v.spelled_in_alphabet[id] = true;
            if (bytes.size() == 1 && v.byte_ids[static_cast<uint8_t>(bytes[0])] < 0) {
                v.byte_ids[static_cast<uint8_t>(bytes[0])] = id;
            }
        }
    }

    if (data.merges.empty()) {
        v.derive_merges_from_ids();
        return;
    }
    for (size_t rank = 0; rank < data.merges.size(); ++rank) {
        const std::string & merge = data.merges[rank];
        const size_t space = merge.find(' ');
        if (space == std::string::npos || space == 0 || space + 1 == merge.size() ||
            merge.find(' ', space + 1) != std::string::npos) {
            throw Error(Error::Kind::invalid_file,
                        "merge " + std::to_string(rank) + " ('" + merge + "') is not two tokens separated by a space");
        }
        const std::string left = merge.substr(0, space), right = merge.substr(space + 1);
        const auto find_id = [&](const std::string & token) {
            auto it = v.ids.find(token);
            if (it == v.ids.end()) {
                throw Error(Error::Kind::invalid_file, "merge " + std::to_string(rank) + " ('" + merge +
                                                           "') needs the token '" + token +
                                                           "', which is not in the vocabulary");
            }
            return it->second;
        };
        const int32_t left_id = find_id(left), right_id = find_id(right);  // in order, for the message
        v.merges.add(left_id, right_id, find_id(left + right));
    }
}

Vocab::~Vocab() = default;

// Legacy GGML files carry GPT-2's vocabulary without its merges. GPT-2's ids follow the merge
// order (token 256 + r is the result of merge r), so the merges can be recovered from the ids:
// in id order, each multi-character token is split where BPE with the merges found so far splits
// it, which is where training split it, since training applied the same merges in the same order.
// This reproduces GPT-2's merges.txt exactly (tests/test_tokenizer_merges.py). For a vocabulary
// where BPE does not end in two pieces, the split into two earlier tokens with the lowest larger
// id is taken; a token with no such split stays unreachable by BPE.
void Vocab::Impl::derive_merges_from_ids() {
    constexpr size_t kMaxSplitSearchBytes = 1024;
    BpeMerges::Workspace workspace;
    std::vector<int32_t> symbols;
    const int32_t n_tokens = static_cast<int32_t>(tokens.size());
    for (int32_t id = 0; id < n_tokens; ++id) {
        const std::string & bytes = token_bytes[id];
        if (!spelled_in_alphabet[id] || bytes.size() < 2) continue;
        symbols.clear();
        for (char byte : bytes) symbols.push_back(byte_ids[static_cast<uint8_t>(byte)]);
        if (std::find(symbols.begin(), symbols.end(), -1) != symbols.end()) continue;
        merges.apply(symbols, workspace);
        if (symbols.size() == 2) {
            merges.add(symbols[0], symbols[1], id);
            continue;
        }
        // Fallback for vocabularies not trained like GPT-2's (see above). It costs the square of
        // the token's length (a hash of each split's halves): a crafted file's megabyte-long
        // token would take hours, so tokens far longer than GPT-2's longest (128 bytes) stay
        // unreachable by BPE instead.
        if (tokens[id].size() > kMaxSplitSearchBytes) continue;
        int32_t best_left = -1, best_right = -1;
        for (size_t split = 1; split < tokens[id].size(); ++split) {
            auto left = ids.find(tokens[id].substr(0, split));
            auto right = ids.find(tokens[id].substr(split));
            if (left == ids.end() || right == ids.end() || left->second >= id || right->second >= id) continue;
            if (best_left < 0 || std::max(left->second, right->second) < std::max(best_left, best_right)) {
                best_left = left->second;
                best_right = right->second;
            }
        }
        if (best_left >= 0) merges.add(best_left, best_right, id);
    }
}

void Vocab::Impl::encode_piece(std::string_view piece, std::vector<int32_t> & out, std::vector<int32_t> & symbols,
                               BpeMerges::Workspace & workspace) const {
    const bool cacheable = piece.size() <= kMaxCachedPieceBytes;
    std::string key;
    if (cacheable) {
        key.assign(piece);
        std::shared_lock lock(cache_mutex);
        auto it = cache.find(key);
        if (it != cache.end()) {
            out.insert(out.end(), it->second.begin(), it->second.end());
            return;
        }
    }
    symbols.clear();
    for (char byte : piece) {
        const int32_t id = byte_ids[static_cast<uint8_t>(byte)];
        if (id < 0) {
            throw Error(Error::Kind::invalid_argument,
                        "the vocabulary has no token for the byte " + std::to_string(static_cast<uint8_t>(byte)));
        }
        symbols.push_back(id);
    }
    merges.apply(symbols, workspace);
    out.insert(out.end(), symbols.begin(), symbols.end());
    if (cacheable) {
        std::unique_lock lock(cache_mutex);
        if (cache.size() < kMaxCachedPieces) cache.emplace(std::move(key), symbols);
    }
}

void Vocab::Impl::encode_plain(std::string_view text, std::vector<int32_t> & out) const {
    std::vector<std::string_view> pieces;
    split_gpt2_pieces(text, pieces);
    std::vector<int32_t> symbols;
    BpeMerges::Workspace workspace;
    for (std::string_view piece : pieces) encode_piece(piece, out, symbols, workspace);
}

std::vector<int32_t> Vocab::encode(std::string_view text, bool parse_special) const {
    std::vector<int32_t> out;
    out.reserve(text.size() / 3);
    if (!parse_special || impl_->added_tokens.empty()) {
        impl_->encode_plain(text, out);
        return out;
    }
    // The text between added tokens is encoded on its own, so no piece spans an added token.
    size_t pos = 0;
    while (pos < text.size()) {
        const AddedTokenMatcher::Match match = impl_->added_tokens.find(text, pos);
        const size_t end = match.pos == std::string_view::npos ? text.size() : match.pos;
        impl_->encode_plain(text.substr(pos, end - pos), out);
        if (match.pos == std::string_view::npos) break;
        out.push_back(match.id);
        pos = match.pos + match.length;
    }
    return out;
}

std::string Vocab::decode(const std::vector<int32_t> & ids) const {
    std::string out;
    for (int32_t id : ids) {
        check_id(id, impl_->tokens.size());
        out += impl_->token_bytes[id];
    }
    return out;
}

std::string Vocab::token_bytes(int32_t id) const {
    check_id(id, impl_->tokens.size());
    return impl_->token_bytes[id];
}

int32_t Vocab::n_tokens() const { return static_cast<int32_t>(impl_->tokens.size()); }
int32_t Vocab::bos_id() const { return impl_->bos_id; }
int32_t Vocab::eos_id() const { return impl_->eos_id; }

TokenType Vocab::token_type(int32_t id) const {
    check_id(id, impl_->tokens.size());
    return impl_->token_types[id];
}

}  // namespace gptj
