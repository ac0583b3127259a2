// What SCSI answers mean to an iSCSI path (see iscsi_scsi.h).
#include "server/iscsi_scsi.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>

namespace mp {

namespace {

// errno for a CHECK CONDITION, as NBD can carry it.
int sense_errno(const scsi_sense& s) {
  switch (s.key) {
    case SCSI_SENSE_ILLEGAL_REQUEST:
      return EINVAL;  // out of range, unsupported opcode or field
    case SCSI_SENSE_DATA_PROTECTION:
      return s.ascq == 0x2707 ? ENOSPC : EPERM;  // 27/07: space allocation failed
    default:
      return EIO;  // not ready, medium, hardware, aborted command, miscompare
  }
}

std::string sense_text(const scsi_sense& s) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "%s, %s (%02x/%02x)", scsi_sense_key_str(s.key),
                scsi_sense_ascq_str(s.ascq), (s.ascq >> 8) & 0xff, s.ascq & 0xff);
  return buf;
}

}  // namespace

Verdict classify(int status, scsi_task* task, int* err, std::string* why) {
  *err = 0;
  switch (status) {
    case SCSI_STATUS_GOOD:
      return Verdict::Ok;
    case SCSI_STATUS_CHECK_CONDITION:
      if (task && task->sense.key == SCSI_SENSE_UNIT_ATTENTION) {
        *why = "unit attention: " + sense_text(task->sense);
        return Verdict::Reissue;
      }
      *err = task ? sense_errno(task->sense) : EIO;
      *why = task ? sense_text(task->sense) : "check condition";
      return Verdict::Remote;
    case SCSI_STATUS_BUSY:
    case SCSI_STATUS_TASK_SET_FULL:
      *why = status == SCSI_STATUS_BUSY ? "busy" : "task set full";
      return Verdict::Reissue;
    case SCSI_STATUS_CANCELLED:
    case SCSI_STATUS_ERROR:
    case SCSI_STATUS_TIMEOUT:
      *err = ENOTCONN;
      *why = "connection lost";
      return Verdict::Transport;
    default:  // reservation conflict, task aborted, ACA active, ...
      *err = EIO;
      *why = "SCSI status " + std::to_string(status);
      return Verdict::Remote;
  }
}

std::string lu_identity(scsi_inquiry_device_identification* inq) {
  int best_rank = 0;
  std::string best;
  for (auto* d = inq ? inq->designators : nullptr; d; d = d->next) {
    if (d->association != SCSI_ASSOCIATION_LOGICAL_UNIT || d->designator_length <= 0) continue;
    int rank = 0;
    const char* prefix = "";
    switch (d->designator_type) {
      case SCSI_DESIGNATOR_TYPE_NAA:
        rank = 4, prefix = "naa.";
        break;
      case SCSI_DESIGNATOR_TYPE_EUI_64:
        rank = 3, prefix = "eui.";
        break;
      case SCSI_DESIGNATOR_TYPE_SCSI_NAME_STRING:
        rank = 2, prefix = "";
        break;
      case SCSI_DESIGNATOR_TYPE_T10_VENDORT_ID:
        rank = 1, prefix = "t10.";
        break;
      default:
        continue;
    }
    if (rank <= best_rank) continue;
    std::string text = prefix;
    auto* p = reinterpret_cast<const unsigned char*>(d->designator);
    if (d->code_set == SCSI_CODESET_BINARY) {
      char hex[3];
      for (int i = 0; i < d->designator_length; i++) {
        std::snprintf(hex, sizeof hex, "%02x", p[i]);
        text += hex;
      }
    } else {
      std::string s(d->designator, static_cast<std::size_t>(d->designator_length));
      while (!s.empty() && (s.back() == ' ' || s.back() == '\0')) s.pop_back();
      text += s;
    }
    best_rank = rank;
    best = std::move(text);
  }
  return best;
}

std::string login_hint(const std::string& error) {
  if (error.find("Authentication failure") != std::string::npos)
    return ": check the CHAP user and secret (USER%PASSWORD in the URI, or chap: in the YAML)";
  if (error.find("Authorization failure") != std::string::npos)
    return ": the target does not let this initiator in (check its ACL)";
  if (error.find("Target not found") != std::string::npos ||
      error.find("Target removed") != std::string::npos)
    return ": check the target name (IQN) in the URI";
  return "";
}

std::string read_setup_page(unsigned step, void* parsed, LuSetup* lu) {
  PathCaps& caps = lu->caps;
  switch (step) {
    case 0: {
      auto* rc = static_cast<scsi_readcapacity16*>(parsed);
      if (!rc || rc->block_length == 0) return "READ CAPACITY(16) returned no capacity";
      caps.min_block = rc->block_length;
      caps.pref_block = std::max<std::uint32_t>(rc->block_length, 4096);
      caps.size = (rc->returned_lba + 1) * rc->block_length;
      caps.can_trim = rc->lbpme != 0;
      lu->zero_block.assign(rc->block_length, 0);
      break;
    }
    case 1:
      if (auto* bl = static_cast<scsi_inquiry_block_limits*>(parsed)) {
        std::uint64_t max = bl->max_xfer_len ? std::uint64_t{bl->max_xfer_len} * caps.min_block
                                             : std::uint64_t{32} << 20;
        max = std::min<std::uint64_t>(max, 32u << 20);
        caps.max_request = static_cast<std::uint32_t>(max / caps.min_block * caps.min_block);
        lu->max_ws = bl->max_ws_len ? bl->max_ws_len : 0;
        lu->max_unmap = bl->max_unmap;
      }
      break;
    case 2: {
      auto* lbp = static_cast<scsi_inquiry_logical_block_provisioning*>(parsed);
      caps.can_trim = caps.can_trim && lbp && lbp->lbpu;
      break;
    }
    case 3:
      caps.identity = lu_identity(static_cast<scsi_inquiry_device_identification*>(parsed));
      break;
  }
  return "";
}

}  // namespace mp
