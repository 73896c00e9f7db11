process SCFOUNDATION_SPLIT {
    tag "$meta.id"
    label 'process_single'

    container "ghcr.io/scfoundation-rs/scfoundation:0.1.0"

    input:
    tuple val(meta), path(h5ad)
    val cells_per_shard

    output:
    tuple val(meta), path("shards/*.h5ad"), emit: shards
    tuple val("${task.process}"), val('scfoundation'), eval("scfoundation --version | sed 's/^scfoundation //'"), topic: versions, emit: versions_scfoundation

    when:
    task.ext.when == null || task.ext.when

    script:
    if (workflow.profile.tokenize(',').intersect(['conda', 'mamba']).size() >= 1) {
        error "SCFOUNDATION_SPLIT does not support Conda: scfoundation ships as a container. Use docker, singularity, apptainer or podman."
    }
    // File names and the prefix come from users: single-quote every value that reaches bash ('\'' for a quote).
    def q = { v -> "'" + v.toString().replace("'", "'\\''") + "'" }
    def args = task.ext.args ?: ''
    def prefix = task.ext.prefix ?: "${meta.id}"
    if (prefix.contains('/')) error "SCFOUNDATION_SPLIT: task.ext.prefix '${prefix}' contains '/'; shards are written in the task directory"
    // --opt=value: a file name starting with '-' stays a value.
    """
    scfoundation split \\
        --input=${q(h5ad)} \\
        --cells-per-shard=${q(cells_per_shard)} \\
        --outdir shards \\
        --prefix=${q(prefix)} \\
        ${args}
    """

    stub:
    def q = { v -> "'" + v.toString().replace("'", "'\\''") + "'" }
    def prefix = task.ext.prefix ?: "${meta.id}"
    if (prefix.contains('/')) error "SCFOUNDATION_SPLIT: task.ext.prefix '${prefix}' contains '/'; shards are written in the task directory"
    """
    mkdir -p shards
    touch shards/${q(prefix + '_00000.h5ad')} shards/${q(prefix + '_00001.h5ad')}
    """
}
