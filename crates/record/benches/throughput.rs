//! Recorder throughput (issue 4, benchmark c): events drained from the rings, merged by
//! time and written to a file, per second, without loss. Target: at least 5 M events/s.
//!
//! `cargo bench -p mmio-trace-record --bench throughput`

use mmio_trace_format::Format;

fn main() {
    let dir = std::env::temp_dir();
    for (name, format) in [("text", Format::Text), ("binary", Format::Binary)] {
        for threads in [1u32, 2] {
            let per = 4_000_000 / threads as u64;
            let path = dir.join(format!(
                "mmio-trace-throughput-{}.{name}",
                std::process::id()
            ));
            let mut rates = Vec::new();
            for _ in 0..3 {
                let f = std::io::BufWriter::with_capacity(
                    1 << 20,
                    std::fs::File::create(&path).unwrap(),
                );
                let (n, t) =
                    mmio_trace_record::bench::pipeline_throughput(threads, per, f, format).unwrap();
                assert_eq!(n, threads as u64 * (per + 1), "every event written");
                rates.push(n as f64 / t.as_secs_f64());
            }
            rates.sort_by(f64::total_cmp);
            let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            println!(
                "throughput {name:6} {threads} producer(s): median {:.2} M events/s (runs {:.2}..{:.2}), {} bytes",
                rates[1] / 1e6,
                rates[0] / 1e6,
                rates[2] / 1e6,
                bytes
            );
            let _ = std::fs::remove_file(&path);
        }
    }
}
