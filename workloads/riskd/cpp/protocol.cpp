#include "protocol.hpp"

#include <algorithm>
#include <concepts>

namespace riskd::protocol {
namespace {

template <std::unsigned_integral T>
T load_be(const std::uint8_t* p) noexcept {
  T value = 0;
  for (std::size_t i = 0; i < sizeof(T); ++i) value = static_cast<T>((value << 8) | p[i]);
  return value;
}

template <std::unsigned_integral T>
std::uint8_t* store_be(std::uint8_t* p, T value) noexcept {
  for (std::size_t i = sizeof(T); i-- > 0;) {
    p[i] = static_cast<std::uint8_t>(value & 0xFF);
    value = static_cast<T>(value >> 8);
  }
  return p + sizeof(T);
}

constexpr bool is_upper_ascii(std::uint8_t c) noexcept { return c >= 'A' && c <= 'Z'; }

// TXN field offsets.
constexpr std::size_t kOffType = 0;
constexpr std::size_t kOffRequestId = 1;
constexpr std::size_t kOffAccount = 9;
constexpr std::size_t kOffMerchant = 17;
constexpr std::size_t kOffAmount = 21;
constexpr std::size_t kOffCountry = 29;
constexpr std::size_t kOffDevice = 31;
constexpr std::size_t kOffTimestamp = 39;
static_assert(kOffTimestamp + 8 == kTxnSize);

constexpr std::size_t kDecisionFixedSize = 15;  // type .. listed

}  // namespace

std::uint32_t frame_length(std::span<const std::uint8_t, kHeaderSize> header) noexcept {
  return load_be<std::uint32_t>(header.data());
}

std::optional<Txn> decode_txn(std::span<const std::uint8_t> payload) noexcept {
  if (payload.size() != kTxnSize || payload[kOffType] != kTypeTxn) return std::nullopt;
  const std::uint8_t* p = payload.data();
  Txn txn;
  txn.request_id = load_be<std::uint64_t>(p + kOffRequestId);
  txn.account_id = load_be<std::uint64_t>(p + kOffAccount);
  txn.merchant_id = load_be<std::uint32_t>(p + kOffMerchant);
  txn.amount_cents = load_be<std::uint64_t>(p + kOffAmount);
  txn.country = load_be<std::uint16_t>(p + kOffCountry);
  txn.device_id = load_be<std::uint64_t>(p + kOffDevice);
  txn.timestamp_ms = load_be<std::uint64_t>(p + kOffTimestamp);
  if (txn.amount_cents < kMinAmount || txn.amount_cents > kMaxAmount) return std::nullopt;
  if (!is_upper_ascii(p[kOffCountry]) || !is_upper_ascii(p[kOffCountry + 1])) return std::nullopt;
  return txn;
}

void append_decision_frame(std::vector<std::uint8_t>& out, const Decision& decision) {
  const std::size_t listed = std::min(decision.fired.size(), kMaxListed);
  const auto payload_size = static_cast<std::uint32_t>(kDecisionFixedSize + 2 * listed);
  const std::size_t start = out.size();
  out.resize(start + kHeaderSize + payload_size);

  std::uint8_t* p = out.data() + start;
  p = store_be(p, payload_size);
  *p++ = kTypeDecision;
  p = store_be(p, decision.request_id);
  *p++ = static_cast<std::uint8_t>(decision.verdict);
  p = store_be(p, decision.score);
  p = store_be(p, static_cast<std::uint16_t>(decision.fired.size()));
  *p++ = static_cast<std::uint8_t>(listed);
  for (std::size_t i = 0; i < listed; ++i) p = store_be(p, decision.fired[i]);
}

}  // namespace riskd::protocol
