// riskd wire protocol, version 1 (see ../PROTOCOL.md): framing, TXN decoding and
// DECISION encoding. All integers on the wire are big-endian.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

namespace riskd::protocol {

inline constexpr std::size_t kHeaderSize = 4;          // u32 payload length
inline constexpr std::uint32_t kMaxPayload = 4096;     // 1 <= length <= 4096
inline constexpr std::size_t kMaxFrame = kHeaderSize + kMaxPayload;
inline constexpr std::size_t kTxnSize = 47;
inline constexpr std::uint8_t kTypeTxn = 0x01;
inline constexpr std::uint8_t kTypeDecision = 0x81;
inline constexpr std::uint64_t kMinAmount = 1;
inline constexpr std::uint64_t kMaxAmount = 1'000'000'000'000;
inline constexpr std::size_t kMaxListed = 32;
inline constexpr std::uint64_t kMaxRules = 65535;      // rule ids and fired_total are u16

// Two ASCII letters packed big-endian, e.g. "US" -> 0x5553.
using CountryCode = std::uint16_t;

constexpr CountryCode country_code(char first, char second) noexcept {
  return static_cast<CountryCode>((static_cast<unsigned char>(first) << 8) |
                                  static_cast<unsigned char>(second));
}

// A decoded, validated TXN request.
struct Txn {
  std::uint64_t request_id = 0;
  std::uint64_t account_id = 0;
  std::uint32_t merchant_id = 0;
  std::uint64_t amount_cents = 0;
  CountryCode country = 0;
  std::uint64_t device_id = 0;
  std::uint64_t timestamp_ms = 0;
};

enum class Verdict : std::uint8_t { kApprove = 0, kReview = 1, kDecline = 2 };

struct Decision {
  std::uint64_t request_id = 0;
  Verdict verdict = Verdict::kApprove;
  std::uint16_t score = 0;
  std::vector<std::uint16_t> fired;  // every fired rule id, ascending
};

// Reads the big-endian payload length at the start of a frame (needs 4 bytes).
std::uint32_t frame_length(std::span<const std::uint8_t, kHeaderSize> header) noexcept;

// A frame length the protocol allows (1 ... 4096).
constexpr bool valid_frame_length(std::uint32_t length) noexcept {
  return length >= 1 && length <= kMaxPayload;
}

// Decodes a request payload; std::nullopt when it is malformed (wrong size,
// unknown type, amount out of range, country not two upper-case letters).
std::optional<Txn> decode_txn(std::span<const std::uint8_t> payload) noexcept;

// Appends one complete DECISION frame (length prefix + payload) to `out`.
void append_decision_frame(std::vector<std::uint8_t>& out, const Decision& decision);

}  // namespace riskd::protocol
