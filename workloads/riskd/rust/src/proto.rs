//! Wire format of PROTOCOL.md: length-prefixed frames, the TXN request and the
//! DECISION response. Everything is big-endian.

/// Largest payload a frame may announce.
pub const MAX_PAYLOAD: usize = 4096;
/// Size of the frame header (u32 payload length).
pub const HEADER_LEN: usize = 4;
/// Payload size of a TXN request.
pub const TXN_LEN: usize = 47;
/// Type byte of a TXN request.
pub const TXN_TYPE: u8 = 0x01;
/// Type byte of a DECISION response.
pub const DECISION_TYPE: u8 = 0x81;
/// Largest valid `amount_cents`.
pub const MAX_AMOUNT: u64 = 1_000_000_000_000;
/// A DECISION lists at most this many rule ids.
pub const MAX_LISTED: usize = 32;
/// Size of a DECISION payload without rule ids.
const DECISION_FIXED_LEN: usize = 15;
/// Largest DECISION frame, header included.
pub const MAX_DECISION_FRAME: usize = HEADER_LEN + DECISION_FIXED_LEN + 2 * MAX_LISTED;

/// Why a frame was rejected. The server closes the connection in every case; the
/// reason only matters to tests and diagnostics. (A frame cut short by the peer
/// closing the connection is rejected the same way, by the reader.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// Announced payload length of 0 or above [`MAX_PAYLOAD`].
    Length,
    /// Payload of the wrong size for its type.
    Size,
    /// Unknown type byte.
    Type,
    /// `amount_cents` outside 1 ..= [`MAX_AMOUNT`].
    Amount,
    /// `country` is not two ASCII upper-case letters.
    Country,
}

/// Validates a frame header and returns the payload length it announces.
pub fn payload_len(header: [u8; HEADER_LEN]) -> Result<usize, Malformed> {
    // u32 -> usize is lossless on every target riskd builds for (>= 32-bit).
    let len = u32::from_be_bytes(header) as usize;
    if (1..=MAX_PAYLOAD).contains(&len) {
        Ok(len)
    } else {
        Err(Malformed::Length)
    }
}

/// A decoded, validated TXN request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Txn {
    pub request_id: u64,
    pub account_id: u64,
    pub merchant_id: u32,
    pub amount_cents: u64,
    pub country: [u8; 2],
    pub device_id: u64,
    pub timestamp_ms: u64,
}

impl Txn {
    /// Decodes and validates a request payload (the bytes after the header).
    pub fn parse(payload: &[u8]) -> Result<Self, Malformed> {
        let p: &[u8; TXN_LEN] = payload.try_into().map_err(|_| Malformed::Size)?;
        if p[0] != TXN_TYPE {
            return Err(Malformed::Type);
        }
        let txn = Txn {
            request_id: be_u64(p, 1),
            account_id: be_u64(p, 9),
            merchant_id: u32::from_be_bytes([p[17], p[18], p[19], p[20]]),
            amount_cents: be_u64(p, 21),
            country: [p[29], p[30]],
            device_id: be_u64(p, 31),
            timestamp_ms: be_u64(p, 39),
        };
        if !(1..=MAX_AMOUNT).contains(&txn.amount_cents) {
            return Err(Malformed::Amount);
        }
        if !txn.country.iter().all(u8::is_ascii_uppercase) {
            return Err(Malformed::Country);
        }
        Ok(txn)
    }
}

fn be_u64(p: &[u8; TXN_LEN], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&p[at..at + 8]);
    u64::from_be_bytes(b)
}

/// Outcome of the rules for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Approve = 0,
    Review = 1,
    Decline = 2,
}

/// A DECISION response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub request_id: u64,
    pub verdict: Verdict,
    /// 0 ..= 1000.
    pub score: u16,
    /// Number of rules that fired.
    pub fired_total: u16,
    /// Ids of the first `min(fired_total, 32)` fired rules, ascending; only the
    /// first `listed()` entries are meaningful.
    pub fired_ids: [u16; MAX_LISTED],
}

impl Decision {
    /// Number of rule ids carried in the response.
    pub fn listed(&self) -> usize {
        usize::from(self.fired_total).min(MAX_LISTED)
    }

