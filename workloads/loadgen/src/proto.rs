//! Deterministic generation of realistic TXN frames and parsing of DECISION frames
//! (workloads/riskd/PROTOCOL.md).

/// A request on the wire: u32 length (47) + 47-byte TXN payload.
pub const REQ_FRAME_LEN: usize = 4 + 47;
/// Largest payload the protocol allows.
pub const MAX_PAYLOAD: usize = 4096;

/// splitmix64: tiny, fast, and good enough for load generation (also the generator
/// of the server's pre-load, see PROTOCOL.md).
#[derive(Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, n) (Lemire's multiply-shift; the bias is negligible here).
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

const OTHER_COUNTRIES: [&[u8; 2]; 10] = [
    b"GB", b"DE", b"FR", b"JP", b"BR", b"IN", b"CN", b"CA", b"MX", b"AU",
];

/// Per-connection request generator. The payload sequence depends only on
/// (seed, connection index, request index, timestamp), so every server variant sees
/// the same requests.
pub struct TxnGen {
    rng: SplitMix64,
    accounts: u64,
    merchants: u64,
    next_id: u64,
}

impl TxnGen {
    pub fn new(seed: u64, conn: usize, accounts: u64, merchants: u64) -> Self {
        // Decorrelate the per-connection streams: mix seed and index through splitmix.
        let mut s = SplitMix64::new(seed ^ 0x005E_ED0F_10AD_6E4E);
        let a = s.next_u64();
        let mut s2 = SplitMix64::new(
            (conn as u64)
                .wrapping_add(1)
                .wrapping_mul(0xD1B5_4A32_D192_ED03),
        );
        let b = s2.next_u64();
        TxnGen {
            rng: SplitMix64::new(a ^ b),
            accounts,
            merchants,
            // Unique across connections, increasing within one.
            next_id: ((conn as u64) << 40) + 1,
        }
    }

    /// Fill `buf` with one TXN frame; returns its request_id.
    pub fn fill(&mut self, ts_ms: u64, buf: &mut [u8; REQ_FRAME_LEN]) -> u64 {
        let r = &mut self.rng;
        let id = self.next_id;
        self.next_id += 1;

        // Account: uniform over the pre-loaded ones; 1 % are accounts the server has
        // never seen (created on first use).
        let account = if r.below(100) == 0 {
            self.accounts + r.below(self.accounts.max(1000))
        } else {
            r.below(self.accounts)
        };
        let merchant = r.below(self.merchants) as u32;
        // Amount in cents, skewed: 85 % in 1..200 $ (triangular towards the small end),
        // 14 % in 200..2000 $, 1 % large (2000..100000 $).
        let bucket = r.below(100);
        let amount: u64 = if bucket < 85 {
            100 + r.below(19_901).min(r.below(19_901))
        } else if bucket < 99 {
            20_000 + r.below(180_000)
        } else {
            200_000 + r.below(9_800_000)
        };
        // Country: mostly the home country.
        let country: &[u8; 2] = if r.below(10) < 9 {
            b"US"
        } else {
            OTHER_COUNTRIES[r.below(OTHER_COUNTRIES.len() as u64) as usize]
        };
        // Device: one of the account's usual four, sometimes a new one.
        let device = account.wrapping_mul(4).wrapping_add(r.below(5));

        buf[0..4].copy_from_slice(&47u32.to_be_bytes());
        buf[4] = 0x01;
        buf[5..13].copy_from_slice(&id.to_be_bytes());
        buf[13..21].copy_from_slice(&account.to_be_bytes());
        buf[21..25].copy_from_slice(&merchant.to_be_bytes());
        buf[25..33].copy_from_slice(&amount.to_be_bytes());
        buf[33..35].copy_from_slice(country);
        buf[35..43].copy_from_slice(&device.to_be_bytes());
        buf[43..51].copy_from_slice(&ts_ms.to_be_bytes());
        id
    }
}

/// Check a DECISION payload (without the length prefix) against the request id.
/// Returns the decision (0 approve, 1 review, 2 decline) or a reason.
pub fn check_decision(payload: &[u8], want_id: u64) -> Result<u8, &'static str> {
    if payload.len() < 15 {
        return Err("short DECISION payload");
    }
    if payload[0] != 0x81 {
        return Err("response type is not 0x81");
    }
    let id = u64::from_be_bytes(payload[1..9].try_into().expect("8 bytes"));
    if id != want_id {
        return Err("request_id mismatch");
    }
    let decision = payload[9];
    if decision > 2 {
        return Err("decision out of range");
    }
    let score = u16::from_be_bytes([payload[10], payload[11]]);
    if score > 1000 {
        return Err("score out of range");
    }
    let fired = u16::from_be_bytes([payload[12], payload[13]]);
    let listed = payload[14] as usize;
    if listed != usize::from(fired.min(32)) || payload.len() != 15 + 2 * listed {
        return Err("inconsistent rule list");
    }
    Ok(decision)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_matches_protocol() {
        // First outputs of splitmix64 seeded with 42, as in reference.py.
        let mut r = SplitMix64::new(42);
        assert_eq!(r.next_u64(), 13679457532755275413);
    }

    #[test]
    fn frames_are_valid() {
        let mut g = TxnGen::new(1, 3, 100, 10);
        let mut buf = [0u8; REQ_FRAME_LEN];
        for i in 0..10_000 {
            let id = g.fill(32_000 + i, &mut buf);
            assert_eq!(&buf[0..4], &47u32.to_be_bytes());
            assert_eq!(buf[4], 1);
            assert_eq!(u64::from_be_bytes(buf[5..13].try_into().unwrap()), id);
            let amount = u64::from_be_bytes(buf[25..33].try_into().unwrap());
            assert!((100..=10_000_000).contains(&amount));
            assert!(buf[33].is_ascii_uppercase() && buf[34].is_ascii_uppercase());
            let merchant = u32::from_be_bytes(buf[21..25].try_into().unwrap());
            assert!(merchant < 10);
        }
    }

    #[test]
    fn decision_check() {
        let mut p = vec![0x81u8];
        p.extend_from_slice(&7u64.to_be_bytes());
        p.extend_from_slice(&[1, 0, 50, 0, 1, 1, 0, 3]);
        assert_eq!(check_decision(&p, 7), Ok(1));
        assert!(check_decision(&p, 8).is_err());
        p[14] = 2;
        assert!(check_decision(&p, 7).is_err());
    }
}
