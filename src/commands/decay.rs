//! `zerobias decay`: run a bias-decay recipe and print its summary table.

use std::path::PathBuf;

use anyhow::Result;

#[derive(clap::Args)]
pub struct Args {
    /// Recipe file, e.g. recipes/quickstart.toml
    recipe: PathBuf,
    /// Run directory (default: checkpoints/{name}-{timestamp}).
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Continue from the latest checkpoint of the run directory (default: the latest run of this recipe).
    #[arg(long)]
    resume: bool,
    /// Override a recipe field, e.g. --set stage.1.lr=1e-4 --set data.train=/data/imagenet/train
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub(crate) overrides: Vec<String>,
    /// With --resume: continue even though the recipe differs from the run's recipe.toml.
    #[arg(long, requires = "resume")]
    force: bool,
}

pub fn run(args: Args) -> Result<()> {
    let Args {
        recipe,
        run_dir,
        resume,
        overrides,
        force,
    } = args;
    let opts = zerobias::train::RunOptions {
        run_dir,
        resume,
        overrides,
        quiet: false,
        stop_after: None,
        force,
    };
    let summary = zerobias::train::run(&recipe, &opts)?;
    println!("{}", summary.table());
    Ok(())
}
