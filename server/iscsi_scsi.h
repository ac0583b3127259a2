// What SCSI answers mean to an iSCSI path: a task's status and sense as a verdict and an errno
// NBD carries, the setup pages (capacity, limits, provisioning, identity), a refused login.
//
// Pure functions over libiscsi's parsed structures: no context, no I/O, any thread.
#pragma once

#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>

#include <cstdint>
#include <string>
#include <vector>

#include "server/path.h"

namespace mp {

// What a finished SCSI task means for its command.
enum class Verdict {
  Ok,
  Reissue,    // UNIT ATTENTION, BUSY, TASK SET FULL: send it again on the same connection
  Transport,  // cancelled, timed out or the connection failed: nothing was answered
  Remote      // the target answered with an error (err says which)
};

// The verdict for a task's status; sets *err (0, or an errno NBD carries) and
// *why (a phrase for the log). `task` may be nullptr (a cancelled task).
Verdict classify(int status, scsi_task* task, int* err, std::string* why);

// The LU's identifier from the Device Identification page: the best
// LU-associated designator (NAA, then EUI-64, then SCSI name, then T10
// vendor ID), as text such as "naa.6000000000000000..." or "t10.IET 0001".
std::string lu_identity(scsi_inquiry_device_identification* inq);

// What to check when a login is refused, from libiscsi's message ("" when
// there is no hint).
std::string login_hint(const std::string& error);

// What a connection learns in its setup steps.
struct LuSetup {
  PathCaps caps;
  std::vector<unsigned char> zero_block;  // one logical block of zeros (WRITE SAME's data)
  std::uint64_t max_ws = 0;               // WRITE SAME limit in blocks; 0: none given
  std::uint32_t max_unmap = 0;            // UNMAP limit in blocks; 0: none given
};

// Reads setup step `step`'s parsed answer into *lu: 0 READ CAPACITY(16),
// 1 Block Limits VPD, 2 Logical Block Provisioning VPD, 3 Device
// Identification VPD. `parsed` is nullptr for an optional page the target
// lacks (steps 1 and 2). Returns "" or why the answer is unusable.
std::string read_setup_page(unsigned step, void* parsed, LuSetup* lu);

}  // namespace mp
