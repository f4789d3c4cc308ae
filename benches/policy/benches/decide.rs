//! veto, cedar and regorus deciding the same requests against the same
//! generated policy, in one run.
//!
//! Each iteration decides one request; iterations walk the 1,000 sampled
//! requests in turn, so a figure is the mean over the whole mix (allowed,
//! denied by a rule, denied by default). Requests, cedar requests and Rego
//! inputs are all built before timing.
//!
//! Each benchmark builds its policy on first use (criterion calls the
//! closure once per sample): a filtered run (`cargo bench -- cedar`) then
//! skips the others' setup, which for veto at 100k rules takes minutes.

use criterion::{BenchmarkId, Criterion, SamplingMode, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::Duration;
use veto_bench_policy::{SIZES, Shape, cedar::Cedar, rego::Rego, veto};
use veto_policy::NoGrants;

/// Rule counts cedar and regorus are measured at: at 100k rules cedar would
/// take about 70 ms per decision, and the point is made by 10k.
const PEER_SIZES: [usize; 3] = [10, 1_000, 10_000];

/// Walks the sampled requests in turn. It lives outside criterion's
/// per-sample closure, so that samples with few iterations (cedar at 10k
/// rules) still move on through the whole sample instead of restarting at
/// its first requests.
#[derive(Default)]
struct Cycle(usize);

impl Cycle {
    fn step<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        let it = &items[self.0];
        self.0 += 1;
        if self.0 == items.len() {
            self.0 = 0;
        }
        it
    }
}

fn veto_decide(c: &mut Criterion) {
    let mut g = c.benchmark_group("veto_decide");
    g.sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for n in SIZES {
        let mut setup = None;
        let mut cycle = Cycle::default();
        g.bench_function(BenchmarkId::from_parameter(n), |b| {
            let (policy, owned) = setup.get_or_insert_with(|| {
                let shape = Shape::generate(n);
                let policy = veto::compile(&veto::yaml(&shape)).expect("generated policy compiles");
                let owned: Vec<_> = shape
                    .requests()
                    .iter()
                    .map(|r| veto::VetoReq::new(&policy, r).expect("request"))
                    .collect();
                (policy, owned)
            });
            let reqs: Vec<_> = owned.iter().map(veto::VetoReq::request).collect();
            b.iter(|| policy.decide(black_box(cycle.step(&reqs)), &NoGrants));
        });
    }
    g.finish();
}

fn veto_compile(c: &mut Criterion) {
    let mut g = c.benchmark_group("veto_compile");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    let n = 10_000;
    let mut setup = None;
    g.bench_function(BenchmarkId::from_parameter(n), |b| {
        let text = setup.get_or_insert_with(|| veto::yaml(&Shape::generate(n)));
        b.iter(|| veto::compile(black_box(text)).expect("compiles"));
    });
    g.finish();
}

fn cedar_decide(c: &mut Criterion) {
    let mut g = c.benchmark_group("cedar_decide");
    // Flat sampling: at 10k policies one decision takes milliseconds.
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    for n in PEER_SIZES {
        let mut setup = None;
        let mut cycle = Cycle::default();
        g.bench_function(BenchmarkId::from_parameter(n), |b| {
            let (cedar, reqs) = setup.get_or_insert_with(|| {
                let shape = Shape::generate(n);
                let cedar = Cedar::new(&shape).expect("cedar policies parse");
                let reqs: Vec<_> = shape
                    .requests()
                    .iter()
                    .map(|r| cedar.request(r).expect("cedar request"))
                    .collect();
                (cedar, reqs)
            });
            let cedar = &*cedar;
            b.iter(|| cedar.allows(black_box(cycle.step(reqs))));
        });
    }
    g.finish();
}

fn regorus_decide(c: &mut Criterion) {
    let mut g = c.benchmark_group("regorus_decide");
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for n in PEER_SIZES {
        let mut setup = None;
        let mut cycle = Cycle::default();
        g.bench_function(BenchmarkId::from_parameter(n), |b| {
            let (rego, inputs) = setup.get_or_insert_with(|| {
                let shape = Shape::generate(n);
                let rego = Rego::new(&shape).expect("Rego policy loads");
                let inputs: Vec<_> = shape
                    .requests()
                    .iter()
                    .map(|r| Rego::input(r).expect("input"))
                    .collect();
                (rego, inputs)
            });
            b.iter(|| {
                rego.allows(black_box(cycle.step(inputs)))
                    .expect("evaluates")
            });
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    veto_decide,
    veto_compile,
    cedar_decide,
    regorus_decide
);
criterion_main!(benches);
