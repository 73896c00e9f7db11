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
    def args = task.ext.args ?: ''
    def prefix = task.ext.prefix ?: "${meta.id}"
    """
    scfoundation split \\
        --input ${h5ad} \\
        --cells-per-shard ${cells_per_shard} \\
        --outdir shards \\
        --prefix ${prefix} \\
        ${args}
    """

    stub:
    def prefix = task.ext.prefix ?: "${meta.id}"
    """
    mkdir -p shards
    touch shards/${prefix}_00000.h5ad shards/${prefix}_00001.h5ad
    """
}
