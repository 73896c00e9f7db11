process SCFOUNDATION_PRETRAIN {
    tag "$meta.id"
    label 'process_high'
    label 'process_gpu'

    container "${ task.accelerator ? 'ghcr.io/scfoundation-rs/scfoundation:0.1.0-cuda' : 'ghcr.io/scfoundation-rs/scfoundation:0.1.0' }"

    input:
    // Training data: one or more h5ad files of raw counts (staged as data/NAME, kept in the order given).
    tuple val(meta), path(h5ads, stageAs: 'data/*')
    // Exactly one of the next two; the other is [ [], [] ].
    // init: weights to start from (a SCFOUNDATION_INIT model, a converted directory, models.ckpt, .safetensors).
    tuple val(meta2), path(init, stageAs: 'init/*')
    // resume: a checkpoint directory from an earlier SCFOUNDATION_PRETRAIN run on the same h5ad files.
    tuple val(meta3), path(resume, stageAs: 'resume/*')

    output:
    // glob: false: the prefix is a literal name, brackets or * in it are not patterns.
    tuple val(meta), path("${prefix}", type: 'dir', glob: false), emit: checkpoint
    // The checkpoint with the sha256 of the entry SCFOUNDATION_EMBED (cell) / SCFOUNDATION_GENEEMBED (gene) loads.
    tuple val(meta), path("${prefix}", type: 'dir', glob: false), env('CELL_SHA256'), emit: model_cell
    tuple val(meta), path("${prefix}", type: 'dir', glob: false), env('GENE_SHA256'), emit: model_gene
    tuple val(meta), path("${prefix}/train_log.jsonl", glob: false), emit: log
    tuple val(meta), path("${prefix}/loss.png", glob: false), emit: png
    tuple val("${task.process}"), val('scfoundation'), eval("scfoundation --version | sed 's/^scfoundation //'"), topic: versions, emit: versions_scfoundation

    when:
    task.ext.when == null || task.ext.when

    script:
    if (workflow.profile.tokenize(',').intersect(['conda', 'mamba']).size() >= 1) {
        error "SCFOUNDATION_PRETRAIN does not support Conda: scfoundation ships as a container. Use docker, singularity, apptainer or podman."
    }
    // File names and the prefix come from users: single-quote every value that reaches bash ('\'' for a quote).
    def q = { v -> "'" + v.toString().replace("'", "'\\''") + "'" }
    def args = task.ext.args ?: ''
    prefix = task.ext.prefix ?: "${meta.id}_pretrain"
    if (prefix.contains('/')) error "SCFOUNDATION_PRETRAIN: task.ext.prefix '${prefix}' contains '/'; outputs are written in the task directory"
    if (init && resume) error "SCFOUNDATION_PRETRAIN: give either an init model or a checkpoint to resume, not both"
    if (!init && !resume) error "SCFOUNDATION_PRETRAIN: give an init model (e.g. from SCFOUNDATION_INIT) or a checkpoint to resume"
    def start = init ? "--init=${q(init)}" : "--resume=${q(resume)}"
    // Staged as data/NAME, so no file name can start with '-'.
    def files = (h5ads instanceof List ? h5ads : [h5ads]).collect { f -> q(f) }.join(' ')
    // CPU unless the task has an accelerator (label process_gpu + accelerator directive); task.ext.args may
    // also carry --device (then leave the accelerator unset).
    def device = task.accelerator ? '--device cuda:0' : ''
    // A resumed run writes a new directory (the staged checkpoint is the previous task's output, never modified).
    """
    scfoundation pretrain \\
        --threads ${task.cpus} \\
        --data ${files} \\
        ${start} \\
        --out=${q(prefix)} \\
        ${device} \\
        ${args}
    CELL_SHA256=\$(scfoundation weights verify ${q(prefix + '/cell.safetensors')} | cut -d' ' -f1)
    GENE_SHA256=\$(scfoundation weights verify ${q(prefix + '/gene.safetensors')} | cut -d' ' -f1)
    """

    stub:
    def q = { v -> "'" + v.toString().replace("'", "'\\''") + "'" }
    def args = task.ext.args ?: ''
    prefix = task.ext.prefix ?: "${meta.id}_pretrain"
    if (prefix.contains('/')) error "SCFOUNDATION_PRETRAIN: task.ext.prefix '${prefix}' contains '/'; outputs are written in the task directory"
    if (init && resume) error "SCFOUNDATION_PRETRAIN: give either an init model or a checkpoint to resume, not both"
    if (!init && !resume) error "SCFOUNDATION_PRETRAIN: give an init model (e.g. from SCFOUNDATION_INIT) or a checkpoint to resume"
    """
    echo ${q(args)}
    mkdir -p ${q(prefix)}
    for f in cell.safetensors cell.config.json gene.safetensors gene.config.json train_state.safetensors loss.png provenance.json; do
        touch ${q(prefix)}/"\$f"
    done
    echo '{"step":0}' > ${q(prefix + '/train_log.jsonl')}
    CELL_SHA256=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
    GENE_SHA256=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
    """
}
