/*
 * Runs every module for real on test-data/ (the binary under test on PATH, no containers), the same
 * calls as the modules' tests/main.nf.test. ci/nextflow/check_outputs.py then checks what came out.
 *
 * The *_ODD aliases run every module again on inputs whose names have spaces and quotes (prepared
 * by ci/nextflow.sh in --odd_dir), with prefixes that contain quotes, '$HOME' and '$(...)'
 * (modules_test.config): a value reaching bash unquoted breaks the task or renames an output.
 */
include { SCFOUNDATION_WEIGHTS   } from '../../modules/scfoundation/scfoundation/weights/main'
include { SCFOUNDATION_EMBED     } from '../../modules/scfoundation/scfoundation/embed/main'
include { SCFOUNDATION_GENEEMBED } from '../../modules/scfoundation/scfoundation/geneembed/main'
include { SCFOUNDATION_ENHANCE   } from '../../modules/scfoundation/scfoundation/enhance/main'
include { SCFOUNDATION_SPLIT     } from '../../modules/scfoundation/scfoundation/split/main'
include { SCFOUNDATION_MERGE     } from '../../modules/scfoundation/scfoundation/merge/main'
include { SCFOUNDATION_INIT      } from '../../modules/scfoundation/scfoundation/init/main'
include { SCFOUNDATION_PRETRAIN  } from '../../modules/scfoundation/scfoundation/pretrain/main'
include { SCFOUNDATION_PRETRAIN  as SCFOUNDATION_PRETRAIN_RESUME } from '../../modules/scfoundation/scfoundation/pretrain/main'
include { SCFOUNDATION_EMBED     as SCFOUNDATION_EMBED_PRETRAINED } from '../../modules/scfoundation/scfoundation/embed/main'
include { SCFOUNDATION_ANNOTATETRAIN   } from '../../modules/scfoundation/scfoundation/annotatetrain/main'
include { SCFOUNDATION_ANNOTATEPREDICT } from '../../modules/scfoundation/scfoundation/annotatepredict/main'
include { SCFOUNDATION_ANNOTATETRAIN   as SCFOUNDATION_ANNOTATETRAIN_FROZEN   } from '../../modules/scfoundation/scfoundation/annotatetrain/main'
include { SCFOUNDATION_ANNOTATEPREDICT as SCFOUNDATION_ANNOTATEPREDICT_FROZEN } from '../../modules/scfoundation/scfoundation/annotatepredict/main'
include { SCFOUNDATION_WEIGHTS   as SCFOUNDATION_WEIGHTS_ODD   } from '../../modules/scfoundation/scfoundation/weights/main'
include { SCFOUNDATION_EMBED     as SCFOUNDATION_EMBED_ODD     } from '../../modules/scfoundation/scfoundation/embed/main'
include { SCFOUNDATION_GENEEMBED as SCFOUNDATION_GENEEMBED_ODD } from '../../modules/scfoundation/scfoundation/geneembed/main'
include { SCFOUNDATION_ENHANCE   as SCFOUNDATION_ENHANCE_ODD   } from '../../modules/scfoundation/scfoundation/enhance/main'
include { SCFOUNDATION_SPLIT     as SCFOUNDATION_SPLIT_ODD     } from '../../modules/scfoundation/scfoundation/split/main'
include { SCFOUNDATION_MERGE     as SCFOUNDATION_MERGE_ODD     } from '../../modules/scfoundation/scfoundation/merge/main'
include { SCFOUNDATION_PRETRAIN  as SCFOUNDATION_PRETRAIN_ODD  } from '../../modules/scfoundation/scfoundation/pretrain/main'
include { SCFOUNDATION_ANNOTATETRAIN   as SCFOUNDATION_ANNOTATETRAIN_ODD   } from '../../modules/scfoundation/scfoundation/annotatetrain/main'
include { SCFOUNDATION_ANNOTATEPREDICT as SCFOUNDATION_ANNOTATEPREDICT_ODD } from '../../modules/scfoundation/scfoundation/annotatepredict/main'

params.testdata = "${projectDir}/../../test-data"
params.odd_dir  = null
params.outdir   = 'results'

// Must match ci/nextflow.sh and check_outputs.py.
def ODD_H5AD    = 'pbmc tiny\'s "odd".h5ad'
def ODD_MODEL   = 'tiny model\'s.ckpt'
def ODD_REG     = 'registry it\'s.json'
def TINY_SHA256 = 'c5083dd4e705f12275bd1da8177f7600a07059b2b40bd4bbfe8e3aaca59b2173'

