process SCFOUNDATION_GENEMODULES {
    tag "$meta.id"
    label 'process_medium'
    label 'process_gpu'

    container "${ task.accelerator ? 'ghcr.io/scfoundation-rs/scfoundation:0.1.0-cuda' : 'ghcr.io/scfoundation-rs/scfoundation:0.1.0' }"

    input:
    tuple val(meta), path(h5ad)
    tuple val(meta2), path(model), val(model_sha256)
    // The genes to cluster: a symbol list (one per line), or [] with --n-hvg N in task.ext.args (exactly one of the two).
    // Staged as genes/NAME, so its name can neither start with '-' nor clash with an output.
    path(genes, stageAs: 'genes/*')

    output:
    // glob: false: the prefix is a literal name, brackets or * in it are not patterns.
    tuple val(meta), path("${prefix}.tsv", glob: false), emit: modules
    tuple val(meta), path("${prefix}.tsv.provenance.json", glob: false), emit: provenance
    tuple val(meta), path("${prefix}.scores.h5ad", glob: false), emit: scores
    tuple val(meta), path("${prefix}.png", glob: false), emit: heatmap
    tuple val("${task.process}"), val('scfoundation'), eval("scfoundation --version | sed 's/^scfoundation //'"), topic: versions, emit: versions_scfoundation

    when:
    task.ext.when == null || task.ext.when

    script:
    if (workflow.profile.tokenize(',').intersect(['conda', 'mamba']).size() >= 1) {
        error "SCFOUNDATION_GENEMODULES does not support Conda: scfoundation ships as a container. Use docker, singularity, apptainer or podman."
    }
    // File names and the prefix come from users: single-quote every value that reaches bash ('\'' for a quote).
    def q = { v -> "'" + v.toString().replace("'", "'\\''") + "'" }
    def args = task.ext.args ?: ''
    prefix = task.ext.prefix ?: "${meta.id}_gene_modules"
    if (prefix.contains('/')) error "SCFOUNDATION_GENEMODULES: task.ext.prefix '${prefix}' contains '/'; outputs are written in the task directory"
    def hvg = args.tokenize().any { a -> a == '--n-hvg' || a.startsWith('--n-hvg=') }
    if (genes && hvg) error "SCFOUNDATION_GENEMODULES: give either a genes file or --n-hvg in task.ext.args, not both"
    if (!genes && !hvg) error "SCFOUNDATION_GENEMODULES: give a genes file (one symbol per line) or --n-hvg N in task.ext.args"
    if ("${prefix}.scores.h5ad" == "${h5ad}") error "SCFOUNDATION_GENEMODULES: input and output are both ${h5ad}; set a different task.ext.prefix"
    def device = task.accelerator ? '--device cuda:0' : ''
    def gene_list = genes ? "--genes=${q(genes)}" : ''
    // --opt=value: a file name starting with '-' stays a value.
    """
    scfoundation gene-modules \\
        --threads ${task.cpus} \\
        --input=${q(h5ad)} \\
        --model=${q(model)} \\
        --model-sha256=${q(model_sha256)} \\
        ${gene_list} \\
        --output=${q(prefix + '.tsv')} \\
        --scores-output=${q(prefix + '.scores.h5ad')} \\
        --heatmap=${q(prefix + '.png')} \\
        ${device} \\
        ${args}
    """

    stub:
    def q = { v -> "'" + v.toString().replace("'", "'\\''") + "'" }
    def args = task.ext.args ?: ''
    prefix = task.ext.prefix ?: "${meta.id}_gene_modules"
    if (prefix.contains('/')) error "SCFOUNDATION_GENEMODULES: task.ext.prefix '${prefix}' contains '/'; outputs are written in the task directory"
    def hvg = args.tokenize().any { a -> a == '--n-hvg' || a.startsWith('--n-hvg=') }
    if (genes && hvg) error "SCFOUNDATION_GENEMODULES: give either a genes file or --n-hvg in task.ext.args, not both"
    if (!genes && !hvg) error "SCFOUNDATION_GENEMODULES: give a genes file (one symbol per line) or --n-hvg N in task.ext.args"
    """
    echo ${q(args)}
    printf 'gene\\tmodule\\tmodule_size\\tdegree\\tintra_similarity\\tmean_expression\\n' > ${q(prefix + '.tsv')}
    echo '{}' > ${q(prefix + '.tsv.provenance.json')}
    touch ${q(prefix + '.scores.h5ad')}
    touch ${q(prefix + '.png')}
    """
}
