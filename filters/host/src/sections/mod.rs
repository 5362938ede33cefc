//! The pipeline's sections, each over the host traits and the request view.

pub mod audit;
pub mod identity;
pub mod masking;
