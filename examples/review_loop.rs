//! Runs one review body through `admission::review` N times, for `perf stat` and callgrind:
//! cargo run --release --example review_loop -- hack/samples/pod-4k.json mutate 200000
use mesh_admission::admission::{Endpoint, review};

/// The server's allocator, so the counts are the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use mesh_admission::config::Config;
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let body = std::fs::read(&args[1]).unwrap();
    let endpoint = if args[2] == "mutate" {
        Endpoint::Mutate
    } else {
        Endpoint::Validate
    };
    let n: usize = args[3].parse().unwrap();
    let cfg = Config::default();
    let mut total = 0;
    for _ in 0..n {
        total += review(endpoint, &body, &cfg).unwrap().to_json().len();
    }
    println!("{total}");
}
