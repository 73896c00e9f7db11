/*
 * SCFOUNDATION_GENEMODULES for real on test-data/ (the binary under test on PATH, no containers), run by
 * ci/nextflow.sh; ci/nextflow/check_gene_modules.py then checks what came out.
 *   SCFOUNDATION_GENEMODULES:     pbmc_tiny.h5ad, the 40 most highly variable genes (--n-hvg in ext.args, genes []);
 *   SCFOUNDATION_GENEMODULES_ODD: the same cells under a name with spaces and quotes (prepared by ci/nextflow.sh in
 *                                 --odd_dir), a genes file with such a name, 1 cell per cell type, a prefix with
 *                                 quotes and '$HOME' (gene_modules_test.config).
 */
include { SCFOUNDATION_GENEMODULES                                } from '../../modules/scfoundation/scfoundation/genemodules/main'
include { SCFOUNDATION_GENEMODULES as SCFOUNDATION_GENEMODULES_ODD } from '../../modules/scfoundation/scfoundation/genemodules/main'

params.testdata = "${projectDir}/../../test-data"
params.odd_dir  = null
params.outdir   = 'results'

// Must match ci/nextflow.sh and check_gene_modules.py.
def ODD_H5AD    = 'pbmc tiny\'s "odd".h5ad'
def ODD_MODEL   = 'tiny model\'s.ckpt'
def ODD_GENES   = 'marker genes, it\'s.txt'
def TINY_SHA256 = 'c5083dd4e705f12275bd1da8177f7600a07059b2b40bd4bbfe8e3aaca59b2173'

workflow {
    if (!params.odd_dir) error "give --odd_dir (ci/nextflow.sh prepares it)"

    h5ad = Channel.value([ [ id:'pbmc_tiny' ], file("${params.testdata}/pbmc_tiny.h5ad", checkIfExists: true) ])
    weights = Channel.value([ [ id:'scfoundation-tiny@1.0' ], file("${params.testdata}/reference/tiny_models.ckpt", checkIfExists: true), TINY_SHA256 ])
    SCFOUNDATION_GENEMODULES(h5ad, weights, [])

    def odd_file = file("${params.odd_dir}/${ODD_H5AD}", checkIfExists: true)
    odd = Channel.value([ [ id: odd_file.baseName ], odd_file ])
    odd_weights = Channel.value([ [ id:'tiny' ], file("${params.odd_dir}/${ODD_MODEL}", checkIfExists: true), TINY_SHA256 ])
    SCFOUNDATION_GENEMODULES_ODD(odd, odd_weights, file("${params.odd_dir}/${ODD_GENES}", checkIfExists: true))

    // What each emit carried (check_gene_modules.py): process, emit, file name.
    def emits = { name, out ->
        out.modules.map { meta, f -> "${name}\tmodules\t${f.name}" }
            .mix(out.provenance.map { meta, f -> "${name}\tprovenance\t${f.name}" })
            .mix(out.scores.map { meta, f -> "${name}\tscores\t${f.name}" })
            .mix(out.heatmap.map { meta, f -> "${name}\theatmap\t${f.name}" })
    }
    emits('hvg', SCFOUNDATION_GENEMODULES.out)
        .mix(emits('odd', SCFOUNDATION_GENEMODULES_ODD.out))
        .collectFile(name: 'gene_modules_emits.tsv', storeDir: params.outdir, newLine: true, sort: true)
    Channel.topic('versions')
        .map { process, tool, version -> "${process}\t${tool}\t${version}" }
        .collectFile(name: 'versions.tsv', storeDir: params.outdir, newLine: true, sort: true)
}
