#!/usr/bin/env nextflow
/*
 * Embed a large h5ad with scFoundation, scaled out by the workflow manager:
 *   fetch + verify the weights once -> split into shards -> embed every shard in parallel -> merge in order.
 * Any Nextflow executor runs the shards (local, SLURM, LSF, Kubernetes, AWS/Google Batch).
 */
nextflow.enable.dsl = 2

include { SCFOUNDATION_WEIGHTS } from '../../scfoundation/scfoundation/weights/main'
include { SCFOUNDATION_SPLIT   } from '../../scfoundation/scfoundation/split/main'
include { SCFOUNDATION_EMBED   } from '../../scfoundation/scfoundation/embed/main'
include { SCFOUNDATION_MERGE   } from '../../scfoundation/scfoundation/merge/main'

params.input           = null       // h5ad, or a comma-separated list of h5ad files (one sample each)
params.model           = 'scfoundation@1.0'
params.registry        = null       // user registry JSON (mirrors, pinned sha256)
params.weights         = null       // a local weights file instead of the registry ...
params.weights_sha256  = null       // ... with its sha256 (required)
params.cells_per_shard = 10000
params.outdir          = 'results'

workflow {
    if (!params.input) error "Give --input cells.h5ad"

    samples = Channel
        .fromList(params.input.tokenize(','))
        .map { f -> file(f, checkIfExists: true) }
        .map { f -> [ [ id: f.baseName ], f ] }

    if (params.weights) {
        if (!params.weights_sha256) error "--weights needs --weights_sha256"
        weights = Channel.value([ [ id: file(params.weights).name ], file(params.weights, checkIfExists: true), params.weights_sha256 ])
    } else {
        registry = params.registry ? file(params.registry, checkIfExists: true) : []
        SCFOUNDATION_WEIGHTS(Channel.of([ [ id: params.model ], params.model ]), registry)
        weights = SCFOUNDATION_WEIGHTS.out.weights.first()
    }

    SCFOUNDATION_SPLIT(samples, params.cells_per_shard)

    shards = SCFOUNDATION_SPLIT.out.shards
        .transpose()
        .map { meta, shard -> [ meta + [ id: shard.baseName, sample: meta.id ], shard ] }

    SCFOUNDATION_EMBED(shards, weights)

    // Shard names sort in cell order; merge per sample in that order.
    per_sample = SCFOUNDATION_EMBED.out.h5ad
        .map { meta, h5ad -> [ meta.sample, h5ad ] }
        .groupTuple(sort: { a, b -> a.name <=> b.name })
        .map { sample, files -> [ [ id: sample ], files ] }

    SCFOUNDATION_MERGE(per_sample)
}
