//! `merge`: stack h5ad files cell-wise in the order given (obs, X, layers, obsm concatenated), after
//! checking their provenance says the same model and options made them.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::fsutil::PendingFile;
use crate::io::h5ad::{self, rows};
use crate::io::Format;

/// Provenance keys allowed to differ between the files being merged.
const PER_FILE_KEYS: &[&str] = &["input", "n_cells", "device"];

pub struct MergeSummary {
    pub n_cells: usize,
    pub n_files: usize,
}

pub fn merge(inputs: &[PathBuf], output: &Path) -> Result<MergeSummary> {
    if inputs.is_empty() {
        bail!("merge needs at least one input file");
    }
    if Format::of_output(output)? != Format::H5ad {
        bail!("{}: merge writes .h5ad", output.display());
    }
    let refs: Vec<&Path> = inputs.iter().map(PathBuf::as_path).collect();
    crate::fsutil::refuse_input_as_output(output, &refs)?;
    let mut files = vec![];
    for p in inputs {
        if !p.exists() {
            bail!("{}: input file not found", p.display());
        }
        files.push(h5ad::open_file(p)?);
    }
    let provs = files
        .iter()
        .zip(inputs)
        .map(|(f, p)| {
            h5ad::read_uns_strings(f, "scfoundation")
                .with_context(|| format!("{}: cannot read uns['scfoundation']", p.display()))
        })
        .collect::<Result<Vec<_>>>()?;
    let merged_prov = merge_provenance(&provs, inputs)?;
    let counts = files
        .iter()
        .zip(inputs)
        .map(|(f, p)| rows::n_obs(f).with_context(|| format!("{}: cannot read obs", p.display())))
        .collect::<Result<Vec<_>>>()?;
    let total: usize = counts.iter().sum();

    let pending = PendingFile::new(output)?;
    let dst = h5ad::create_file(pending.path())?;
    rows::write_rows(&files, &dst, &rows::RowOp::Concat)
        .with_context(|| format!("merging into {}", output.display()))?;
    if let Some(mut prov) = merged_prov {
        set(&mut prov, "n_cells", total.to_string());
        if prov
            .iter()
            .any(|(k, v)| k == "gene_embedding" && v == "mean")
        {
            rows::weighted_mean(&files, &counts, "varm/X_scfoundation", &dst)?;
        }
        h5ad::write_uns_strings(&dst, "scfoundation", &prov)?;
    }
    dst.close()?;
    pending.commit()?;
    Ok(MergeSummary {
        n_cells: total,
        n_files: inputs.len(),
    })
}

fn set(prov: &mut Vec<(String, String)>, key: &str, value: String) {
    match prov.iter_mut().find(|(k, _)| k == key) {
        Some(e) => e.1 = value,
        None => prov.push((key.to_string(), value)),
    }
}

/// All files must carry provenance (or none); model sha256 and every option must agree.
fn merge_provenance(
    provs: &[Option<Vec<(String, String)>>],
    inputs: &[PathBuf],
) -> Result<Option<Vec<(String, String)>>> {
    if provs.iter().all(Option::is_none) {
        return Ok(None);
    }
    let first = provs[0].as_ref().with_context(|| {
        format!(
            "{}: no uns['scfoundation'] provenance, unlike the other files",
            inputs[0].display()
        )
    })?;
    let get =
        |p: &[(String, String)], k: &str| p.iter().find(|(x, _)| x == k).map(|(_, v)| v.clone());
    for (p, path) in provs.iter().zip(inputs).skip(1) {
        let p = p.as_ref().with_context(|| {
            format!(
                "{}: no uns['scfoundation'] provenance, unlike the other files",
                path.display()
            )
        })?;
        if get(p, "model_sha256") != get(first, "model_sha256") {
            bail!(
                "{}: made with model sha256 {}, but {} with {}; refusing to merge embeddings from different weights",
                path.display(),
                get(p, "model_sha256").unwrap_or_default(),
                inputs[0].display(),
                get(first, "model_sha256").unwrap_or_default()
            );
        }
        let keys: std::collections::BTreeSet<&String> =
            p.iter().chain(first.iter()).map(|(k, _)| k).collect();
        for k in keys {
            if PER_FILE_KEYS.contains(&k.as_str()) {
                continue;
            }
            if get(p, k) != get(first, k) {
                bail!(
                    "{}: provenance '{k}' is {:?}, but {:?} in {}; files made with different options cannot be merged",
                    path.display(),
                    get(p, k).unwrap_or_default(),
                    get(first, k).unwrap_or_default(),
                    inputs[0].display()
                );
            }
        }
    }
    let mut merged = first.clone();
    let names: Vec<String> = provs
        .iter()
        .filter_map(|p| p.as_ref().and_then(|p| get(p, "input")))
        .collect();
    set(&mut merged, "input", names.join(","));
    let mut devices: Vec<String> = provs
        .iter()
        .filter_map(|p| p.as_ref().and_then(|p| get(p, "device")))
        .collect();
    devices.sort();
    devices.dedup();
    set(&mut merged, "device", devices.join(","));
    set(&mut merged, "merged_files", inputs.len().to_string());
    Ok(Some(merged))
}
