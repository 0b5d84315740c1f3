//! `zerobias bench`: images/second of each phase (forward, attribution, evaluation, training).

use anyhow::Result;
use candle_core::Device;

use super::args::positive_batch;
use zerobias::bench::Phase;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value = "resnet50")]
    arch: String,
    #[arg(long, default_value_t = 224)]
    size: usize,
    #[arg(long, default_value = "1,8", value_delimiter = ',', value_parser = positive_batch)]
    batch: Vec<usize>,
    /// Phases to run (default: all).
    #[arg(long, value_delimiter = ',')]
    phases: Vec<String>,
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Print a JSON array of measurements.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args, device: &Device) -> Result<()> {
    let Args {
        arch,
        size,
        batch,
        phases,
        repeats,
        json,
    } = args;
    let phases: Vec<Phase> = if phases.is_empty() {
        Phase::ALL.to_vec()
    } else {
        phases
            .iter()
            .map(|p| Phase::parse(p))
            .collect::<zerobias::Result<_>>()?
    };
    let m = zerobias::bench::run_phases(&arch, size, &batch, &phases, repeats, false, device)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&m)?);
    }
    Ok(())
}
