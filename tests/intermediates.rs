//! The reference's intermediates for cell 0 (key `cell`, t4, raw counts) through the library API.

mod common;
use common::*;

use candle_core::{Device, Tensor};
use scfoundation::data::preprocess::{preprocess, DatasetStats};
use scfoundation::data::{
    CellStream, GeneVocab, InputType, PreNormalized, PreprocessOptions, TargetResolution,
};
use scfoundation::io::{Input, MatrixChoice};
use scfoundation::model::{encoder_batch, load_entry, MaeAutobin};

const TOL: f32 = 1e-5;

fn opts() -> PreprocessOptions {
    PreprocessOptions {
        input_type: InputType::SingleCell,
        pre_normalized: PreNormalized::F,
        tgthighres: TargetResolution::Fixed(4.0),
    }
}

fn first_cell(input: &str) -> scfoundation::data::CellTokens {
    let vocab = GeneVocab::builtin();
    let inp = Input::open(&reference(input), &MatrixChoice::default()).unwrap();
    let mut st = CellStream::new(inp, &vocab, false, 0.2).unwrap();
    let (_, cell) = st.next_cells(1).unwrap().remove(0);
    preprocess(&cell, &opts(), &DatasetStats::default(), "cell 0").unwrap()
}

fn tensor_close(t: &Tensor, golden: &str) {
    let (shape, want) = read_npy(&reference(golden));
    assert_eq!(t.dims(), shape.as_slice(), "{golden} shape");
    let got: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
    let d = max_abs_diff(&got, &want);
    assert!(d <= TOL, "{golden}: max abs diff {d:e}");
}

#[test]
fn preprocessing_matches_input_vector_and_gather() {
    let tok = first_cell("input_counts_8x19264.csv");
    let (_, want) = read_npy(&reference("int_cell0_t4_input_19266.npy"));
    assert!(max_abs_diff(&tok.dense(), &want) <= 1e-6);
    let (vals, ids) = tok.gathered();
    let (_, want_vals) = read_npy(&reference("int_cell0_t4_gathered_values.npy"));
    assert!(max_abs_diff(&vals, &want_vals) <= 1e-6);
    let (_, want_ids) = read_npy(&reference("int_cell0_t4_gathered_gene_ids.npy"));
    let want_ids: Vec<u32> = want_ids.iter().map(|x| *x as u32).collect();
    assert_eq!(ids, want_ids);
}

#[test]
fn embedding_and_encoder_match_reference() {
    let tok = first_cell("input_counts_8x19264.csv");
    let (vals, ids) = tok.gathered();
    let entry = load_entry(&reference("tiny_models.ckpt"), "cell").unwrap();
    let model = MaeAutobin::load(entry.var_builder(&Device::Cpu), &entry.config).unwrap();
    let batch = encoder_batch(&[(&vals, &ids)], model.config(), &Device::Cpu).unwrap();
    assert!(batch.key_mask.is_none());
    tensor_close(
        &model.token_embedding(&batch.values).unwrap(),
        "int_cell0_t4_token_emb.npy",
    );
    tensor_close(
        &model.encoder_input(&batch).unwrap(),
        "int_cell0_t4_encoder_input.npy",
    );
    tensor_close(
        &model.encode(&batch).unwrap(),
        "int_cell0_t4_encoder_output.npy",
    );
}

#[test]
fn subset_input_aligns_by_name() {
    let vocab = GeneVocab::builtin();
    let inp = Input::open(
        &reference("input_subset_8x3005.csv"),
        &MatrixChoice::default(),
    )
    .unwrap();
    let mut st = CellStream::new(inp, &vocab, false, 0.2).unwrap();
    assert_eq!(st.alignment.n_input, 3005);
    assert_eq!(st.alignment.n_mapped_columns, 3000);
    let (shape, want) = read_npy(&reference("subset_aligned_8x19264.npy"));
    assert_eq!(shape, vec![8, 19264]);
    let cells = st.next_cells(100).unwrap();
    assert_eq!(cells.len(), 8);
    for (i, c) in &cells {
        let mut dense = vec![0f32; 19264];
        for (g, v) in c.genes.iter().zip(&c.values) {
            dense[*g as usize] = *v as f32;
        }
        assert_eq!(
            max_abs_diff(&dense, &want[i * 19264..(i + 1) * 19264]),
            0.0,
            "cell {i}"
        );
    }
}

#[test]
fn gene_index_is_the_reference_file() {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(GeneVocab::raw_tsv().as_bytes());
    let hex: String = h.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, scfoundation::data::genes::GENE_INDEX_SHA256);
    assert_eq!(GeneVocab::builtin().names()[0], "A1BG");
}
