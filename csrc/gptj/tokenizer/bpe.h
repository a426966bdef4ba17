// Byte-pair encoding by merge rank: the merge table and the merge loop, on token ids.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace gptj {

// The merges of a BPE vocabulary: (left id, right id) -> (rank, merged id). A lower rank merges first.
class BpeMerges {
public:
    // Adds the merge with the next rank. A pair added twice keeps its last rank, as Hugging Face
    // tokenizers and GPT-2's encoder.py do (both build a map from the list).
    void add(int32_t left, int32_t right, int32_t merged);
    size_t size() const { return n_merges_; }

    // Scratch space of the merge loop, reused across the pieces of one encode call.
    struct Workspace;

    // Merges `symbols` (the token ids of a piece's bytes) in place, in the order Hugging Face
    // tokenizers does: repeatedly the pair of lowest rank, the leftmost among equal ranks.
    // A priority queue over a linked list of symbols keeps this O(n log n) in the piece length.
    void apply(std::vector<int32_t> & symbols, Workspace & workspace) const;

private:
    struct Entry {
        uint64_t key;
        int32_t rank;
        int32_t merged;
    };
    static constexpr uint64_t kEmpty = ~uint64_t{0};
    static uint64_t key(int32_t left, int32_t right) {
        return uint64_t{static_cast<uint32_t>(left)} << 32 | static_cast<uint32_t>(right);
    }
    const Entry * find(int32_t left, int32_t right) const;
    void grow();

    // Open addressing with linear probing: the lookup sits in the innermost loop of encode, where
    // std::unordered_map's node chasing measured about twice as slow.
    std::vector<Entry> table_;
    size_t n_entries_ = 0;
    size_t n_merges_ = 0;
};

struct BpeMerges::Workspace {
    struct Symbol {
        int32_t id;
        int32_t prev;  // -1: none
        int32_t next;  // -1: none
    };
    struct Candidate {
        int32_t rank;
        int32_t pos;  // index of the left symbol
        int32_t merged;
    };
    std::vector<Symbol> symbols;
    std::vector<Candidate> queue;  // a binary heap
};

}  // namespace gptj
