//! The ledger: a Merkle transparency log (RFC 6962 hashing, C2SP tlog-tiles layout and
//! checkpoints) of every consequential event, with inclusion and consistency proofs that a
//! citizen or an auditor checks without trusting the operator.
//!
//! This crate knows nothing about HTTP: the web edge serves what it returns.

pub mod event;
mod hashfile;
mod log;
pub mod note;
pub mod proof;
mod storage;
pub mod subject;
pub mod testing;
pub mod tiles;
pub mod tree;
pub mod witness;

pub use event::Event;
pub use log::{Ledger, LedgerConfig, SignedCheckpoint, bulk_load_for_benchmark};
pub use proof::ProofBundle;
pub use storage::COMPONENT;
pub use subject::{SubjectSecret, SubjectTag};
pub use witness::{
    CosignerKey, TrustedCosigner, Witness, WitnessEndpoint, WitnessPolicy, WitnessRefusal,
    WitnessTransport, verify_cosigned,
};

/// Errors from the ledger.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The event cannot be logged as given.
    #[error("invalid ledger event: {0}")]
    InvalidEvent(String),
    /// A proof or signature did not verify.
    #[error("verification failed: {0}")]
    ProofFailed(String),
    /// The log cannot take appends now (its sequencer stopped or a write failed).
    #[error("the ledger is unavailable: {0}")]
    Unavailable(String),
    /// No such entry, proof or tile.
    #[error("not found in the ledger: {0}")]
    NotFound(String),
    /// Stored data contradicts itself.
    #[error("the ledger's storage is inconsistent: {0}")]
    Corrupt(String),
    /// The writes that go with an entry (`Ledger::append_with`) changed another number of
    /// rows than they must, as when a compare-and-set lost a race: nothing of the append was
    /// written.
    #[error("the writes that go with the entry were refused: {0}")]
    WritesRefused(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] civitas_store::StoreError),
}

#[cfg(test)]
mod tests;
