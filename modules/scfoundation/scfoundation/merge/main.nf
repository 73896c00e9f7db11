process SCFOUNDATION_MERGE {
    tag "$meta.id"
    label 'process_single'

    container "ghcr.io/scfoundation-rs/scfoundation:0.1.0"

    input:
    tuple val(meta), path(h5ads, stageAs: 'shards/*')

    output:
    tuple val(meta), path("${prefix}.h5ad"), emit: h5ad
    tuple val("${task.process}"), val('scfoundation'), eval("scfoundation --version | sed 's/^scfoundation //'"), topic: versions, emit: versions_scfoundation

    when:
    task.ext.when == null || task.ext.when

    script:
    if (workflow.profile.tokenize(',').intersect(['conda', 'mamba']).size() >= 1) {
        error "SCFOUNDATION_MERGE does not support Conda: scfoundation ships as a container. Use docker, singularity, apptainer or podman."
    }
    def args = task.ext.args ?: ''
    prefix = task.ext.prefix ?: "${meta.id}_merged"
    // Cells are stacked in the order the files arrive; callers sort the shards first.
    def files = (h5ads instanceof List ? h5ads : [h5ads]).join(' ')
    """
    scfoundation merge \\
        ${files} \\
        --output ${prefix}.h5ad \\
        ${args}
    """

    stub:
    prefix = task.ext.prefix ?: "${meta.id}_merged"
    """
    touch ${prefix}.h5ad
    """
}
