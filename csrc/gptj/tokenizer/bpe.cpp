#include "gptj/tokenizer/bpe.h"

#include <algorithm>

namespace gptj {
namespace {

uint64_t hash_key(uint64_t key) {
    // splitmix64's finalizer: ids are small and dense, so they need mixing before masking.
    key ^= key >> 30;
    key *= 0xBF58476D1CE4E5B9ull;
    key ^= key >> 27;
    key *= 0x94D049BB133111EBull;
    return key ^ (key >> 31);
}

// The heap's order: lowest rank first, then leftmost.
bool later(const BpeMerges::Workspace::Candidate & a, const BpeMerges::Workspace::Candidate & b) {
    return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
}

}  // namespace

void BpeMerges::add(int32_t left, int32_t right, int32_t merged) {
    if ((n_entries_ + 1) * 2 > table_.size()) grow();
    const uint64_t k = key(left, right);
    const size_t mask = table_.size() - 1;
    for (size_t i = hash_key(k) & mask;; i = (i + 1) & mask) {
        Entry & entry = table_[i];
        if (entry.key == kEmpty) {
            entry = {k, static_cast<int32_t>(n_merges_), merged};
            ++n_entries_;
            break;
        }
        if (entry.key == k) {
            entry = {k, static_cast<int32_t>(n_merges_), merged};
            break;
        }
    }
    ++n_merges_;
}

void BpeMerges::grow() {
    std::vector<Entry> old = std::move(table_);
    table_.assign(std::max<size_t>(64, old.size() * 2), Entry{kEmpty, 0, 0});
    const size_t mask = table_.size() - 1;
    for (const Entry & entry : old) {
        if (entry.key == kEmpty) continue;
        size_t i = hash_key(entry.key) & mask;
        while (table_[i].key != kEmpty) i = (i + 1) & mask;
        table_[i] = entry;
    }
}

const BpeMerges::Entry * BpeMerges::find(int32_t left, int32_t right) const {
    if (table_.empty()) return nullptr;
    const uint64_t k = key(left, right);
    const size_t mask = table_.size() - 1;
    for (size_t i = hash_key(k) & mask;; i = (i + 1) & mask) {
        const Entry & entry = table_[i];
        if (entry.key == k) return &entry;
        if (entry.key == kEmpty) return nullptr;
    }
}

void BpeMerges::apply(std::vector<int32_t> & ids, Workspace & workspace) const {
    if (ids.size() < 2) return;
    auto & symbols = workspace.symbols;
    auto & queue = workspace.queue;
    symbols.clear();
    queue.clear();
    const int32_t n = static_cast<int32_t>(ids.size());
    for (int32_t i = 0; i < n; ++i) {
        symbols.push_back({ids[i], i - 1, i + 1 < n ? i + 1 : -1});
    }
    auto push_candidate = [&](int32_t pos) {
        const int32_t next = symbols[pos].next;
        if (next < 0) return;
        if (const Entry * entry = find(symbols[pos].id, symbols[next].id)) {
            queue.push_back({entry->rank, pos, entry->merged});
            std::push_heap(queue.begin(), queue.end(), later);
        }
    };
    for (int32_t i = 0; i + 1 < n; ++i) push_candidate(i);

    while (!queue.empty()) {
        std::pop_heap(queue.begin(), queue.end(), later);
        const Workspace::Candidate top = queue.back();
        queue.pop_back();
        Workspace::Symbol & left = symbols[top.pos];
        // Skip candidates made stale by an earlier merge: the left symbol was absorbed, or it or
        // its right neighbour changed since the candidate was queued.
        if (left.id < 0 || left.next < 0) continue;
        Workspace::Symbol & right = symbols[left.next];
        const Entry * entry = find(left.id, right.id);
        if (entry == nullptr || entry->merged != top.merged || entry->rank != top.rank) continue;

        left.id = top.merged;
        right.id = -1;
        left.next = right.next;
        if (right.next >= 0) symbols[right.next].prev = top.pos;
        if (left.prev >= 0) push_candidate(left.prev);
        push_candidate(top.pos);
    }

    ids.clear();
    for (int32_t i = 0; i >= 0; i = symbols[i].next) ids.push_back(symbols[i].id);
}

}  // namespace gptj
