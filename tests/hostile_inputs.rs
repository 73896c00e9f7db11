//! Malformed and hostile inputs: each case must end in one clear error line naming the file, a
//! non-zero exit, no output left behind, and never a panic, abort or hang. Also the silent-wrong-result
//! cases (output over input, values that cancel when duplicate genes are summed, merge mismatches).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

fn model() -> PathBuf {
    tiny_model()
}

/// Runs embed expecting a clean failure naming `needle`, with nothing written where the output would go.
fn embed_fails(input: &Path, needle: &str) -> String {
    let d = tmp();
    let out = d.path().join("out.h5ad");
    let args = embed_args(input, &out, &[]);
    let o = bin().args(&args).output().expect("spawn");
    let line = clean_error(&o, needle);
    let left: Vec<_> = std::fs::read_dir(d.path()).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    line
}

fn npy_bytes(header: &str, data: &[u8]) -> Vec<u8> {
    let mut v = b"\x93NUMPY\x01\x00".to_vec();
    v.extend_from_slice(&(header.len() as u16).to_le_bytes());
    v.extend_from_slice(header.as_bytes());
    v.extend_from_slice(data);
    v
}

#[test]
fn npy_headers_that_lie() {
    let d = tmp();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        // The product of the shape overflows 64 bits: must not wrap and pass the size check.
        (
            "overflow.npy",
            npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 16), }\n", &[0; 64]),
            "too large",
        ),
        (
            "huge.npy",
            npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000, 19264), }\n", &[0; 64]),
            "truncated",
        ),
        ("empty_descr.npy", npy_bytes("{'descr': '', 'fortran_order': False, 'shape': (1, 2), }\n", &[0; 8]), "dtype"),
        ("object.npy", npy_bytes("{'descr': '|O', 'fortran_order': False, 'shape': (1, 2), }\n", &[0; 16]), "dtype"),
        ("unicode.npy", npy_bytes("{'descr': 'é', 'fortran_order': False, 'shape': (1, 2), }\n", &[0; 16]), "dtype"),
        ("neg.npy", npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (-1, 2), }\n", &[0; 16]), "shape"),
        ("magic.npy", b"\x93NUMPX\x01\x00\x00\x00".to_vec(), "magic"),
        // Zero columns make the size check pass with no data; 2^32 rows must not be enumerated.
        (
            "nocols.npy",
            npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 0), }\n", &[]),
            "no columns",
        ),
        // One column: a million rows fit in the file, but a .npy without gene names needs 19,264.
        (
            "onecol.npy",
            npy_bytes("{'descr': '|u1', 'fortran_order': False, 'shape': (1000000, 1), }\n", &[1; 1_000_000]),
            "19264 columns",
        ),
        ("short.npy", b"\x93NUM".to_vec(), "too short"),
    ];
    for (name, bytes, needle) in cases {
        let p = d.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        embed_fails(&p, needle);
    }
    // A version-2 header length of 4 GiB is refused before any allocation.
    let p = d.path().join("hlen.npy");
    let mut v = b"\x93NUMPY\x02\x00".to_vec();
    v.extend_from_slice(&u32::MAX.to_le_bytes());
    v.extend_from_slice(b"{'descr': '<f4'");
    std::fs::write(&p, v).unwrap();
    embed_fails(&p, "header length");
}

/// A minimal AnnData file whose X is built by `x`.
fn h5ad_with(path: &Path, n_obs: usize, genes: &[&str], x: impl FnOnce(&hdf5::File)) {
    let f = hdf5::File::create(path).unwrap();
    for (g, names) in [
        (
            "obs",
            (0..n_obs).map(|i| format!("c{i}")).collect::<Vec<_>>(),
        ),
        ("var", genes.iter().map(|s| s.to_string()).collect()),
    ] {
        let grp = f.create_group(g).unwrap();
        let v: Vec<hdf5::types::VarLenUnicode> = names.iter().map(|s| s.parse().unwrap()).collect();
        grp.new_dataset_builder()
            .with_data(&v)
            .create("_index")
            .unwrap();
        grp.new_attr::<hdf5::types::VarLenUnicode>()
            .shape(())
            .create("_index")
            .unwrap()
            .write_scalar(&"_index".parse::<hdf5::types::VarLenUnicode>().unwrap())
            .unwrap();
    }
    x(&f);
}

