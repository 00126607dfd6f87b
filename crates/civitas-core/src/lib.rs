//! Civitas's shared vocabulary: identifiers that parse rather than validate, and the
//! configuration model. Nothing here does I/O.

pub mod config;
pub mod national_id;

pub use national_id::NationalId;
