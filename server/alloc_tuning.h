// The allocator settings the data path needs, for the whole nbdkit process.
#pragma once

namespace mp {

// Keeps glibc malloc from giving each request's buffer back to the kernel
// and faulting it in again on the next request. Each attempt reads into a
// buffer of its own (up to the largest request, 32 MiB); with glibc's
// dynamic thresholds a 1 MiB buffer could be mmap'd or trimmed off the top
// of the heap after every free, depending on the process's history: one of
// two identical servers read 1 MiB blocks at 0.55x the other's speed, with
// 2 to 3x the CPU per request (bench/README.md). Called once, at load.
void tune_allocator();

}  // namespace mp