fn csr_group(f: &hdf5::File, shape: &[i64], data: &[f32], indices: &[i64], indptr: &[i64]) {
    let g = f.create_group("X").unwrap();
    g.new_attr::<hdf5::types::VarLenUnicode>()
        .shape(())
        .create("encoding-type")
        .unwrap()
        .write_scalar(&"csr_matrix".parse::<hdf5::types::VarLenUnicode>().unwrap())
        .unwrap();
    g.new_attr::<i64>()
        .shape(shape.len())
        .create("shape")
        .unwrap()
        .write(shape)
        .unwrap();
    g.new_dataset_builder()
        .with_data(data)
        .create("data")
        .unwrap();
    g.new_dataset_builder()
        .with_data(indices)
        .create("indices")
        .unwrap();
    g.new_dataset_builder()
        .with_data(indptr)
        .create("indptr")
        .unwrap();
}

const GENES: [&str; 3] = ["A1BG", "A2M", "AAAS"];

#[test]
fn sparse_matrices_that_lie() {
    let d = tmp();
    type Case = (
        &'static str,
        Vec<i64>,
        Vec<f32>,
        Vec<i64>,
        Vec<i64>,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            "rows.h5ad",
            vec![1 << 40, 3],
            vec![1.0],
            vec![0],
            vec![0, 1],
            "rows",
        ),
        (
            "shape1.h5ad",
            vec![2],
            vec![1.0],
            vec![0],
            vec![0, 1, 1],
            "2 numbers",
        ),
        (
            "negshape.h5ad",
            vec![-2, 3],
            vec![1.0],
            vec![0],
            vec![0, 1, 1],
            "shape",
        ),
        (
            "ptrlen.h5ad",
            vec![2, 3],
            vec![1.0],
            vec![0],
            vec![0, 1],
            "indptr has 2 entries",
        ),
        (
            "ptrdown.h5ad",
            vec![2, 3],
            vec![1.0, 2.0],
            vec![0, 1],
            vec![0, 2, 1],
            "indptr must rise",
        ),
        (
            "ptrneg.h5ad",
            vec![2, 3],
            vec![1.0],
            vec![0],
            vec![0, -1, 1],
            "negative indptr",
        ),
        (
            "ptrend.h5ad",
            vec![2, 3],
            vec![1.0],
            vec![0],
            vec![0, 1, 5],
            "indptr must rise",
        ),
        (
            "idx.h5ad",
            vec![2, 3],
            vec![1.0, 2.0],
            vec![0, 7],
            vec![0, 1, 2],
            "out of range",
        ),
        (
            "idxneg.h5ad",
            vec![2, 3],
            vec![1.0, 2.0],
            vec![0, -3],
            vec![0, 1, 2],
            "out of range",
        ),
        (
            "nnz.h5ad",
            vec![2, 3],
            vec![1.0, 2.0],
            vec![0],
            vec![0, 1, 2],
            "indices but",
        ),
        (
            "cols.h5ad",
            vec![2, 9],
            vec![1.0],
            vec![0],
            vec![0, 1, 1],
            "columns",
        ),
    ];
    for (name, shape, data, indices, indptr, needle) in cases {
        let p = d.path().join(name);
        h5ad_with(&p, 2, &GENES, |f| {
            csr_group(f, &shape, &data, &indices, &indptr)
        });
        let err = embed_fails(&p, needle);
        assert!(err.contains(name), "names the file: {err}");
    }
}

