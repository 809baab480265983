//! The one-line JSON report printed at shutdown (PROTOCOL.md, "Command line").
//!
//! Only figures this process can actually measure are included; a figure that
//! cannot be read is left out, never written as 0.

use std::fmt::Write as _;

use crate::server::Counts;

/// `{"lang": "rust", "requests": N, "malformed": N, "rss_hwm_bytes": N, ...}`
pub fn shutdown_line(counts: Counts) -> String {
    let mut line = format!(
        "{{\"lang\": \"rust\", \"requests\": {}, \"malformed\": {}",
        counts.requests, counts.malformed
    );
    let mut field = |name: &str, value: u64| {
        // Writing to a String cannot fail.
        let _ = write!(line, ", \"{name}\": {value}");
    };
    if let Some(hwm) = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| vm_hwm_bytes(&s))
    {
        field("rss_hwm_bytes", hwm);
    }
    if let Some(m) = malloc::figures() {
        field("malloc_arena_bytes", m.arena);
        field("malloc_in_use_bytes", m.in_use);
        field("malloc_mmap_bytes", m.mmap);
    }
    line.push('}');
    line
}

/// `VmHWM` (peak resident set size) from the text of /proc/self/status, in bytes.
fn vm_hwm_bytes(status: &str) -> Option<u64> {
    let value = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
    let kib: u64 = value.trim().strip_suffix("kB")?.trim_end().parse().ok()?;
    kib.checked_mul(1024)
}

/// Allocator figures. Rust's default global allocator (`std::alloc::System`) is the
/// C library's malloc, so on glibc `mallinfo2()` describes every heap allocation
/// this program makes (tokio's included), summed over all malloc arenas.
mod malloc {
    pub struct Figures {
        /// `arena`: bytes obtained from the system for the arenas (sbrk/mmap'ed
        /// heaps), excluding chunks mmap'ed individually.
        pub arena: u64,
        /// `uordblks`: bytes in allocated chunks within the arenas.
        pub in_use: u64,
        /// `hblkhd`: bytes in chunks mmap'ed individually (large allocations).
        pub mmap: u64,
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    pub fn figures() -> Option<Figures> {
        // SAFETY: mallinfo2 takes no arguments and only reads malloc's own
        // bookkeeping under malloc's locks (glibc >= 2.33).
        let mi = unsafe { libc::mallinfo2() };
        Some(Figures {
            arena: mi.arena as u64,
            in_use: mi.uordblks as u64,
            mmap: mi.hblkhd as u64,
        })
    }

    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    pub fn figures() -> Option<Figures> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vm_hwm() {
        let status = "Name:\triskd-rust\nVmPeak:\t  200 kB\nVmHWM:\t   12345 kB\nVmRSS:\t 1 kB\n";
        assert_eq!(vm_hwm_bytes(status), Some(12345 * 1024));
        assert_eq!(vm_hwm_bytes("VmRSS:\t1 kB\n"), None);
        assert_eq!(vm_hwm_bytes("VmHWM:\tlots kB\n"), None);
    }

    #[test]
    fn line_shape() {
        let line = shutdown_line(Counts {
            requests: 7,
            malformed: 2,
        });
        assert!(line.starts_with("{\"lang\": \"rust\", \"requests\": 7, \"malformed\": 2"));
        assert!(line.ends_with('}') && !line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert!(v["rss_hwm_bytes"].as_u64().unwrap() > 0);
    }
}
