//! Clustering of embeddings: the cosine neighbour graph (`knn`), Leiden communities (`leiden`) and a
//! similarity heatmap (`heatmap`).

pub mod heatmap;
pub mod knn;
pub mod leiden;
