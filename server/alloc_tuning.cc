// Allocator settings (see alloc_tuning.h).
#include "server/alloc_tuning.h"

#include <malloc.h>

namespace mp {

void tune_allocator() {
  // Buffers up to the largest request come from the heap, never mmap; and
  // up to 64 MiB of freed memory at the top of a heap stays for the next
  // requests instead of going back to the kernel. Setting both turns glibc's
  // dynamic adjustment off, so the behaviour no longer depends on history.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 64 << 20);
}

}  // namespace mp
