//! wrk (the HTTP load generator, installed by `cargo xtask setup`): running it and parsing
//! its `--latency` report (requests/s, p50 and p99).

use std::process::Command;

/// What one wrk run reported.
#[derive(Clone, Debug, Default)]
pub struct Wrk {
    /// Requests/sec.
    pub requests_per_s: f64,
    /// Latency percentiles, µs.
    pub p50_us: f64,
    pub p99_us: f64,
    /// Requests completed.
    pub requests: u64,
    /// Socket errors and non-2xx/3xx responses (any is a broken run).
    pub errors: u64,
}

/// A wrk duration (`75.00us`, `1.20ms`, `2.00s`) in µs.
pub fn duration_us(text: &str) -> Option<f64> {
    for (unit, scale) in [("us", 1.0), ("ms", 1e3), ("m", 60e6), ("s", 1e6)] {
        if let Some(value) = text.strip_suffix(unit) {
            return value.parse::<f64>().ok().map(|v| v * scale);
        }
    }
    None
}

/// Parses wrk's `--latency` output.
pub fn parse_wrk(output: &str) -> Result<Wrk, String> {
    let mut wrk = Wrk::default();
    let (mut rps, mut p50, mut p99) = (None, None, None);
    for line in output.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", value] => rps = value.parse().ok(),
            ["50%", value] => p50 = duration_us(value),
            ["99%", value] => p99 = duration_us(value),
            [count, "requests", "in", ..] => wrk.requests = count.parse().unwrap_or(0),
            ["Non-2xx", "or", "3xx", "responses:", n] => {
                wrk.errors += n.parse::<u64>().unwrap_or(1)
            }
            ["Socket", "errors:", rest @ ..] => {
                // connect 0, read 0, write 0, timeout 0
                wrk.errors += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            _ => {}
        }
    }
    match (rps, p50, p99) {
        (Some(rps), Some(p50), Some(p99)) => {
            wrk.requests_per_s = rps;
            wrk.p50_us = p50;
            wrk.p99_us = p99;
            Ok(wrk)
        }
        _ => Err(format!("cannot parse wrk's output:\n{output}")),
    }
}

/// Runs `wrk -t<threads> -c<connections> -d<secs>s --latency url` and parses its output.
pub fn run_wrk(url: &str, threads: u32, connections: u32, secs: u64) -> Result<Wrk, String> {
    let out = Command::new("wrk")
        .args([
            format!("-t{threads}"),
            format!("-c{connections}"),
            format!("-d{secs}s"),
            "--latency".to_owned(),
            url.to_owned(),
        ])
        .output()
        .map_err(|e| format!("running wrk: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "wrk failed ({}): {text}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    parse_wrk(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_output_parses() {
        let text = "Running 5s test @ http://127.0.0.1:8080/return200
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    83.14us   40.00us   2.10ms   90.00%
    Req/Sec    24.00k     1.00k   26.00k    70.00%
  Latency Distribution
     50%   75.00us
     75%   90.00us
     90%  110.00us
     99%    1.20ms
  123456 requests in 5.00s, 18.00MB read
  Non-2xx or 3xx responses: 2
Requests/sec:  24691.20
Transfer/sec:      3.60MB
";
        let wrk = parse_wrk(text).unwrap();
        assert_eq!(wrk.requests_per_s, 24691.2);
        assert_eq!((wrk.p50_us, wrk.p99_us), (75.0, 1200.0));
        assert_eq!((wrk.requests, wrk.errors), (123456, 2));
        assert!(parse_wrk("garbage").is_err());
        assert_eq!(duration_us("2.00s"), Some(2e6));
    }
}
