//! Summary JSON, the human one-liner and the HdrHistogram interval logs.

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{Duration, SystemTime};

use hdrhistogram::Histogram;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;

use crate::args::Args;
use crate::conn::{ConnResult, HIGHEST_US, new_hist};

pub struct Summary {
    pub max_mode: bool,
    pub requested_rps: Option<f64>,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub connections: usize,
    pub timeout_ms: u64,
    pub target: String,
    pub seed: u64,
    pub sent: u64,
    pub attempted: u64,
    pub responses: u64,
    pub errors: u64,
    pub timeouts: u64,
    pub unsent: u64,
    pub decisions: [u64; 3],
    pub corrected: Histogram<u64>,
    pub uncorrected: Histogram<u64>,
    pub send_lag: Histogram<u64>,
    pub wake_lag: Histogram<u64>,
    pub first_error: Option<String>,
}

impl Summary {
    /// Merge the per-connection results (histograms are added, never percentiles averaged).
    pub fn merge(a: &Args, rs: &[ConnResult]) -> Summary {
        let mut s = Summary {
            max_mode: a.max,
            requested_rps: if a.max { None } else { a.rate },
            duration_s: a.duration_s,
            warmup_s: a.warmup_s,
            connections: a.connections,
            timeout_ms: a.timeout_ms,
            target: a.target.clone(),
            seed: a.seed,
            sent: 0,
            attempted: 0,
            responses: 0,
            errors: 0,
            timeouts: 0,
            unsent: 0,
            decisions: [0; 3],
            corrected: new_hist(),
            uncorrected: new_hist(),
            send_lag: new_hist(),
            wake_lag: new_hist(),
            first_error: None,
        };
        for r in rs {
            s.sent += r.sent;
            s.attempted += r.attempted;
            s.responses += r.responses;
            s.errors += r.errors;
            s.timeouts += r.timeouts;
            s.unsent += r.unsent;
            for i in 0..3 {
                s.decisions[i] += r.decisions[i];
            }
            s.corrected.add(&r.corrected).expect("same bounds");
            s.uncorrected.add(&r.uncorrected).expect("same bounds");
            s.send_lag.add(&r.send_lag).expect("same bounds");
            s.wake_lag.add(&r.wake_lag).expect("same bounds");
            if s.first_error.is_none() {
                s.first_error.clone_from(&r.first_error);
            }
        }
        s
    }

    pub fn achieved_rps(&self) -> f64 {
        self.responses as f64 / self.duration_s
    }

    pub fn to_json(&self) -> String {
        let mut o = JsonObj::default();
        o.str("mode", if self.max_mode { "max" } else { "open" });
        o.raw("requested_rps", &opt_f64(self.requested_rps));
        o.raw("achieved_rps", &fmt_f64(self.achieved_rps()));
        o.raw("duration_s", &fmt_f64(self.duration_s));
        o.raw("warmup_s", &fmt_f64(self.warmup_s));
        o.raw("connections", &self.connections.to_string());
        o.raw("timeout_ms", &self.timeout_ms.to_string());
        o.str("target", &self.target);
        o.raw("seed", &self.seed.to_string());
        // Open loop: every slot of the measured period ends up as exactly one of
        // responses, errors, timeouts or requests_unsent.
        if self.max_mode {
            o.raw("requests_scheduled", "null");
        } else {
            o.raw(
                "requests_scheduled",
                &(self.attempted + self.unsent).to_string(),
            );
        }
        o.raw("requests_sent", &self.sent.to_string());
        o.raw("responses", &self.responses.to_string());
        o.raw("errors", &self.errors.to_string());
        o.raw("timeouts", &self.timeouts.to_string());
        o.raw("requests_unsent", &self.unsent.to_string());
        hist_fields(&mut o, "", &self.corrected);
        hist_fields(&mut o, "uncorrected_", &self.uncorrected);
        // Diagnostics of the schedule (open loop): send_lag = actual - intended send
        // time of every request (includes waiting behind a slow answer); wake_lag = the
        // same for requests whose connection was idle in time, i.e. the client's own
        // lateness, which it adds to the corrected latencies.
        for (name, h) in [("send_lag", &self.send_lag), ("wake_lag", &self.wake_lag)] {
            for (q, p) in [("p50", 50.0), ("p99", 99.0), ("p999", 99.9), ("max", 100.0)] {
                let v = if self.max_mode { None } else { pct(h, p) };
                o.raw(&format!("{name}_{q}_us"), &opt_u64(v));
            }
        }
        o.raw(
            "decisions",
            &format!(
                "{{\"approve\": {}, \"review\": {}, \"decline\": {}}}",
                self.decisions[0], self.decisions[1], self.decisions[2]
            ),
        );
        o.raw("latency_unit", "\"us\"");
        o.raw("histogram_highest_us", &HIGHEST_US.to_string());
        match &self.first_error {
            Some(e) => o.str("first_error", e),
            None => o.raw("first_error", "null"),
        }
        o.finish()
    }