workflow {
    if (!params.odd_dir) error "give --odd_dir (ci/nextflow.sh prepares it)"

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

    // Pretraining: a random tiny model, 2 steps (modules_test.config), resumed to step 3 into a new directory,
    // and the resumed checkpoint embedded by SCFOUNDATION_EMBED with the sha256 the module reports.
    SCFOUNDATION_INIT(Channel.of([ [ id:'tiny_seed1' ], 'tiny', 1 ]))
    train = h5ad.map { meta, f -> [ meta, [ f ] ] }
    SCFOUNDATION_PRETRAIN(train, SCFOUNDATION_INIT.out.model, [ [], [] ])
    SCFOUNDATION_PRETRAIN_RESUME(train, [ [], [] ], SCFOUNDATION_PRETRAIN.out.checkpoint)
    SCFOUNDATION_EMBED_PRETRAINED(h5ad, SCFOUNDATION_PRETRAIN_RESUME.out.model_cell)
    // What each emit carried (check_outputs.py): emit, file name, sha256 where there is one.
    SCFOUNDATION_PRETRAIN.out.log.map { meta, f -> "first\tlog\t${f.name}" }
        .mix(SCFOUNDATION_PRETRAIN.out.png.map { meta, f -> "first\tpng\t${f.name}" })
        .mix(SCFOUNDATION_PRETRAIN_RESUME.out.log.map { meta, f -> "resume\tlog\t${f.name}" })
        .mix(SCFOUNDATION_PRETRAIN_RESUME.out.png.map { meta, f -> "resume\tpng\t${f.name}" })
        .mix(SCFOUNDATION_PRETRAIN_RESUME.out.model_cell.map { meta, d, sha -> "resume\tmodel_cell\t${d.name}\t${sha}" })
        .mix(SCFOUNDATION_PRETRAIN_RESUME.out.model_gene.map { meta, d, sha -> "resume\tmodel_gene\t${d.name}\t${sha}" })
        .collectFile(name: 'pretrain_emits.tsv', storeDir: params.outdir, newLine: true, sort: true)

    // Cell type annotation: a head trained on pbmc_tiny's cell_type (1 encoder layer fine-tuned, 2 epochs:
    // modules_test.config) predicts the dense copy of the same cells, with their labels (metrics). The frozen chain,
    // as the Galaxy annotation workflow runs it: SCFOUNDATION_EMBED's output -> a head with --finetune-layers 0
    // (reusing obsm['X_scfoundation']) -> a prediction without labels (no metrics).
    query = Channel.value([ [ id:'pbmc_tiny_dense' ], file("${params.testdata}/pbmc_tiny_dense.h5ad", checkIfExists: true) ])
    SCFOUNDATION_ANNOTATETRAIN(h5ad.map { meta, f -> [ meta, f, 'cell_type' ] }, weights)
    SCFOUNDATION_ANNOTATEPREDICT(query, SCFOUNDATION_ANNOTATETRAIN.out.head, weights, 'cell_type')
    SCFOUNDATION_ANNOTATETRAIN_FROZEN(SCFOUNDATION_EMBED.out.h5ad.map { meta, f -> [ meta, f, 'cell_type' ] }, weights)
    SCFOUNDATION_ANNOTATEPREDICT_FROZEN(query, SCFOUNDATION_ANNOTATETRAIN_FROZEN.out.head, weights, '')
    SCFOUNDATION_ANNOTATETRAIN.out.metrics.map { meta, f -> "train\tmetrics\t${f.name}" }
        .mix(SCFOUNDATION_ANNOTATETRAIN.out.log.map { meta, f -> "train\tlog\t${f.name}" })
        .mix(SCFOUNDATION_ANNOTATETRAIN.out.png.map { meta, a, b -> "train\tpng\t${a.name}\t${b.name}" })
        .mix(SCFOUNDATION_ANNOTATETRAIN.out.head.map { meta, d -> "train\thead\t${d.name}" })
        .mix(SCFOUNDATION_ANNOTATEPREDICT.out.metrics.map { meta, f -> "predict\tmetrics\t${f.name}" })
        .mix(SCFOUNDATION_ANNOTATEPREDICT_FROZEN.out.metrics.map { meta, f -> "predict_frozen\tmetrics\t${f.name}" })
        .mix(SCFOUNDATION_ANNOTATEPREDICT_FROZEN.out.h5ad.map { meta, f -> "predict_frozen\th5ad\t${f.name}" })
        .collectFile(name: 'annotate_emits.tsv', storeDir: params.outdir, newLine: true, sort: true)

    // The same calls on awkward names; meta.id (the default prefix) is the file's base name.
    def odd_file = file("${params.odd_dir}/${ODD_H5AD}", checkIfExists: true)
    odd = Channel.value([ [ id: odd_file.baseName ], odd_file ])
    odd_weights = Channel.value([ [ id:'tiny' ], file("${params.odd_dir}/${ODD_MODEL}", checkIfExists: true), TINY_SHA256 ])
    SCFOUNDATION_WEIGHTS_ODD(
        Channel.of([ [ id:'scfoundation-tiny@1.0' ], 'scfoundation-tiny@1.0' ]),
        file("${params.odd_dir}/${ODD_REG}", checkIfExists: true)
    )
    SCFOUNDATION_EMBED_ODD(odd, odd_weights)
    SCFOUNDATION_GENEEMBED_ODD(odd, odd_weights)
    SCFOUNDATION_ENHANCE_ODD(odd, odd_weights)
    SCFOUNDATION_SPLIT_ODD(odd, 5)
    SCFOUNDATION_MERGE_ODD(SCFOUNDATION_SPLIT_ODD.out.shards)
    SCFOUNDATION_PRETRAIN_ODD(odd.map { meta, f -> [ meta, [ f ] ] }, SCFOUNDATION_INIT.out.model, [ [], [] ])
    SCFOUNDATION_ANNOTATETRAIN_ODD(odd.map { meta, f -> [ meta, f, 'cell_type' ] }, odd_weights)
    SCFOUNDATION_ANNOTATEPREDICT_ODD(odd, SCFOUNDATION_ANNOTATETRAIN_ODD.out.head, odd_weights, 'cell_type')

    weights.map { meta, f, sha -> "${f.name}\t${sha}" }
        .collectFile(name: 'weights.tsv', storeDir: params.outdir, newLine: true)
    SCFOUNDATION_WEIGHTS_ODD.out.weights.map { meta, f, sha -> "${f.name}\t${sha}" }
        .collectFile(name: 'weights_odd.tsv', storeDir: params.outdir, newLine: true)
    Channel.topic('versions')
        .map { process, tool, version -> "${process}\t${tool}\t${version}" }
        .collectFile(name: 'versions.tsv', storeDir: params.outdir, newLine: true, sort: true)
}