#[test]
fn declared_sizes_without_data_are_refused_before_allocating() {
    let d = tmp();
    let p = d.path().join("phantom.h5ad");
    // A chunked dataset declaring 10^12 values with nothing stored: reading it would allocate 4 TB.
    h5ad_with(&p, 2, &GENES, |f| {
        f.new_dataset::<f32>()
            .chunk((1, 3))
            .shape((2usize, 3usize))
            .create("X")
            .unwrap();
        let obs = f.group("obs").unwrap();
        obs.unlink("_index").unwrap();
        obs.new_dataset::<hdf5::types::VarLenUnicode>()
            .chunk(1024)
            .shape(1_000_000_000_000usize)
            .create("_index")
            .unwrap();
    });
    let t = Instant::now();
    embed_fails(&p, "declares");
    assert!(t.elapsed() < Duration::from_secs(20));
}

#[test]
fn x_rows_must_match_obs() {
    let d = tmp();
    let p = d.path().join("dense.h5ad");
    h5ad_with(&p, 3, &GENES, |f| {
        f.new_dataset_builder()
            .with_data(&ndarray::Array2::<f32>::ones((2, 3)))
            .create("X")
            .unwrap();
    });
    embed_fails(&p, "2 rows but there are 3 cells");
}

#[test]
fn negative_values_are_refused_before_duplicates_are_summed() {
    let d = tmp();
    // Gene A2M twice: -5 + 5 would sum to 0 and hide the negative value.
    let p = d.path().join("dup.csv");
    std::fs::write(&p, "cell,A1BG,A2M,A2M,AAAS\nc1,1,-5,5,2\n").unwrap();
    let err = embed_fails(&p, "negative");
    assert!(err.contains("A2M") && err.contains("c1"), "{err}");
    let p = d.path().join("inf.csv");
    std::fs::write(&p, "cell,A1BG,A2M,A2M,AAAS\nc1,1,inf,-inf,2\n").unwrap();
    embed_fails(&p, "non-finite");
}

#[test]
fn csv_quoted_fields_and_ragged_rows() {
    let d = tmp();
    // A quoted cell id with a comma and quotes is one field.
    let p = d.path().join("q.csv");
    std::fs::write(
        &p,
        "\"cell, id\",A1BG,A2M,AAAS\n\"c1, \"\"first\"\"\",1,2,3\n\"c2\",0,1,4\n",
    )
    .unwrap();
    let out = d.path().join("q.h5ad");
    run_ok(&[
        "embed",
        "--input",
        s(&p),
        "--model",
        s(&model()),
        "--output",
        s(&out),
        "--min-mapped",
        "0.5",
    ]);
    let f = hdf5::File::open(&out).unwrap();
    let ids = f
        .dataset("obs/_index")
        .unwrap()
        .read_1d::<hdf5::types::VarLenUnicode>()
        .unwrap();
    assert_eq!(ids[0].as_str(), "c1, \"first\"");
    let p = d.path().join("ragged.csv");
    std::fs::write(&p, "cell,A1BG,A2M,AAAS\nc1,1,2\n").unwrap();
    embed_fails(&p, "line 2 has 2 values");
}

