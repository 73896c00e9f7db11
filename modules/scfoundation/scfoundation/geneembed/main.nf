process SCFOUNDATION_GENEEMBED {
    tag "$meta.id"
    label 'process_medium'
    label 'process_gpu'

    container "${ task.accelerator ? 'ghcr.io/scfoundation-rs/scfoundation:0.1.0-cuda' : 'ghcr.io/scfoundation-rs/scfoundation:0.1.0' }"

    input:
    tuple val(meta), path(h5ad)
    tuple val(meta2), path(model), val(model_sha256)

    output:
    tuple val(meta), path("${prefix}.h5ad"), emit: h5ad
    tuple val("${task.process}"), val('scfoundation'), eval("scfoundation --version | sed 's/^scfoundation //'"), topic: versions, emit: versions_scfoundation

    when:
    task.ext.when == null || task.ext.when

    script:
    if (workflow.profile.tokenize(',').intersect(['conda', 'mamba']).size() >= 1) {
        error "SCFOUNDATION_GENEEMBED does not support Conda: scfoundation ships as a container. Use docker, singularity, apptainer or podman."
    }
    def args = task.ext.args ?: ''
    prefix = task.ext.prefix ?: "${meta.id}_scfoundation_genes"
    def device = task.accelerator ? '--device cuda:0' : ''
    if ("${prefix}.h5ad" == "${h5ad}") error "SCFOUNDATION_GENEEMBED: input and output are both ${h5ad}; set a different task.ext.prefix"
    """
    scfoundation embed \\
        --threads ${task.cpus} \\
        --input ${h5ad} \\
        --model ${model} \\
        --model-sha256 ${model_sha256} \\
        --output ${prefix}.h5ad \\
        --mode gene \\
        ${device} \\
        ${args}
    """

    stub:
    def args = task.ext.args ?: ''
    prefix = task.ext.prefix ?: "${meta.id}_scfoundation_genes"
    """
    echo "--mode gene ${args}"
    touch ${prefix}.h5ad
    """
}
