//! Throughput of forward / attribution / train_step on random full-size models.
//!
//! cargo run --release --example bench -- ARCH SIZE BATCHES [REPEATS] [PHASES] [--json]
//! e.g. `-- resnet50 224 1,8 3 forward,attribution`. ZEROBIAS_CONV=candle selects
//! candle's convolution for a before/after comparison. CANDLE_NUM_THREADS defaults to 1
//! here, as in the CLI (see `zerobias::init_cpu_runtime`); set it to compare. Large
//! buffers go on transparent huge pages, as in the CLI (`zerobias::HugePageAlloc`).

use zerobias::bench::{run_phases, Phase};

#[global_allocator]
static ALLOCATOR: zerobias::HugePageAlloc = zerobias::HugePageAlloc;

fn main() {
    zerobias::init_cpu_runtime();
    if let Err(e) = real_main() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn real_main() -> zerobias::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let json = args.iter().any(|a| a == "--json");
    args.retain(|a| a != "--json");
    let usage = || {
        zerobias::Error::input(
            "usage: bench ARCH SIZE BATCHES [REPEATS] [PHASES] [--json], e.g. resnet50 224 1,8 3 forward,attribution",
        )
    };
    let arch = args.first().ok_or_else(usage)?;
    let size = args.get(1).and_then(|s| s.parse().ok()).ok_or_else(usage)?;
    let batches = args
        .get(2)
        .ok_or_else(usage)?
        .split(',')
        .map(|s| s.parse().map_err(|_| usage()))
        .collect::<zerobias::Result<Vec<usize>>>()?;
    let repeats = match args.get(3) {
        Some(s) => s.parse().map_err(|_| usage())?,
        None => 3,
    };
    let phases = match args.get(4) {
        Some(s) => s
            .split(',')
            .map(Phase::parse)
            .collect::<zerobias::Result<Vec<_>>>()?,
        None => Phase::ALL.to_vec(),
    };
    // ZEROBIAS_BENCH_DEVICE=cuda:0 (a --features cuda build) benchmarks a GPU.
    let device = std::env::var("ZEROBIAS_BENCH_DEVICE").unwrap_or_else(|_| "cpu".into());
    let device = zerobias::device::parse_device(&device)?;
    run_phases(arch, size, &batches, &phases, repeats, json, &device)?;
    Ok(())
}