    pub fn human_line(&self) -> String {
        let p = |h: &Histogram<u64>, q: f64| pct(h, q).map_or("-".to_string(), |v| v.to_string());
        let mode = match self.requested_rps {
            Some(r) => format!("open {r} rps"),
            None => "max".to_string(),
        };
        let mut line = format!(
            "loadgen: {mode} x {} conns, {} s: achieved {:.1} rps, {} responses, {} errors, {} timeouts",
            self.connections,
            self.duration_s,
            self.achieved_rps(),
            self.responses,
            self.errors,
            self.timeouts
        );
        if self.unsent > 0 {
            let _ = write!(line, ", {} unsent", self.unsent);
        }
        let _ = write!(
            line,
            "; latency us p50 {} p99 {} p99.9 {} max {} (uncorrected p99 {} p99.9 {} max {})",
            p(&self.corrected, 50.0),
            p(&self.corrected, 99.0),
            p(&self.corrected, 99.9),
            p(&self.corrected, 100.0),
            p(&self.uncorrected, 99.0),
            p(&self.uncorrected, 99.9),
            p(&self.uncorrected, 100.0),
        );
        if !self.max_mode {
            let _ = write!(
                line,
                "; client lateness us p50 {} p99 {}",
                p(&self.wake_lag, 50.0),
                p(&self.wake_lag, 99.0)
            );
        }
        if let Some(e) = &self.first_error {
            let _ = write!(line, "; first error: {e}");
        }
        line
    }
}

fn pct(h: &Histogram<u64>, p: f64) -> Option<u64> {
    if h.is_empty() {
        None
    } else if p >= 100.0 {
        Some(h.max())
    } else {
        // value_at_percentile(99.9) can pick one rank too high through floating-point
        // error in p/100; the quantile form ranks exactly (matches Python's nearest rank).
        Some(h.value_at_quantile(p / 100.0))
    }
}

fn hist_fields(o: &mut JsonObj, prefix: &str, h: &Histogram<u64>) {
    for (name, p) in [
        ("p50", 50.0),
        ("p90", 90.0),
        ("p99", 99.0),
        ("p999", 99.9),
        ("max", 100.0),
    ] {
        o.raw(&format!("{prefix}{name}_us"), &opt_u64(pct(h, p)));
    }
    let mean = if h.is_empty() { None } else { Some(h.mean()) };
    o.raw(&format!("{prefix}mean_us"), &opt_f64(mean));
}

fn opt_u64(v: Option<u64>) -> String {
    v.map_or("null".to_string(), |v| v.to_string())
}

fn fmt_f64(v: f64) -> String {
    if v.is_finite() {
        let s = format!("{:.3}", v);
        let s = s.trim_end_matches('0').trim_end_matches('.');
        s.to_string()
    } else {
        "null".to_string()
    }
}

fn opt_f64(v: Option<f64>) -> String {
    v.map_or("null".to_string(), fmt_f64)
}

#[derive(Default)]
struct JsonObj {
    body: String,
}

impl JsonObj {
    fn raw(&mut self, k: &str, v: &str) {
        if !self.body.is_empty() {
            self.body.push_str(",\n");
        }
        let _ = write!(self.body, "  {}: {}", json_str(k), v);
    }
    fn str(&mut self, k: &str, v: &str) {
        let v = json_str(v);
        self.raw(k, &v);
    }
    fn finish(self) -> String {
        format!("{{\n{}\n}}\n", self.body)
    }
}

fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for ch in s.chars() {
        match ch {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// Write one histogram per second of the measured period in the standard
/// HdrHistogram interval-log format (V2 deflate-compressed, base64), readable by
/// HistogramLogReader in Java/Python/Rust. StartTime and BaseTime are the start of
/// the measured period, so interval timestamps are seconds since then.
pub fn write_interval_log(
    path: &str,
    intervals: &[(Histogram<u64>, Histogram<u64>)],
    corrected: bool,
    measure_start: SystemTime,
    duration_s: f64,
) -> Result<(), String> {
    let err = |e: String| format!("cannot write {path}: {e}");
    let mut out: Vec<u8> = Vec::new();
    let mut ser = V2DeflateSerializer::new();
    {
        let what = if corrected {
            "corrected for coordinated omission (from the intended send time)"
        } else {
            "uncorrected (from the actual send time)"
        };
        let mut b = IntervalLogWriterBuilder::new();
        b.add_comment(&format!(
            "loadgen interval log: latency in microseconds, {what}"
        ))
        .add_comment("one histogram per second of the measured period (warm-up excluded)")
        .with_start_time(measure_start)
        .with_base_time(measure_start);
        b.begin_log_with(&mut out, &mut ser)
            .map_err(|e| err(e.to_string()))?;
    }
    // The Rust writer leaves out the legend line that the Java/Python writers emit.
    out.extend_from_slice(
        b"\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"\n",
    );
    {
        let mut w = IntervalLogWriterBuilder::new()
            .begin_log_with(&mut out, &mut ser)
            .map_err(|e| err(e.to_string()))?;
        for (i, (c, u)) in intervals.iter().enumerate() {
            let h = if corrected { c } else { u };
            let len = (duration_s - i as f64).clamp(0.001, 1.0);
            w.write_histogram(
                h,
                Duration::from_secs(i as u64),
                Duration::from_secs_f64(len),
                None,
            )
            .map_err(|e| err(e.to_string()))?;
        }
    }
    let mut f = std::fs::File::create(path).map_err(|e| err(e.to_string()))?;
    f.write_all(&out).map_err(|e| err(e.to_string()))?;
    Ok(())
}
