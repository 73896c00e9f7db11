process SCFOUNDATION_ENHANCE {
    tag "$meta.id"
    label 'process_medium'
    label 'process_gpu'

    container "${ task.accelerator ? 'ghcr.io/scfoundation-rs/scfoundation:0.1.0-cuda' : 'ghcr.io/scfoundation-rs/scfoundation:0.1.0' }"

    input:
    tuple val(meta), path(h5ad)
    tuple val(meta2), path(model), val(model_sha256)

    output:
    // glob: false: the prefix is a literal name, brackets or * in it are not patterns.
    tuple val(meta), path("${prefix}.h5ad", glob: false), emit: h5ad
    tuple val("${task.process}"), val('scfoundation'), eval("scfoundation --version | sed 's/^scfoundation //'"), topic: versions, emit: versions_scfoundation

    when:
    task.ext.when == null || task.ext.when

    script:
    if (workflow.profile.tokenize(',').intersect(['conda', 'mamba']).size() >= 1) {
        error "SCFOUNDATION_ENHANCE does not support Conda: scfoundation ships as a container. Use docker, singularity, apptainer or podman."
    }
    // File names and the prefix come from users: single-quote every value that reaches bash ('\'' for a quote).
    def q = { v -> "'" + v.toString().replace("'", "'\\''") + "'" }
    def args = task.ext.args ?: ''
    prefix = task.ext.prefix ?: "${meta.id}_scfoundation_enhanced"
    if (prefix.contains('/')) error "SCFOUNDATION_ENHANCE: task.ext.prefix '${prefix}' contains '/'; outputs are written in the task directory"
    def device = task.accelerator ? '--device cuda:0' : ''
    if ("${prefix}.h5ad" == "${h5ad}") error "SCFOUNDATION_ENHANCE: input and output are both ${h5ad}; set a different task.ext.prefix"
    // --opt=value: a file name starting with '-' stays a value.
    """
    scfoundation embed \\
        --threads ${task.cpus} \\
        --input=${q(h5ad)} \\
        --model=${q(model)} \\
        --model-sha256=${q(model_sha256)} \\
        --output=${q(prefix + '.h5ad')} \\
        --mode expression --key rde \\
        ${device} \\
        ${args}
    """

    stub:
    def q = { v -> "'" + v.toString().replace("'", "'\\''") + "'" }
    def args = task.ext.args ?: ''
    prefix = task.ext.prefix ?: "${meta.id}_scfoundation_enhanced"
    if (prefix.contains('/')) error "SCFOUNDATION_ENHANCE: task.ext.prefix '${prefix}' contains '/'; outputs are written in the task directory"
    """
    echo "--mode expression --key rde ${args}"
    touch ${q(prefix + '.h5ad')}
    """
}