    /// Appends the complete response frame (header and payload) to `out`.
    pub fn encode_frame(&self, out: &mut Vec<u8>) {
        let listed = self.listed();
        let payload_len = DECISION_FIXED_LEN + 2 * listed;
        out.reserve(HEADER_LEN + payload_len);
        // payload_len <= 79, so both narrowing conversions below are exact.
        out.extend_from_slice(&(payload_len as u32).to_be_bytes());
        out.push(DECISION_TYPE);
        out.extend_from_slice(&self.request_id.to_be_bytes());
        out.push(self.verdict as u8);
        out.extend_from_slice(&self.score.to_be_bytes());
        out.extend_from_slice(&self.fired_total.to_be_bytes());
        out.push(listed as u8);
        for id in &self.fired_ids[..listed] {
            out.extend_from_slice(&id.to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txn_payload(amount: u64, country: &[u8; 2]) -> Vec<u8> {
        let mut p = vec![TXN_TYPE];
        p.extend_from_slice(&7u64.to_be_bytes());
        p.extend_from_slice(&8u64.to_be_bytes());
        p.extend_from_slice(&9u32.to_be_bytes());
        p.extend_from_slice(&amount.to_be_bytes());
        p.extend_from_slice(country);
        p.extend_from_slice(&10u64.to_be_bytes());
        p.extend_from_slice(&11u64.to_be_bytes());
        p
    }

    #[test]
    fn header_bounds() {
        assert_eq!(payload_len([0, 0, 0, 0]), Err(Malformed::Length));
        assert_eq!(payload_len([0, 0, 0, 1]), Ok(1));
        assert_eq!(payload_len([0, 0, 0x10, 0]), Ok(4096));
        assert_eq!(payload_len([0, 0, 0x10, 1]), Err(Malformed::Length));
        assert_eq!(payload_len([0xff; 4]), Err(Malformed::Length));
    }

    #[test]
    fn parse_fields_and_limits() {
        let t = Txn::parse(&txn_payload(5, b"US")).unwrap();
        assert_eq!(
            t,
            Txn {
                request_id: 7,
                account_id: 8,
                merchant_id: 9,
                amount_cents: 5,
                country: *b"US",
                device_id: 10,
                timestamp_ms: 11,
            }
        );
        assert!(Txn::parse(&txn_payload(MAX_AMOUNT, b"AZ")).is_ok());
        assert_eq!(Txn::parse(&txn_payload(0, b"US")), Err(Malformed::Amount));
        assert_eq!(
            Txn::parse(&txn_payload(MAX_AMOUNT + 1, b"US")),
            Err(Malformed::Amount)
        );
        for bad in [b"us", b"U@", b"[S", b"U\0"] {
            assert_eq!(Txn::parse(&txn_payload(5, bad)), Err(Malformed::Country));
        }
        let mut p = txn_payload(5, b"US");
        p[0] = 2;
        assert_eq!(Txn::parse(&p), Err(Malformed::Type));
        assert_eq!(Txn::parse(&p[..46]), Err(Malformed::Size));
        p.push(0);
        assert_eq!(Txn::parse(&p), Err(Malformed::Size));
    }

    #[test]
    fn encode_lists_at_most_32() {
        let mut d = Decision {
            request_id: 0x0102_0304_0506_0708,
            verdict: Verdict::Decline,
            score: 1000,
            fired_total: 40,
            fired_ids: [0; MAX_LISTED],
        };
        for (i, id) in d.fired_ids.iter_mut().enumerate() {
            *id = i as u16;
        }
        let mut out = Vec::new();
        d.encode_frame(&mut out);
        assert_eq!(out.len(), MAX_DECISION_FRAME);
        assert_eq!(&out[..4], &79u32.to_be_bytes());
        assert_eq!(&out[4..13], &[0x81, 1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&out[13..19], &[2, 0x03, 0xe8, 0, 40, 32]);

        d.fired_total = 0;
        out.clear();
        d.encode_frame(&mut out);
        assert_eq!(out.len(), HEADER_LEN + 15);
        assert_eq!(out[18], 0);
    }
}
