// A small reusable thread pool for the CPU kernels: std::thread only (no OpenMP: torch ships its
// own libgomp and two OpenMP runtimes in one process do not mix).
//
//   parallel_for(n, fn) runs fn(0) ... fn(n - 1), items handed out dynamically (atomic counter);
//   the calling thread works too. Calls from inside a pool task run serially (no nesting), calls
//   from several user threads at once are serialized. Size: FLASHMIN_NUM_THREADS, else
//   std::thread::hardware_concurrency() (capped by the CPU affinity mask). A forked child
//   (DataLoader workers) builds a new pool.
#pragma once

#include <cstdint>
#include <functional>

namespace flashmin::cpu {

// Number of threads parallel_for uses (the caller included).
int num_threads();

// Exceptions thrown by fn are rethrown in the caller (the first one; the others are dropped).
void parallel_for(int64_t n, const std::function<void(int64_t)>& fn);

}  // namespace flashmin::cpu
