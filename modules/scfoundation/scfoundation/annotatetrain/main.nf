process SCFOUNDATION_ANNOTATETRAIN {
    tag "$meta.id"
    label 'process_medium'
    label 'process_gpu'

    container "${ task.accelerator ? 'ghcr.io/scfoundation-rs/scfoundation:0.1.0-cuda' : 'ghcr.io/scfoundation-rs/scfoundation:0.1.0' }"

    input:
    // Labelled reference cells and the obs column holding their cell types.
    tuple val(meta), path(h5ad), val(label_key)
    tuple val(meta2), path(model), val(model_sha256)

    output:
    // glob: false: the prefix is a literal name, brackets or * in it are not patterns.
    tuple val(meta), path("${prefix}", type: 'dir', glob: false), emit: head
    tuple val(meta), path("${prefix}/metrics.json", glob: false), emit: metrics
    tuple val(meta), path("${prefix}/train_log.jsonl", glob: false), emit: log
    tuple val(meta), path("${prefix}/training.png", glob: false), path("${prefix}/confusion.png", glob: false), emit: png
    tuple val("${task.process}"), val('scfoundation'), eval("scfoundation --version | sed 's/^scfoundation //'"), topic: versions, emit: versions_scfoundation

    when:
    task.ext.when == null || task.ext.when

    script:
    if (workflow.profile.tokenize(',').intersect(['conda', 'mamba']).size() >= 1) {
        error "SCFOUNDATION_ANNOTATETRAIN does not support Conda: scfoundation ships as a container. Use docker, singularity, apptainer or podman."
    }
    // File names, the label column and the prefix come from users: single-quote every value that reaches bash.
    def q = { v -> "'" + v.toString().replace("'", "'\\''") + "'" }
    def args = task.ext.args ?: ''
    prefix = task.ext.prefix ?: "${meta.id}_annotate_head"
    if (prefix.contains('/')) error "SCFOUNDATION_ANNOTATETRAIN: task.ext.prefix '${prefix}' contains '/'; outputs are written in the task directory"
    if (!label_key) error "SCFOUNDATION_ANNOTATETRAIN: give the obs column with the cell types (label_key)"
    def device = task.accelerator ? '--device cuda:0' : ''
    // --opt=value: a file name or column starting with '-' stays a value.
    """
    scfoundation annotate train \\
        --threads ${task.cpus} \\
        --input=${q(h5ad)} \\
        --label-key=${q(label_key)} \\
        --model=${q(model)} \\
        --model-sha256=${q(model_sha256)} \\
        --out=${q(prefix)} \\
        ${device} \\
        ${args}
    """

    stub:
    def q = { v -> "'" + v.toString().replace("'", "'\\''") + "'" }
    def args = task.ext.args ?: ''
    prefix = task.ext.prefix ?: "${meta.id}_annotate_head"
    if (prefix.contains('/')) error "SCFOUNDATION_ANNOTATETRAIN: task.ext.prefix '${prefix}' contains '/'; outputs are written in the task directory"
    if (!label_key) error "SCFOUNDATION_ANNOTATETRAIN: give the obs column with the cell types (label_key)"
    """
    echo ${q(args)}
    mkdir -p ${q(prefix)}
    for f in head.safetensors annotate.json train_log.jsonl training.png confusion.png; do
        touch ${q(prefix)}/"\$f"
    done
    echo '{"accuracy":0,"macro_f1":0}' > ${q(prefix + '/metrics.json')}
    """
}
