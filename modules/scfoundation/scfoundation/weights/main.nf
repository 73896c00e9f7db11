process SCFOUNDATION_WEIGHTS {
    tag "$model"
    label 'process_single'

    container "ghcr.io/scfoundation-rs/scfoundation:0.1.0"

    input:
    tuple val(meta), val(model)
    path registry

    output:
    tuple val(meta), path("weights/*"), env('MODEL_SHA256'), emit: weights
    tuple val("${task.process}"), val('scfoundation'), eval("scfoundation --version | sed 's/^scfoundation //'"), topic: versions, emit: versions_scfoundation

    when:
    task.ext.when == null || task.ext.when

    script:
    if (workflow.profile.tokenize(',').intersect(['conda', 'mamba']).size() >= 1) {
        error "SCFOUNDATION_WEIGHTS does not support Conda: scfoundation ships as a container. Use docker, singularity, apptainer or podman."
    }
    // The model id and the registry file name come from users: single-quote them for bash ('\'' for a quote).
    def q = { v -> "'" + v.toString().replace("'", "'\\''") + "'" }
    def args = task.ext.args ?: ''
    def reg = registry ? "--registry=${q(registry)}" : ''
    """
    export SCFOUNDATION_HOME="\$PWD/scfoundation_home"
    src=\$(scfoundation $reg weights fetch ${q(model)} $args)
    scfoundation $reg weights verify ${q(model)}
    mkdir -p weights
    cp "\$src" weights/
    MODEL_SHA256=\$(scfoundation weights verify "weights/\$(basename "\$src")" | cut -d' ' -f1)
    rm -rf scfoundation_home
    """

    stub:
    """
    mkdir -p weights
    touch weights/models.ckpt
    MODEL_SHA256=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
    """
}