#[test]
fn non_regular_inputs_fail_fast() {
    let d = tmp();
    let fifo = d.path().join("pipe.h5ad");
    let ok = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(ok.success());
    let t = Instant::now();
    let err = run_err(&[
        "embed",
        "--input",
        s(&fifo),
        "--model",
        s(&model()),
        "--output",
        s(&d.path().join("o.h5ad")),
    ]);
    assert!(err.contains("not a regular file"), "{err}");
    let err = run_err(&[
        "split",
        "--input",
        s(&fifo),
        "--cells-per-shard",
        "2",
        "--outdir",
        s(d.path()),
    ]);
    assert!(err.contains("not a regular file"), "{err}");
    // A model or registry that is a FIFO would block while being hashed or read.
    let m = d.path().join("m.ckpt");
    assert!(std::process::Command::new("mkfifo")
        .arg(&m)
        .status()
        .unwrap()
        .success());
    let err = run_err(&[
        "embed",
        "--input",
        s(&test_data("pbmc_tiny.h5ad")),
        "--model",
        s(&m),
        "--output",
        s(&d.path().join("o.h5ad")),
    ]);
    assert!(err.contains("not a regular file"), "{err}");
    let r = d.path().join("r.json");
    assert!(std::process::Command::new("mkfifo")
        .arg(&r)
        .status()
        .unwrap()
        .success());
    let err = run_err(&["--registry", s(&r), "weights", "list"]);
    assert!(err.contains("not a regular file"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(20));
    let dir = d.path().join("dir.csv");
    std::fs::create_dir(&dir).unwrap();
    let err = run_err(&[
        "embed",
        "--input",
        s(&dir),
        "--model",
        s(&model()),
        "--output",
        s(&d.path().join("o.h5ad")),
    ]);
    assert!(err.contains("not a regular file"), "{err}");
}

#[test]
fn numeric_options_are_range_checked() {
    let input = test_data("pbmc_tiny.h5ad");
    for bs in ["0", "-1", "18446744073709551616", "100000"] {
        let err = run_err(&[
            "embed",
            "--input",
            s(&input),
            "--model",
            s(&model()),
            "--output",
            "x.h5ad",
            &format!("--batch-size={bs}"),
        ]);
        assert!(err.contains("batch-size"), "{bs}: {err}");
    }
    for n in ["0", "-3", "abc"] {
        let arg = format!("--cells-per-shard={n}");
        let err = run_err(&["split", "--input", s(&input), &arg]);
        assert!(err.contains("cells-per-shard"), "{n}: {err}");
    }
    let err = run_err(&["--threads", "0", "weights", "list"]);
    assert!(err.contains("threads"), "{err}");
}

#[test]
fn output_never_overwrites_an_input() {
    let d = tmp();
    let input = d.path().join("in.h5ad");
    std::fs::copy(test_data("pbmc_tiny.h5ad"), &input).unwrap();
    let before = std::fs::read(&input).unwrap();
    let err = run_err(&[
        "embed",
        "--input",
        s(&input),
        "--model",
        s(&model()),
        "--output",
        s(&input),
    ]);
    assert!(err.contains("is the input"), "{err}");
    // The same file through another spelling of the path.
    let other = d.path().join(".").join("in.h5ad");
    let err = run_err(&[
        "embed",
        "--input",
        s(&input),
        "--model",
        s(&model()),
        "--output",
        s(&other),
    ]);
    assert!(err.contains("is the input"), "{err}");
    // split whose shard name is the input.
    let shard = d.path().join("shard_00000.h5ad");
    std::fs::copy(&input, &shard).unwrap();
    let err = run_err(&[
        "split",
        "--input",
        s(&shard),
        "--cells-per-shard",
        "100",
        "--outdir",
        s(d.path()),
    ]);
    assert!(err.contains("is the input"), "{err}");
    let err = run_err(&["merge", s(&input), s(&shard), "--output", s(&shard)]);
    assert!(err.contains("is the input"), "{err}");
    assert_eq!(std::fs::read(&input).unwrap(), before);
}

#[test]
fn split_prefix_is_a_plain_name() {
    let d = tmp();
    for prefix in ["../escape", "a/b", "..", "", "/abs"] {
        let err = run_err(&[
            "split",
            "--input",
            s(&test_data("pbmc_tiny.h5ad")),
            "--cells-per-shard",
            "4",
            "--outdir",
            s(d.path()),
            "--prefix",
            prefix,
        ]);
        assert!(err.contains("--prefix"), "{prefix:?}: {err}");
    }
    assert!(!d
        .path()
        .parent()
        .unwrap()
        .join("escape_00000.h5ad")
        .exists());
    assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
}

#[test]
fn merge_refuses_shards_that_do_not_line_up() {
    let d = tmp();
    let a = d.path().join("a.h5ad");
    let b = d.path().join("b.h5ad");
    h5ad_with(&a, 2, &GENES, |f| {
        f.new_dataset_builder()
            .with_data(&ndarray::Array2::<f32>::ones((2, 3)))
            .create("X")
            .unwrap();
    });
    // Same genes in another order: the columns would silently mix genes.
    h5ad_with(&b, 2, &["A2M", "A1BG", "AAAS"], |f| {
        f.new_dataset_builder()
            .with_data(&ndarray::Array2::<f32>::ones((2, 3)))
            .create("X")
            .unwrap();
    });
    let out = d.path().join("m.h5ad");
    let err = run_err(&["merge", s(&a), s(&b), "--output", s(&out)]);
    assert!(err.contains("var differs"), "{err}");
    assert!(!out.exists());
    // obsm keys differ.
    let c = d.path().join("c.h5ad");
    h5ad_with(&c, 2, &GENES, |f| {
        f.new_dataset_builder()
            .with_data(&ndarray::Array2::<f32>::ones((2, 3)))
            .create("X")
            .unwrap();
        let g = f.create_group("obsm").unwrap();
        g.new_dataset_builder()
            .with_data(&ndarray::Array2::<f32>::ones((2, 2)))
            .create("X_pca")
            .unwrap();
    });
    let err = run_err(&["merge", s(&a), s(&c), "--output", s(&out)]);
    assert!(err.contains("'obsm' is missing from file 1"), "{err}");
    assert!(!out.exists());
}

#[test]
fn outputs_get_umask_permissions_and_sidecars_come_with_their_file() {
    use std::os::unix::fs::PermissionsExt;
    let d = tmp();
    let out = d.path().join("e.npy");
    run_ok(&[
        "embed",
        "--input",
        s(&test_data("pbmc_tiny.h5ad")),
        "--model",
        s(&model()),
        "--output",
        s(&out),
    ]);
    // The test process's umask is the usual 022 (CI and shells), so files are 0644, not tempfile's 0600.
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode & 0o044,
        0o044,
        "readable by group and others: {mode:o}"
    );
    let side = d.path().join("e.npy.provenance.json");
    assert!(side.exists());
    assert_eq!(
        std::fs::metadata(&side).unwrap().permissions().mode() & 0o044,
        0o044
    );
    let names: Vec<String> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn a_failed_rename_leaves_no_temporary_file() {
    let d = tmp();
    // The target is an existing non-empty directory: the final rename fails after all was written.
    let out = d.path().join("taken.h5ad");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep"), "x").unwrap();
    let err = run_err(&[
        "embed",
        "--input",
        s(&test_data("pbmc_tiny.h5ad")),
        "--model",
        s(&model()),
        "--output",
        s(&out),
    ]);
    assert!(err.contains("cannot move output into place"), "{err}");
    let names: Vec<String> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(
        names,
        vec!["taken.h5ad".to_string()],
        "left behind: {names:?}"
    );
}

#[test]
fn sigterm_during_split_leaves_nothing() {
    let d = tmp();
    let input = d.path().join("big.h5ad");
    h5ad_with(&input, 3000, &GENES, |f| {
        f.new_dataset_builder()
            .with_data(&ndarray::Array2::<f32>::ones((3000, 3)))
            .create("X")
            .unwrap();
    });
    let outdir = d.path().join("shards");
    let mut child = bin()
        .args([
            "split",
            "--input",
            s(&input),
            "--cells-per-shard",
            "1",
            "--outdir",
            s(&outdir),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    // Wait until shards are being written, then interrupt.
    while std::fs::read_dir(&outdir).map(|r| r.count()).unwrap_or(0) < 5 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "split wrote nothing"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success());
    let left: Vec<_> = std::fs::read_dir(&outdir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        left.is_empty(),
        "left after SIGTERM: {} files, e.g. {:?}",
        left.len(),
        left.first()
    );
}
