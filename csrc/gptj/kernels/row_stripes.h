#pragma once

#include <algorithm>
#include <cstdint>

namespace gptj {

// A thread's rows [first, end) in ROWS stripes of consecutive rows, read one row of each stripe
// per pass: pass i reads row first + s * length + i of stripe s. Weight rows are contiguous and
// short (a k = 4096 q4_0 row is 2304 bytes, 36 lines), so each of the ROWS memory streams walks
// one long run of memory, which the hardware prefetchers follow and where a prefetch past a row's
// end lands in the stream's next row. Passes over ROWS adjacent rows started ROWS new streams
// from cold lines every pass (the next-line prefetch ran on into a row already being read):
// single tokens went 1.25x (q8_0) to 1.7x (q6_K) faster with stripes on an EPYC (issue 16).
template <int ROWS>
struct RowStripes {
    int64_t first, end, length;
    RowStripes(int64_t first_row, int64_t end_row)
        : first(first_row), end(end_row), length((end_row - first_row + ROWS - 1) / ROWS) {}
    int64_t row(int stripe, int64_t pass) const { return first + stripe * length + pass; }
    bool has(int stripe, int64_t pass) const { return row(stripe, pass) < end; }
    // A row to read for stripe s in this pass: its own or, past the end, the last (not stored).
    int64_t row_to_read(int stripe, int64_t pass) const { return std::min(row(stripe, pass), end - 1); }
};

}  // namespace gptj
