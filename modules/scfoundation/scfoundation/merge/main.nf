process SCFOUNDATION_MERGE {
    tag "$meta.id"
    label 'process_single'

    container "ghcr.io/scfoundation-rs/scfoundation:0.1.0"

    input:
    tuple val(meta), path(h5ads, stageAs: 'shards/*')

    output:
    // glob: false: the prefix is a literal name, brackets or * in it are not patterns.
    tuple val(meta), path("${prefix}.h5ad", glob: false), emit: h5ad
    tuple val("${task.process}"), val('scfoundation'), eval("scfoundation --version | sed 's/^scfoundation //'"), topic: versions, emit: versions_scfoundation

    when:
    task.ext.when == null || task.ext.when

    script:
    if (workflow.profile.tokenize(',').intersect(['conda', 'mamba']).size() >= 1) {
        error "SCFOUNDATION_MERGE does not support Conda: scfoundation ships as a container. Use docker, singularity, apptainer or podman."
    }
    // File names and the prefix come from users: single-quote every value that reaches bash ('\'' for a quote).
    def q = { v -> "'" + v.toString().replace("'", "'\\''") + "'" }
    def args = task.ext.args ?: ''
    prefix = task.ext.prefix ?: "${meta.id}_merged"
    if (prefix.contains('/')) error "SCFOUNDATION_MERGE: task.ext.prefix '${prefix}' contains '/'; outputs are written in the task directory"
    // Cells are stacked in the order the files arrive; callers sort the shards first.
    // Staged as shards/NAME, so no file name can start with '-'.
    def files = (h5ads instanceof List ? h5ads : [h5ads]).collect { f -> q(f) }.join(' ')
    """
    scfoundation merge \\
        ${files} \\
        --output=${q(prefix + '.h5ad')} \\
        ${args}
    """

    stub:
    def q = { v -> "'" + v.toString().replace("'", "'\\''") + "'" }
    prefix = task.ext.prefix ?: "${meta.id}_merged"
    if (prefix.contains('/')) error "SCFOUNDATION_MERGE: task.ext.prefix '${prefix}' contains '/'; outputs are written in the task directory"
    """
    touch ${q(prefix + '.h5ad')}
    """
}
