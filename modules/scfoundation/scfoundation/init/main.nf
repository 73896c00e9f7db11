process SCFOUNDATION_INIT {
    tag "$meta.id"
    label 'process_single'

    container "ghcr.io/scfoundation-rs/scfoundation:0.1.0"

    input:
    tuple val(meta), val(config), val(seed)

    output:
    // glob: false: the prefix is a literal name, brackets or * in it are not patterns.
    tuple val(meta), path("${prefix}", type: 'dir', glob: false), emit: model
    tuple val("${task.process}"), val('scfoundation'), eval("scfoundation --version | sed 's/^scfoundation //'"), topic: versions, emit: versions_scfoundation

    when:
    task.ext.when == null || task.ext.when

    script:
    if (workflow.profile.tokenize(',').intersect(['conda', 'mamba']).size() >= 1) {
        error "SCFOUNDATION_INIT does not support Conda: scfoundation ships as a container. Use docker, singularity, apptainer or podman."
    }
    // The prefix and the values come from users: single-quote every value that reaches bash ('\'' for a quote).
    def q = { v -> "'" + v.toString().replace("'", "'\\''") + "'" }
    def args = task.ext.args ?: ''
    prefix = task.ext.prefix ?: "${meta.id}_init"
    if (prefix.contains('/')) error "SCFOUNDATION_INIT: task.ext.prefix '${prefix}' contains '/'; outputs are written in the task directory"
    if (!(config.toString() in ['tiny', 'small', '100m'])) error "SCFOUNDATION_INIT: config '${config}' is not one of tiny, small, 100m"
    // --opt=value: a value starting with '-' stays a value.
    """
    scfoundation init \\
        --config=${q(config)} \\
        --seed=${q(seed)} \\
        --out=${q(prefix)} \\
        ${args}
    """

    stub:
    def q = { v -> "'" + v.toString().replace("'", "'\\''") + "'" }
    prefix = task.ext.prefix ?: "${meta.id}_init"
    if (prefix.contains('/')) error "SCFOUNDATION_INIT: task.ext.prefix '${prefix}' contains '/'; outputs are written in the task directory"
    """
    mkdir -p ${q(prefix)}
    for f in cell.safetensors cell.config.json gene.safetensors gene.config.json provenance.json; do
        touch ${q(prefix)}/"\$f"
    done
    """
}
