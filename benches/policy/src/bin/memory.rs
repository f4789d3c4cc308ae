//! Bytes held by the compiled 100k-rule policy, counted by a global
//! allocator: live bytes after `Policy::compile` minus live bytes before,
//! with the YAML text allocated (and counted) beforehand and freed after.
//!
//! Prints `key value` lines for `scripts/bench-policy`. Usage: `memory [N]`
//! (rule count, default 100000).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;
use veto_bench_policy::{Shape, veto};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn main() -> std::process::ExitCode {
    let n: usize = match std::env::args().nth(1).map(|s| s.parse()) {
        None => 100_000,
        Some(Ok(n)) => n,
        Some(Err(e)) => {
            eprintln!("memory: rule count: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let text = veto::yaml(&Shape::generate(n));
    // Loading alone (parse and check, no index, no warnings), timed apart
    // to show where compile time goes; not counted in the memory figures.
    let t = Instant::now();
    let loaded = veto_policy::load(&text).map(drop);
    let load = t.elapsed();
    if loaded.is_err() {
        eprintln!("memory: the generated policy does not load");
        return std::process::ExitCode::FAILURE;
    }
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let t = Instant::now();
    let policy = match veto::compile(&text) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("memory: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let compile = t.elapsed();
    let after = LIVE.load(Ordering::Relaxed);
    let peak = PEAK.load(Ordering::Relaxed);
    println!("rules {n}");
    println!("yaml_bytes {}", text.len());
    println!("live_bytes {}", after - before);
    println!("peak_bytes {}", peak - before);
    println!("warnings {}", policy.warnings().len());
    println!("compile_ms {:.1}", compile.as_secs_f64() * 1e3);
    println!("load_ms {:.1}", load.as_secs_f64() * 1e3);
    drop(policy);
    std::process::ExitCode::SUCCESS
}
