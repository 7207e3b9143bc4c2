//! Figures and how they are printed: median and range of paired ratios, the tables, the targets.

use std::time::Duration;

/// Median and spread of a set of figures: the interquartile range, or the whole range below 5
/// figures (where quartiles say little).
#[derive(Clone, Copy, Debug)]
pub struct Spread {
    pub median: f64,
    pub low: f64,
    pub high: f64,
}

impl Spread {
    pub fn new(mut values: Vec<f64>) -> Self {
        assert!(!values.is_empty(), "a spread of no figures");
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let median = if n % 2 == 1 {
            values[n / 2]
        } else {
            (values[n / 2 - 1] + values[n / 2]) / 2.0
        };
        let (low, high) = if n < 5 {
            (values[0], values[n - 1])
        } else {
            (values[(n - 1) / 4], values[(3 * (n - 1)).div_ceil(4)])
        };
        Self { median, low, high }
    }

    /// Seconds.
    pub fn of(times: &[Duration]) -> Self {
        Self::new(times.iter().map(Duration::as_secs_f64).collect())
    }

    /// The ratios of paired runs (the same repetition); None when either side has no runs.
    pub fn ratios(a: &[Duration], b: &[Duration]) -> Option<Self> {
        if a.is_empty() || b.is_empty() {
            return None;
        }
        let ratios = a
            .iter()
            .zip(b)
            .map(|(a, b)| a.as_secs_f64() / b.as_secs_f64());
        Some(Self::new(ratios.collect()))
    }

    pub fn ratio_text(&self) -> String {
        format!("{:.2} ({:.2}-{:.2})", self.median, self.low, self.high)
    }

    pub fn ms_text(&self) -> String {
        let ms = |s: f64| {
            if s < 0.1 {
                format!("{:.2}", s * 1e3)
            } else {
                format!("{:.0}", s * 1e3)
            }
        };
        format!("{} ({}-{})", ms(self.median), ms(self.low), ms(self.high))
    }
}

/// A paired ratio as text, `n/a` when not measured.
pub fn ratio_text(ratio: Option<Spread>) -> String {
    ratio.map_or_else(|| "n/a".to_owned(), |r| r.ratio_text())
}

/// A table with a header row, columns padded to their widest cell.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, w))| {
                if i == 0 {
                    format!("{c:<w$}")
                } else {
                    format!("{c:>w$}")
                }
            })
            .collect();
        println!("  {}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    println!();
}

/// The `accuracy` objective against attacking every point every step.
pub struct AccuracyObjective {
    pub ratio: Spread,
    /// The same for the floor, its batch cut to the unbroken points before each step.
    pub floor_ratio: Spread,
    /// Points still unbroken after each iterate 0..=steps (0: the random start).
    pub survival: Vec<usize>,
    pub n: usize,
    pub robust: usize,
}

impl AccuracyObjective {
    /// What the `accuracy` objective would cost if a step cost exactly its points: the points
    /// each gradient step attacks (those unbroken before it), summed over the steps, over points
    /// x steps.
    pub fn ideal(&self) -> f64 {
        let steps = self.survival.len() - 1;
        let attacked: usize = self.survival[..steps].iter().sum();
        attacked as f64 / (self.n * steps) as f64
    }

    pub fn print(&self, steps: u32) {
        println!(
            "accuracy objective: digits_cnn, the {} test digits, PGD-{steps} eps 0.1, batches of at most 256",
            self.n
        );
        println!(
            "  cost / every point every step: {}; ideal {:.3}; robust accuracy {:.2}%",
            self.ratio.ratio_text(),
            self.ideal(),
            100.0 * self.robust as f64 / self.n as f64
        );
        println!(
            "  the floor, its batch cut the same way / whole: {}",
            self.floor_ratio.ratio_text()
        );
        let curve: Vec<String> = self.survival.iter().map(usize::to_string).collect();
        println!(
            "  unbroken after iterate 0 (start) .. {steps}: {}",
            curve.join(" ")
        );
        println!();
    }
}

/// Concurrent single-sample requests with batching on (default settings, and batches sized for
/// the clients) and off.
pub struct Batching {
    pub requests: usize,
    pub on: Spread,
    pub sized: Spread,
    pub off: Spread,
    /// Throughput with batching on over off, per round.
    pub speedup: Spread,
    pub sized_speedup: Spread,
}

impl Batching {
    pub fn print(&self, steps: u32) {
        println!(
            "batching: {} concurrent single-sample PGD-{steps} requests on digits_cnn, ms per round",
            self.requests
        );
        println!(
            "  on, defaults (batches up to 256, waiting up to 1 ms): {}; throughput / off: {}",
            self.on.ms_text(),
            self.speedup.ratio_text()
        );
        println!(
            "  on, batches up to 64, waiting up to 2 ms: {}; throughput / off: {}",
            self.sized.ms_text(),
            self.sized_speedup.ratio_text()
        );
        println!("  off (--max-batch-size 1): {}", self.off.ms_text());
        println!();
    }
}

/// Resident memory of the server and its worker.
pub struct Memory {
    /// Whether the peaks were reset before the large request (else they are peaks since start).
    pub peaks_reset: bool,
    /// Resident bytes of the server and the worker before the large request, and their peaks
    /// during it.
    pub before: [u64; 2],
    pub peaks: [u64; 2],
    /// (requests done, server resident bytes, worker resident bytes), after each hundred.
    pub series: Vec<(usize, u64, u64)>,
    pub requests: usize,
}

/// Growth over the repeated requests counts from this many requests on (the first ones warm up
/// allocator pools and caches).
const GROWTH_FROM: usize = 200;

impl Memory {
    /// Growth of resident memory per process between `GROWTH_FROM` requests and the last.
    pub fn growth(&self) -> [i64; 2] {
        let from = self.series.iter().find(|s| s.0 >= GROWTH_FROM);
        match (from, self.series.last()) {
            (Some(a), Some(b)) => [b.1 as i64 - a.1 as i64, b.2 as i64 - a.2 as i64],
            _ => [0, 0],
        }
    }

    pub fn print(&self, steps: u32) {
        println!(
            "memory: one 256-sample PGD-{steps} request on cifar_resnet (host memory){}",
            if self.peaks_reset {
                ""
            } else {
                "; peaks since start, they could not be reset"
            }
        );
        println!(
            "  peak resident: server {:.0} MiB, worker {:.0} MiB (before the request: {:.0} and {:.0} MiB)",
            mib(self.peaks[0] as i64),
            mib(self.peaks[1] as i64),
            mib(self.before[0] as i64),
            mib(self.before[1] as i64),
        );
        println!(
            "  resident MiB server / worker over {} small requests (single-sample PGD-5 on digits_cnn):",
            self.requests
        );
        let points: Vec<String> = self
            .series
            .iter()
            .map(|(n, s, w)| format!("{n}: {:.1} / {:.1}", mib(*s as i64), mib(*w as i64)))
            .collect();
        for chunk in points.chunks(5) {
            println!("    {}", chunk.join(",  "));
        }
        println!();
    }
}

pub fn mib(bytes: i64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

/// One goal, met or missed, with the figure that decides it.
pub fn print_target(met: bool, goal: &str, figure: &str) {
    let verdict = if met { "met   " } else { "MISSED" };
    println!("  {verdict} {goal}: {figure}");
}

/// The CPU model, the core count and today's date.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let date = std::process::Command::new("date")
        .arg("+%Y-%m-%d")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    format!("{cpu}, {cores} cores, {date}")
}
