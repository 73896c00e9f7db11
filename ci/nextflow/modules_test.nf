/*
 * Runs every module for real on test-data/ (the binary under test on PATH, no containers), the same
 * calls as the modules' tests/main.nf.test. ci/nextflow/check_outputs.py then checks what came out.
 */
include { SCFOUNDATION_WEIGHTS   } from '../../modules/scfoundation/scfoundation/weights/main'
include { SCFOUNDATION_EMBED     } from '../../modules/scfoundation/scfoundation/embed/main'
include { SCFOUNDATION_GENEEMBED } from '../../modules/scfoundation/scfoundation/geneembed/main'
include { SCFOUNDATION_ENHANCE   } from '../../modules/scfoundation/scfoundation/enhance/main'
include { SCFOUNDATION_SPLIT     } from '../../modules/scfoundation/scfoundation/split/main'
include { SCFOUNDATION_MERGE     } from '../../modules/scfoundation/scfoundation/merge/main'

params.testdata = "${projectDir}/../../test-data"
params.outdir   = 'results'

workflow {
    h5ad = Channel.value([ [ id:'pbmc_tiny' ], file("${params.testdata}/pbmc_tiny.h5ad", checkIfExists: true) ])

    SCFOUNDATION_WEIGHTS(
        Channel.of([ [ id:'scfoundation-tiny@1.0' ], 'scfoundation-tiny@1.0' ]),
        file("${params.testdata}/registry.json", checkIfExists: true)
    )
    weights = SCFOUNDATION_WEIGHTS.out.weights.first()

    SCFOUNDATION_EMBED(h5ad, weights)
    SCFOUNDATION_GENEEMBED(h5ad, weights)
    SCFOUNDATION_ENHANCE(h5ad, weights)
    SCFOUNDATION_SPLIT(h5ad, 5)
    SCFOUNDATION_MERGE(SCFOUNDATION_SPLIT.out.shards)

    weights.map { meta, f, sha -> "${f.name}\t${sha}" }
        .collectFile(name: 'weights.tsv', storeDir: params.outdir, newLine: true)
    Channel.topic('versions')
        .map { process, tool, version -> "${process}\t${tool}\t${version}" }
        .collectFile(name: 'versions.tsv', storeDir: params.outdir, newLine: true, sort: true)
}
