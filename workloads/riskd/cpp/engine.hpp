// riskd decision engine: the account and merchant state and the rule evaluation
// of ../PROTOCOL.md ("State" and "Per request").
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <span>
#include <unordered_map>
#include <vector>

#include "protocol.hpp"

namespace riskd {

struct EngineParams {
  std::uint64_t accounts = 100000;  // pre-loaded accounts 0 ... accounts-1
  std::uint64_t window = 32;        // W, transactions kept per account
  std::uint64_t merchants = 10000;  // M, merchant ids used by the pre-load
  std::uint64_t rules = 200;        // R
  std::uint64_t seed = 42;          // splitmix64 seed of the pre-load
};

// splitmix64 (all arithmetic mod 2^64).
class SplitMix64 {
 public:
  explicit SplitMix64(std::uint64_t seed) noexcept : state_(seed) {}
  std::uint64_t next() noexcept;

 private:
  std::uint64_t state_;
};

struct WindowEntry {
  std::uint64_t timestamp_ms = 0;
  std::uint64_t amount_cents = 0;
  std::uint64_t device_id = 0;
  std::uint32_t merchant_id = 0;
  protocol::CountryCode country = 0;
};

// An account's sliding window of its most recent transactions: a ring buffer
// (vector + index of the oldest entry) that grows up to the window capacity and
// then overwrites its oldest entry.
class Account {
 public:
  void reserve(std::size_t capacity) { entries_.reserve(capacity); }
  void push(const WindowEntry& entry, std::size_t capacity);

  [[nodiscard]] std::size_t size() const noexcept { return entries_.size(); }
  [[nodiscard]] bool empty() const noexcept { return entries_.empty(); }
  [[nodiscard]] std::uint64_t window_sum() const noexcept { return window_sum_; }
  // The most recent entry; the window must not be empty.
  [[nodiscard]] const WindowEntry& newest() const noexcept;
  // All entries, in storage (not chronological) order.
  [[nodiscard]] std::span<const WindowEntry> entries() const noexcept { return entries_; }

 private:
  std::vector<WindowEntry> entries_;
  std::size_t oldest_ = 0;  // slot of the oldest entry once the window is full
  std::uint64_t window_sum_ = 0;
};

struct Merchant {
  std::uint64_t count = 0;
  std::uint64_t declined = 0;
  std::uint64_t amount_sum = 0;
};

// Thread-safe: decide() may be called concurrently from any number of threads.
// Each request holds the lock of its account's shard and then of its merchant's
// shard (always in that order), so it is atomic per account and per merchant.
class RiskEngine {
 public:
  // Builds the rule table and pre-loads the accounts (single-threaded).
  explicit RiskEngine(const EngineParams& params);
  RiskEngine(const RiskEngine&) = delete;
  RiskEngine& operator=(const RiskEngine&) = delete;

  protocol::Decision decide(const protocol::Txn& txn);

  static constexpr std::size_t kFeatureCount = 9;
  using Features = std::array<std::uint64_t, kFeatureCount>;

 private:
  static constexpr unsigned kShardBits = 6;
  static constexpr std::size_t kShardCount = std::size_t{1} << kShardBits;

  template <typename Value>
  struct alignas(64) Shard {  // aligned: no false sharing between shard locks
    std::mutex mutex;
    std::unordered_map<std::uint64_t, Value> map;
  };

  struct Rule {
    std::uint64_t threshold;
    std::uint32_t weight;
    std::uint16_t id;
    std::uint8_t feature;
  };

  static std::size_t shard_index(std::uint64_t key) noexcept;
  void preload(const EngineParams& params);
  void account_features(const Account& account, const protocol::Txn& txn,
                        Features& features) const;

  std::size_t window_;
  std::vector<Rule> rules_;
  std::array<Shard<Account>, kShardCount> accounts_;
  std::array<Shard<Merchant>, kShardCount> merchants_;
};

}  // namespace riskd
