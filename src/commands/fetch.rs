//! `zerobias fetch`: download a model's weights from the Hugging Face Hub.

use anyhow::Result;

#[derive(clap::Args)]
pub struct Args {
    /// Hub repo id, e.g. timm/vgg16.tv_in1k
    repo: String,
    #[arg(long)]
    revision: Option<String>,
}

pub fn run(args: Args) -> Result<()> {
    let Args { repo, revision } = args;
    let cfg = zerobias::hub::HubConfig::from_env();
    let path = zerobias::hub::fetch_file(
        &cfg,
        &repo,
        revision.as_deref().unwrap_or("main"),
        "model.safetensors",
    )?;
    println!("{}", path.display());
    Ok(())
}
