//! What a minted leaf costs (BENCHMARKS.md, "TLS interception"): a cache
//! miss (new key, signed by the CA) and a cache hit, through the same
//! `Leaves::get` the proxy calls per opened tunnel.
//!
//!   cargo run --release -p veto-ca --example leaf_bench

use std::time::{Duration, Instant};

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn main() {
    let dir = std::env::temp_dir().join(format!("veto-leaf-bench-{}", std::process::id()));
    let ca = veto_ca::Ca::init(&dir).expect("a CA in a temporary directory");
    let leaves = veto_ca::Leaves::new(ca, 4096);
    let misses: Vec<Duration> = (0..1000)
        .map(|i| {
            let name = format!("host-{i}.example.com");
            let t = Instant::now();
            std::hint::black_box(leaves.get(&name).expect("minted"));
            t.elapsed()
        })
        .collect();
    let hits: Vec<Duration> = (0..100_000)
        .map(|i| {
            let name = format!("host-{}.example.com", i % 1000);
            let t = Instant::now();
            std::hint::black_box(leaves.get(&name).expect("cached"));
            t.elapsed()
        })
        .collect();
    println!("| leaf | median | runs |");
    println!("|---|---:|---:|");
    println!(
        "| cache miss (mint: P-256 key + signature) | {:.1} µs | 1,000 |",
        median(misses).as_secs_f64() * 1e6
    );
    println!(
        "| cache hit | {:.0} ns | 100,000 |",
        median(hits).as_secs_f64() * 1e9
    );
    let _ = std::fs::remove_dir_all(&dir);
}
