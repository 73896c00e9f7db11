use std::path::PathBuf;

use clap::Args;

#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// Reference checkpoint (models.ckpt) or combined .safetensors.
    pub model: PathBuf,
    /// Output directory; receives <key>.safetensors and <key>.config.json per entry.
    pub out_dir: PathBuf,
    /// Entries to convert (default: all of gene, cell, rde present).
    #[arg(long = "key", value_name = "KEY")]
    pub keys: Vec<String>,
}

pub fn run(a: ConvertArgs) -> anyhow::Result<()> {
    for f in crate::steps::convert::convert(&a.model, &a.out_dir, &a.keys)? {
        outln!("{}", f.display());
    }
    Ok(())
}
