process SCFOUNDATION_ANNOTATEPREDICT {
    tag "$meta.id"
    label 'process_medium'
    label 'process_gpu'

    container "${ task.accelerator ? 'ghcr.io/scfoundation-rs/scfoundation:0.1.0-cuda' : 'ghcr.io/scfoundation-rs/scfoundation:0.1.0' }"

    input:
    // Query cells (.h5ad, or .csv/.tsv/.npy as for SCFOUNDATION_EMBED).
    tuple val(meta), path(query)
    // A head directory from SCFOUNDATION_ANNOTATETRAIN (staged as head/NAME).
    tuple val(meta2), path(head, stageAs: 'head/*')
    // The weights the head was trained with (the run refuses any other sha256).
    tuple val(meta3), path(model), val(model_sha256)
    // obs column with known labels: also writes metrics; '' or [] for none.
    val label_key

    output:
    // glob: false: the prefix is a literal name, brackets or * in it are not patterns.
    tuple val(meta), path("${prefix}.h5ad", glob: false), emit: h5ad
    tuple val(meta), path("${prefix}.metrics.json", glob: false), emit: metrics, optional: true
    tuple val("${task.process}"), val('scfoundation'), eval("scfoundation --version | sed 's/^scfoundation //'"), topic: versions, emit: versions_scfoundation

    when:
    task.ext.when == null || task.ext.when

    script:
    if (workflow.profile.tokenize(',').intersect(['conda', 'mamba']).size() >= 1) {
        error "SCFOUNDATION_ANNOTATEPREDICT does not support Conda: scfoundation ships as a container. Use docker, singularity, apptainer or podman."
    }
    // File names, the label column and the prefix come from users: single-quote every value that reaches bash.
    def q = { v -> "'" + v.toString().replace("'", "'\\''") + "'" }
    def args = task.ext.args ?: ''
    prefix = task.ext.prefix ?: "${meta.id}_annotated"
    if (prefix.contains('/')) error "SCFOUNDATION_ANNOTATEPREDICT: task.ext.prefix '${prefix}' contains '/'; outputs are written in the task directory"
    if ("${prefix}.h5ad" == "${query}") error "SCFOUNDATION_ANNOTATEPREDICT: input and output are both ${query}; set a different task.ext.prefix"
    def labels = label_key ? "--label-key=${q(label_key)} --metrics=${q(prefix + '.metrics.json')}" : ''
    def device = task.accelerator ? '--device cuda:0' : ''
    // --opt=value: a file name or column starting with '-' stays a value.
    """
    scfoundation annotate predict \\
        --threads ${task.cpus} \\
        --input=${q(query)} \\
        --head=${q(head)} \\
        --model=${q(model)} \\
        --model-sha256=${q(model_sha256)} \\
        --output=${q(prefix + '.h5ad')} \\
        ${labels} \\
        ${device} \\
        ${args}
    """

    stub:
    def q = { v -> "'" + v.toString().replace("'", "'\\''") + "'" }
    def args = task.ext.args ?: ''
    prefix = task.ext.prefix ?: "${meta.id}_annotated"
    if (prefix.contains('/')) error "SCFOUNDATION_ANNOTATEPREDICT: task.ext.prefix '${prefix}' contains '/'; outputs are written in the task directory"
    def metrics = label_key ? "echo '{\"accuracy\":0,\"macro_f1\":0}' > ${q(prefix + '.metrics.json')}" : ''
    """
    echo ${q(args)}
    touch ${q(prefix + '.h5ad')}
    ${metrics}
    """
}
