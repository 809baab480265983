#include "engine.hpp"

#include <algorithm>
#include <unordered_set>
#include <utility>

namespace riskd {
namespace {

using protocol::country_code;
using protocol::CountryCode;

constexpr std::array<CountryCode, 8> kCountries = {
    country_code('U', 'S'), country_code('G', 'B'), country_code('D', 'E'),
    country_code('F', 'R'), country_code('J', 'P'), country_code('B', 'R'),
    country_code('I', 'N'), country_code('C', 'N'),
};

// Feature indices.
enum Feature : std::size_t {
  kVelocity1m = 0,
  kVelocity1h = 1,
  kAmountRatio = 2,
  kNewCountry = 3,
  kNewDevice = 4,
  kMerchantRisk = 5,
  kAmount = 6,
  kDistinctMerchants = 7,
  kRecency = 8,
};

constexpr std::array<std::uint64_t, RiskEngine::kFeatureCount> kBase = {
    2, 8, 250, 0, 0, 100, 50000, 4, 30};
constexpr std::array<std::uint64_t, RiskEngine::kFeatureCount> kStep = {
    1, 2, 25, 0, 0, 20, 10000, 1, 1};

constexpr std::uint64_t kMinuteMs = 60'000;
constexpr std::uint64_t kHourMs = 3'600'000;
constexpr std::uint64_t kMaxScore = 1000;
constexpr std::uint64_t kDeclineScore = 700;
constexpr std::uint64_t kReviewScore = 400;

// `entry_ts + span > now` in exact integer arithmetic: the sum may exceed 2^64
// (reference.py has unbounded integers), so it is never formed.
constexpr bool within(std::uint64_t entry_ts, std::uint64_t span, std::uint64_t now) noexcept {
  return now < span || entry_ts > now - span;
}

static_assert(within(~std::uint64_t{0}, kMinuteMs, ~std::uint64_t{0}));
static_assert(within(0, kMinuteMs, kMinuteMs - 1));
static_assert(!within(0, kMinuteMs, kMinuteMs));

}  // namespace

std::uint64_t SplitMix64::next() noexcept {
  state_ += 0x9E3779B97F4A7C15ULL;
  std::uint64_t z = state_;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

void Account::push(const WindowEntry& entry, std::size_t capacity) {
  if (entries_.size() < capacity) {
    entries_.push_back(entry);
  } else {
    WindowEntry& slot = entries_[oldest_];
    window_sum_ -= slot.amount_cents;
    slot = entry;
    oldest_ = (oldest_ + 1) % capacity;
  }
  window_sum_ += entry.amount_cents;
}

const WindowEntry& Account::newest() const noexcept {
  return entries_[(oldest_ + entries_.size() - 1) % entries_.size()];
}

std::size_t RiskEngine::shard_index(std::uint64_t key) noexcept {
  // Fibonacci hashing: the top bits of key * 2^64/phi spread consecutive ids.
  return static_cast<std::size_t>((key * 0x9E3779B97F4A7C15ULL) >> (64 - kShardBits));
}

RiskEngine::RiskEngine(const EngineParams& params) : window_(params.window) {
  rules_.reserve(params.rules);
  for (std::uint64_t i = 0; i < params.rules; ++i) {
    const std::size_t feature = i % kFeatureCount;
    const std::uint64_t k = i / kFeatureCount;
    rules_.push_back(Rule{
        .threshold = kBase[feature] + k * kStep[feature],
        .weight = static_cast<std::uint32_t>(5 + (i * 7) % 41),
        .id = static_cast<std::uint16_t>(i),
        .feature = static_cast<std::uint8_t>(feature),
    });
  }
  preload(params);
}

void RiskEngine::preload(const EngineParams& params) {
  for (auto& shard : accounts_) shard.map.reserve(params.accounts / kShardCount + 1);

  SplitMix64 rng(params.seed);
  for (std::uint64_t a = 0; a < params.accounts; ++a) {
    Account account;
    account.reserve(window_);
    for (std::uint64_t j = 0; j < params.window; ++j) {
      const std::uint64_t r1 = rng.next();
      const std::uint64_t r2 = rng.next();
      const std::uint64_t r3 = rng.next();
      account.push(
          WindowEntry{
              .timestamp_ms = j * 1000,
              .amount_cents = 100 + r1 % 100000,
              .device_id = a * 4 + (r3 >> 8) % 4,
              .merchant_id = static_cast<std::uint32_t>(r2 % params.merchants),
              .country = kCountries[r3 % kCountries.size()],
          },
          window_);
    }
    // No locking: the constructor runs before any serving thread exists.
    accounts_[shard_index(a)].map.emplace(a, std::move(account));
  }
}

void RiskEngine::account_features(const Account& account, const protocol::Txn& txn,
                                  Features& f) const {
  const std::uint64_t n = account.size();
  const std::uint64_t now = txn.timestamp_ms;

  bool country_seen = false;
  bool device_seen = false;
  std::unordered_set<std::uint32_t> merchants;
  merchants.reserve(account.size());
  for (const WindowEntry& e : account.entries()) {
    f[kVelocity1m] += within(e.timestamp_ms, kMinuteMs, now) ? 1 : 0;
    f[kVelocity1h] += within(e.timestamp_ms, kHourMs, now) ? 1 : 0;
    country_seen = country_seen || e.country == txn.country;
    device_seen = device_seen || e.device_id == txn.device_id;
    merchants.insert(e.merchant_id);
  }

  f[kAmountRatio] =
      n == 0 ? 100 : txn.amount_cents * 100 / std::max<std::uint64_t>(1, account.window_sum() / n);
  f[kNewCountry] = (n != 0 && !country_seen) ? 1 : 0;
  f[kNewDevice] = (n != 0 && !device_seen) ? 1 : 0;
  f[kAmount] = txn.amount_cents;
  f[kDistinctMerchants] = merchants.size();
  if (n != 0) {
    const std::uint64_t last = account.newest().timestamp_ms;
    const std::uint64_t s = now >= last ? (now - last) / 1000 : 0;
    f[kRecency] = s < 60 ? 60 - s : 0;
  }
}

protocol::Decision RiskEngine::decide(const protocol::Txn& txn) {
  Features features{};
  protocol::Decision decision;
  decision.request_id = txn.request_id;

  auto& account_shard = accounts_[shard_index(txn.account_id)];
  const std::lock_guard account_lock(account_shard.mutex);
  Account& account = account_shard.map[txn.account_id];  // created empty if unknown
  account_features(account, txn, features);

  auto& merchant_shard = merchants_[shard_index(txn.merchant_id)];
  const std::lock_guard merchant_lock(merchant_shard.mutex);
  Merchant& merchant = merchant_shard.map[txn.merchant_id];  // created with zeros if unknown
  features[kMerchantRisk] = merchant.declined * 1000 / (merchant.count + 10);

  std::uint64_t total = 0;
  for (const Rule& rule : rules_) {
    if (features[rule.feature] > rule.threshold) {
      decision.fired.push_back(rule.id);
      total += rule.weight;
    }
  }
  const std::uint64_t score = std::min(kMaxScore, total);
  decision.score = static_cast<std::uint16_t>(score);
  decision.verdict = score >= kDeclineScore  ? protocol::Verdict::kDecline
                     : score >= kReviewScore ? protocol::Verdict::kReview
                                             : protocol::Verdict::kApprove;

  account.push(
      WindowEntry{
          .timestamp_ms = txn.timestamp_ms,
          .amount_cents = txn.amount_cents,
          .device_id = txn.device_id,
          .merchant_id = txn.merchant_id,
          .country = txn.country,
      },
      window_);
  merchant.count += 1;
  merchant.amount_sum += txn.amount_cents;
  if (decision.verdict == protocol::Verdict::kDecline) merchant.declined += 1;
  return decision;
}

}  // namespace riskd
