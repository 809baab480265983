//! Decision state and algorithm of PROTOCOL.md ("State", "Pre-load", "Per request").
//!
//! State lives in sharded maps: [`SHARDS`] shards of `HashMap<u64, Account>`, each
//! behind a `std::sync::Mutex`, selected by account id; merchants likewise by
//! merchant id. A request locks its account's shard, then its merchant's shard
//! (always in that order, so two requests can never wait on each other in a cycle)
//! and holds both while it computes the features, applies the rules and updates
//! the state, which makes every request atomic per account and per merchant.
//!
//! Maps use the standard library's `HashMap` with its default hasher (SipHash-1-3,
//! randomly keyed), i.e. the language's standard map, as the Go (`map`) and C++
//! (`std::unordered_map`) implementations use theirs. No faster third-party hasher.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::proto::{Decision, MAX_AMOUNT, MAX_LISTED, Txn, Verdict};

/// Number of lock shards for accounts and for merchants.
pub const SHARDS: usize = 64;
const SHARD_BITS: u32 = SHARDS.trailing_zeros();
const _: () = assert!(SHARDS.is_power_of_two());

/// Countries of the pre-loaded transactions, in the order `r3 % 8` indexes them.
pub const COUNTRIES: [[u8; 2]; 8] = [
    *b"US", *b"GB", *b"DE", *b"FR", *b"JP", *b"BR", *b"IN", *b"CN",
];
/// Number of features.
const FEATURES: usize = 9;
/// Threshold of rule i: `BASE[i % 9] + (i / 9) * STEP[i % 9]`.
const BASE: [u64; FEATURES] = [2, 8, 250, 0, 0, 100, 50_000, 4, 30];
const STEP: [u64; FEATURES] = [1, 2, 25, 0, 0, 20, 10_000, 1, 1];
/// Largest rule count: rule ids and `fired_total` are u16 on the wire.
pub const MAX_RULES: u32 = u16::MAX as u32;
/// Largest window: `window_sum` (at most `window * MAX_AMOUNT`) must fit in a u64.
pub const MAX_WINDOW: usize = (u64::MAX / MAX_AMOUNT) as usize;
/// Largest merchant count: pre-loaded merchant ids (`r % M`) must be u32 like the
/// wire's merchant_id.
pub const MAX_MERCHANTS: u64 = 1 << 32;

/// The splitmix64 generator used for the pre-load.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// One transaction in an account's window.
#[derive(Debug, Clone, Copy)]
struct WindowEntry {
    ts: u64,
    amount: u64,
    device: u64,
    merchant: u32,
    country: [u8; 2],
}

/// An account: its most recent transactions (oldest at the front) and their sum.
#[derive(Debug, Default)]
struct Account {
    window: VecDeque<WindowEntry>,
    window_sum: u64,
}

impl Account {
    /// Appends `e`, evicting the oldest entry when the window already holds `cap`.
    fn push(&mut self, e: WindowEntry, cap: usize) {
        if self.window.len() == cap {
            if let Some(old) = self.window.pop_front() {
                self.window_sum -= old.amount;
            }
        }
        self.window.push_back(e);
        self.window_sum += e.amount;
    }
}

#[derive(Debug, Default)]
struct Merchant {
    count: u64,
    declined: u64,
    /// Kept as the protocol says but never read by a rule; wraps rather than
    /// overflow on a (very) long run against one merchant.
    amount_sum: u64,
}

/// Sizes and seed of the state; the decision-relevant part of the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// Accounts 0 ..= accounts-1 are pre-loaded.
    pub accounts: u64,
    /// Window length W, 1 ..= [`MAX_WINDOW`].
    pub window: usize,
    /// Merchant count M for the pre-load, 1 ..= [`MAX_MERCHANTS`].
    pub merchants: u64,
    /// Rule count R, 1 ..= [`MAX_RULES`].
    pub rules: u32,
    pub seed: u64,
}

type Shard<K, V> = Mutex<HashMap<K, V>>;

/// The server's whole decision state, shared by all connections.
#[derive(Debug)]
pub struct Engine {
    window: usize,
    rules: u32,
    accounts: Box<[Shard<u64, Account>]>,
    merchants: Box<[Shard<u32, Merchant>]>,
}

/// Shard of a key: Fibonacci hashing (top bits of key * 2^64/phi), so that strided
/// ids spread over all shards as well as consecutive ones do.
fn shard_of(key: u64) -> usize {
    (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (u64::BITS - SHARD_BITS)) as usize
}

