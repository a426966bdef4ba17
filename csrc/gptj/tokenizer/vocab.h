// GPT-2 byte-level BPE vocabulary (GPT-J uses GPT-2's 50257 tokens plus 143 added ones).
//
// INTERFACE CONTRACT (model.cpp builds a Vocab from the GGUF tokenizer.ggml.* data and the
// bindings expose it): keep these signatures; add to them freely.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace gptj {

// GGUF tokenizer.ggml.token_type values (same numbering as llama.cpp).
enum class TokenType : int32_t {
    undefined = 0,
    normal = 1,
    unknown = 2,
    control = 3,       // e.g. <|endoftext|>
    user_defined = 4,  // added tokens such as <|extratoken_1|>
    unused = 5,        // padding rows of the embedding with no token
    byte = 6,
};

// What a GGUF (or a Hugging Face tokenizer folder) says about the vocabulary.
struct VocabData {
    std::vector<std::string> tokens;    // by id, in GPT-2's byte-to-unicode alphabet (as vocab.json)
    std::vector<int32_t> token_types;   // by id; empty means "all normal"
    std::vector<std::string> merges;    // "left right" by rank; empty: derive ranks from ids
    int32_t bos_id = -1;
    int32_t eos_id = -1;
};

class Vocab {
public:
    // Throws gptj::Error(invalid_file) on inconsistent data (unknown merge piece, bad id, ...).
    explicit Vocab(VocabData data);
    ~Vocab();
    Vocab(const Vocab &) = delete;
    Vocab & operator=(const Vocab &) = delete;

    // Token ids for UTF-8 text. parse_special: map the strings of control / user-defined tokens
    // found in the text to their ids; otherwise they are tokenized as plain text.
    std::vector<int32_t> encode(std::string_view text, bool parse_special) const;

    // The raw bytes the ids stand for (may be invalid UTF-8 when a character is split).
    std::string decode(const std::vector<int32_t> & ids) const;

    // The raw bytes of one token. Throws gptj::Error(invalid_argument) for an id out of range.
    std::string token_bytes(int32_t id) const;

    int32_t n_tokens() const;
    int32_t bos_id() const;
    int32_t eos_id() const;
    TokenType token_type(int32_t id) const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;  // pimpl: keeps the pre-tokenizer and BPE tables out of this header
};

}  // namespace gptj
