//! The audit writer's throughput: N concurrent producer tasks, each calling
//! `Writer::decide` in a loop for a fixed count (optionally followed by a
//! `Writer::complete`, as the proxy does for every forwarded request), then
//! the store's size per record after a checkpoint.
//!
//! ```sh
//! cargo run --release -p veto-audit --example writer_bench -- \
//!     [--producers 64] [--records 2000] [--sync normal|full] [--complete] [--dir DIR]
//! ```
//!
//! `--records` is per producer. Prints one JSON line: records/s (committed
//! decisions, i.e. `decide` calls that returned their receipt), chain
//! entries/s, the latency of one `decide` call (p50/p99, µs), the store's
//! bytes per record, and the CPU the writer's threads (`veto-audit*`) spent
//! per record: steadier than records/s on a machine whose cores the
//! producers share. Only the crate's public API is used.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;
use veto_audit::{Completed, Decided, Sync, Writer, format_time, new_id};

struct Args {
    producers: usize,
    records: usize,
    sync: Sync,
    complete: bool,
    dir: Option<PathBuf>,
}

fn args() -> Args {
    let mut a = Args {
        producers: 64,
        records: 2_000,
        sync: Sync::Normal,
        complete: false,
        dir: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--producers" => a.producers = value().parse().expect("--producers N"),
            "--records" => a.records = value().parse().expect("--records N"),
            "--sync" => {
                a.sync = match value().as_str() {
                    "normal" => Sync::Normal,
                    "full" => Sync::Full,
                    other => panic!("--sync normal|full, not {other}"),
                }
            }
            "--complete" => a.complete = true,
            "--dir" => a.dir = Some(PathBuf::from(value())),
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

/// A record shaped like the one `veto run` writes for the proxy benchmark's
/// request (an allowed GET to a loopback upstream), so the bytes per record
/// are those of a real request, not of a toy one.
fn decided(ms: u64) -> Decided {
    Decided {
        id: new_id(ms),
        time: format_time(ms),
        machine: "anonymous".into(),
        protocol: "http".into(),
        method: Some("GET".into()),
        host: "127.0.0.1".into(),
        port: 18080,
        path: Some("/1k".into()),
        ips: vec!["127.0.0.1".into()],
        dns_lookup: false,
        decision: "allow".into(),
        would: None,
        rule: "bench-upstream".into(),
        reason: "allowed by rule bench-upstream".into(),
        data: BTreeMap::new(),
        status: None,
        policy: "sha256:9f2c4e1a0b7d3c5e8f6a1b2c3d4e5f60718293a4b5c6d7e8f9012345678abcde".into(),
    }
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// CPU time (user + system, µs) of this process's threads whose name
/// starts with `prefix`, from /proc (Linux; 0 elsewhere). The writer's own
/// cost per record, apart from the producers competing for the cores.
fn thread_cpu_us(prefix: &str) -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    // Clock ticks per second: 100 on every Linux this runs on (USER_HZ).
    let tick_us = 10_000;
    let mut total = 0;
    for t in tasks.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if !comm.trim_end().starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        // Fields after the parenthesised name: utime and stime are the 12th
        // and 13th.
        let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
        let f: Vec<u64> = rest.split(' ').map(|x| x.parse().unwrap_or(0)).collect();
        if f.len() > 12 {
            total += (f[11] + f[12]) * tick_us;
        }
    }
    total
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn produce(w: Writer, n: usize, complete: bool) -> Vec<u32> {
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let ms = veto_audit::now().0;
        let d = decided(ms);
        let id = d.id.clone();
        let t = Instant::now();
        w.decide(d, ms).await.expect("decide");
        lat.push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
        if complete {
            let c = Completed {
                id,
                protocol: None,
                status: Some(200),
                bytes_out: 0,
                bytes_in: 1024,
                duration_ms: 1,
            };
            w.complete(c, ms).await.expect("complete");
        }
    }
    lat
}

fn main() {
    let a = args();
    // The store goes in a fresh directory unless one is given, so a run
    // never appends to (and measures) an older chain.
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = a.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir).expect("data dir");
    let path = veto_audit::db_path(&dir);
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let w = Writer::start(&path, a.sync).expect("writer");
        // Warm-up (not timed): creates the file, the tables and the cached
        // statement, as a running veto has long done.
        let warm: Vec<_> = (0..a.producers)
            .map(|_| tokio::spawn(produce(w.clone(), 10, a.complete)))
            .collect();
        for t in warm {
            t.await.expect("warm-up task");
        }
        w.flush().await.expect("flush");

        let cpu_before = thread_cpu_us("veto-audit");
        let start = Instant::now();
        let tasks: Vec<_> = (0..a.producers)
            .map(|_| tokio::spawn(produce(w.clone(), a.records, a.complete)))
            .collect();
        let mut lat = Vec::with_capacity(a.producers * a.records);
        for t in tasks {
            lat.extend(t.await.expect("producer task"));
        }
        // Completions are not waited for by `complete`; the run is over when
        // they are committed too.
        w.flush().await.expect("flush");
        let secs = start.elapsed().as_secs_f64();
        let writer_cpu = thread_cpu_us("veto-audit") - cpu_before;
        lat.sort_unstable();

        let records = (a.producers * a.records) as f64;
        let entries = if a.complete { 2.0 * records } else { records };
        let db_before = file_len(&path);
        let wal_before = file_len(&wal);
        // Fold the WAL into the database so the size is the store's, not
        // the WAL's preallocation.
        let conn = veto_audit::open_rw(&path, a.sync).expect("second connection");
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
            .expect("checkpoint");
        let (seq, _) = veto_audit::head(&conn).expect("head");
        let stored = file_len(&path) + file_len(&wal);
        let per_entry = stored as f64 / seq as f64;
        let per_record = if a.complete { 2.0 * per_entry } else { per_entry };
        println!(
            "{{\"sync\":\"{}\",\"producers\":{},\"records\":{},\"complete\":{},\"secs\":{:.3},\
             \"records_per_s\":{:.0},\"entries_per_s\":{:.0},\"decide_p50_us\":{},\"decide_p99_us\":{},\
             \"entries_in_store\":{},\"db_bytes_before_checkpoint\":{},\"wal_bytes_before_checkpoint\":{},\
             \"store_bytes\":{},\"bytes_per_entry\":{:.0},\"bytes_per_record\":{:.0},\
             \"writer_cpu_us_per_record\":{:.1}}}",
            match a.sync {
                Sync::Normal => "normal",
                Sync::Full => "full",
            },
            a.producers,
            records as u64,
            a.complete,
            secs,
            records / secs,
            entries / secs,
            percentile(&lat, 0.50),
            percentile(&lat, 0.99),
            seq,
            db_before,
            wal_before,
            stored,
            per_entry,
            per_record,
            writer_cpu as f64 / records,
        );
    });
    drop(tmp);
}