/// Locks a shard. Poisoning cannot happen in the release build (panic = abort);
/// elsewhere a shard's maps stay consistent even if a holder panicked.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Engine {
    /// Builds the state and pre-loads accounts `0 .. accounts` with full windows.
    pub fn new(p: Params) -> Self {
        assert!((1..=MAX_WINDOW).contains(&p.window), "window out of range");
        assert!(
            (1..=MAX_MERCHANTS).contains(&p.merchants),
            "merchants out of range"
        );
        assert!((1..=MAX_RULES).contains(&p.rules), "rules out of range");

        // Size each account shard for its pre-loaded accounts up front, so the
        // pre-load does not rehash (and does not briefly hold two tables).
        let mut per_shard = vec![0usize; SHARDS];
        for a in 0..p.accounts {
            per_shard[shard_of(a)] += 1;
        }
        let mut accounts: Vec<HashMap<u64, Account>> = per_shard
            .iter()
            .map(|&n| HashMap::with_capacity(n))
            .collect();

        let mut rng = SplitMix64::new(p.seed);
        for a in 0..p.accounts {
            let mut acc = Account {
                window: VecDeque::with_capacity(p.window),
                window_sum: 0,
            };
            for j in 0..p.window as u64 {
                let (r1, r2, r3) = (rng.next_u64(), rng.next_u64(), rng.next_u64());
                let entry = WindowEntry {
                    ts: j.wrapping_mul(1000),
                    amount: 100 + r1 % 100_000,
                    // r2 % M < M <= 2^32.
                    merchant: (r2 % p.merchants) as u32,
                    country: COUNTRIES[(r3 % 8) as usize],
                    device: a.wrapping_mul(4).wrapping_add((r3 >> 8) % 4),
                };
                acc.push(entry, p.window);
            }
            accounts[shard_of(a)].insert(a, acc);
        }

        Engine {
            window: p.window,
            rules: p.rules,
            accounts: accounts.into_iter().map(Mutex::new).collect(),
            merchants: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    /// Decides one request and updates the state with it.
    pub fn decide(&self, t: &Txn) -> Decision {
        let mut accounts = lock(&self.accounts[shard_of(t.account_id)]);
        let acc = accounts.entry(t.account_id).or_default();
        let mut merchants = lock(&self.merchants[shard_of(u64::from(t.merchant_id))]);
        let m = merchants.entry(t.merchant_id).or_default();

        let f = features(acc, m, t);

        let mut decision = Decision {
            request_id: t.request_id,
            verdict: Verdict::Approve,
            score: 0,
            fired_total: 0,
            fired_ids: [0; MAX_LISTED],
        };
        let mut total: u64 = 0;
        for i in 0..self.rules {
            let (fi, k) = ((i % 9) as usize, u64::from(i / 9));
            let threshold = BASE[fi] + k * STEP[fi];
            if f[fi] > threshold {
                // i < rules <= u16::MAX, and so is the number of fired rules.
                let n = usize::from(decision.fired_total);
                if n < MAX_LISTED {
                    decision.fired_ids[n] = i as u16;
                }
                decision.fired_total += 1;
                total += u64::from(5 + (i * 7) % 41);
            }
        }
        let score = total.min(1000);
        decision.score = score as u16;
        decision.verdict = match score {
            700.. => Verdict::Decline,
            400.. => Verdict::Review,
            _ => Verdict::Approve,
        };

        acc.push(
            WindowEntry {
                ts: t.timestamp_ms,
                amount: t.amount_cents,
                device: t.device_id,
                merchant: t.merchant_id,
                country: t.country,
            },
            self.window,
        );
        m.count += 1;
        m.amount_sum = m.amount_sum.wrapping_add(t.amount_cents);
        if decision.verdict == Verdict::Decline {
            m.declined += 1;
        }
        decision
    }
}

/// The nine features of `t` against the account's window *before* `t` and the
/// merchant's counters.
fn features(acc: &Account, m: &Merchant, t: &Txn) -> [u64; FEATURES] {
    let win = &acc.window;
    let n = win.len() as u64;
    let mut f = [0u64; FEATURES];

    // "e.ts + span > t.ts" in exact arithmetic: always true when t.ts < span
    // (e.ts + span >= span), else e.ts > t.ts - span. Avoids u64 wrap-around for
    // timestamps near 2^64.
    let after = |span: u64| t.timestamp_ms.checked_sub(span);
    let (lo_1m, lo_1h) = (after(60_000), after(3_600_000));
    let mut seen_country = false;
    let mut seen_device = false;
    for e in win {
        f[0] += u64::from(lo_1m.is_none_or(|lo| e.ts > lo));
        f[1] += u64::from(lo_1h.is_none_or(|lo| e.ts > lo));
        seen_country |= e.country == t.country;
        seen_device |= e.device == t.device_id;
    }
    f[2] = match n {
        0 => 100,
        _ => t.amount_cents * 100 / (acc.window_sum / n).max(1),
    };
    f[3] = u64::from(n > 0 && !seen_country);
    f[4] = u64::from(n > 0 && !seen_device);
    f[5] = m.declined * 1000 / (m.count + 10);
    f[6] = t.amount_cents;
    f[7] = distinct_merchants(win);
    f[8] = match win.back() {
        None => 0,
        Some(last) => {
            let s = t.timestamp_ms.saturating_sub(last.ts) / 1000;
            60u64.saturating_sub(s)
        }
    };
    f
}

/// Number of distinct merchant ids in the window.
fn distinct_merchants(win: &VecDeque<WindowEntry>) -> u64 {
    let mut ids: Vec<u32> = win.iter().map(|e| e.merchant).collect();
    ids.sort_unstable();
    ids.dedup();
    ids.len() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{self, HEADER_LEN};
    use crate::testutil::{hex, vector_params, vectors};

    #[test]
    fn splitmix64_known_outputs() {
        let mut g = SplitMix64::new(0);
        assert_eq!(g.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(g.next_u64(), 0x6e78_9e6a_a1b9_65f4);
        let mut g = SplitMix64::new(42);
        assert_eq!(g.next_u64(), 0xbdd7_3226_2feb_6e95);
    }

    #[test]
    fn preload_fills_windows() {
        let e = Engine::new(Params {
            accounts: 3,
            window: 4,
            merchants: 10,
            rules: 9,
            seed: 42,
        });
        let shard = lock(&e.accounts[shard_of(0)]);
        let acc = &shard[&0];
        assert_eq!(acc.window.len(), 4);
        assert_eq!(
            acc.window_sum,
            acc.window.iter().map(|w| w.amount).sum::<u64>()
        );
        let ts: Vec<u64> = acc.window.iter().map(|w| w.ts).collect();
        assert_eq!(ts, [0, 1000, 2000, 3000]);
        // First draw of seed 42: amount = 100 + r1 % 100000.
        assert_eq!(
            acc.window[0].amount,
            100 + 0xbdd7_3226_2feb_6e95u64 % 100_000
        );
        assert_eq!(acc.window[0].merchant as u64, 0x28ef_e333_b266_f103u64 % 10);
    }

    #[test]
    fn shards_are_all_used() {
        let mut hit = [false; SHARDS];
        for id in 0..1024u64 {
            hit[shard_of(id)] = true;
            hit[shard_of(id * 64)] = true;
        }
        assert!(hit.iter().all(|&h| h));
    }

    #[test]
    fn window_evicts_oldest() {
        let mut acc = Account::default();
        for i in 1..=5u64 {
            let e = WindowEntry {
                ts: i,
                amount: i * 10,
                device: 0,
                merchant: 0,
                country: *b"US",
            };
            acc.push(e, 3);
        }
        let ts: Vec<u64> = acc.window.iter().map(|w| w.ts).collect();
        assert_eq!(ts, [3, 4, 5]);
        assert_eq!(acc.window_sum, 120);
    }

    /// Every case of the shared vectors, in order, on one engine: byte-identical
    /// responses to reference.py.
    #[test]
    fn shared_vectors_cases() {
        let v = vectors();
        assert_eq!(v["protocol"], 1);
        let engine = Engine::new(vector_params(&v));
        let cases = v["cases"].as_array().expect("cases");
        assert!(!cases.is_empty());
        let mut out = Vec::new();
        for (i, case) in cases.iter().enumerate() {
            let req = hex(case["request"].as_str().unwrap());
            let want = hex(case["response"].as_str().unwrap());
            let txn = Txn::parse(&req).unwrap_or_else(|e| panic!("case {i}: {e:?}"));
            out.clear();
            engine.decide(&txn).encode_frame(&mut out);
            assert_eq!(
                &out[..HEADER_LEN],
                &(want.len() as u32).to_be_bytes(),
                "case {i}"
            );
            assert_eq!(&out[HEADER_LEN..], &want[..], "case {i}");
        }
    }

    /// Every malformed frame of the shared vectors is rejected by the framing or
    /// the payload check.
    #[test]
    fn shared_vectors_malformed() {
        let v = vectors();
        for case in v["malformed"].as_array().expect("malformed") {
            let why = case["why"].as_str().unwrap();
            let frame = hex(case["frame"].as_str().unwrap());
            let header: [u8; HEADER_LEN] = frame[..HEADER_LEN].try_into().unwrap();
            let body = &frame[HEADER_LEN..];
            let rejected = match proto::payload_len(header) {
                Err(_) => true,
                // Shorter than announced: truncated.
                Ok(len) if body.len() < len => true,
                Ok(len) => Txn::parse(&body[..len]).is_err(),
            };
            assert!(rejected, "{why}: accepted");
        }
    }

    #[test]
    fn timestamps_near_u64_max_do_not_wrap() {
        let e = Engine::new(Params {
            accounts: 0,
            window: 4,
            merchants: 1,
            rules: 9,
            seed: 0,
        });
        let t = Txn {
            request_id: 1,
            account_id: u64::MAX,
            merchant_id: 0,
            amount_cents: 1,
            country: *b"ZZ",
            device_id: 0,
            timestamp_ms: u64::MAX,
        };
        e.decide(&t);
        let shard = lock(&e.accounts[shard_of(u64::MAX)]);
        let f = features(&shard[&u64::MAX], &Merchant::default(), &t);
        // One entry at ts = 2^64-1: inside both velocity windows, recency 60.
        assert_eq!((f[0], f[1], f[8]), (1, 1, 60));
    }
}
