// The offer a worker makes to read its own reply (reply_lease.h).
#include "server/reply_lease.h"

#include <utility>

namespace mp {

namespace {
thread_local ReplyLease::Offer* current_offer = nullptr;
}

ReplyLease::Offer::Offer() {
  current_offer = this;
}

ReplyLease::Offer::~Offer() {
  current_offer = nullptr;
}

bool ReplyLease::offered() {
  return current_offer && !current_offer->lease_;
}

void ReplyLease::lend(std::shared_ptr<ReplyLease> lease) {
  current_offer->lease_ = std::move(lease);
}

}  // namespace mp
