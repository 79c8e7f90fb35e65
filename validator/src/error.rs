//! What stops a validator.

use crate::store::StoreError;
use chain_client::{ChainError, NotRegistered};

#[derive(Debug, thiserror::Error)]
pub enum ValidatorError {
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error(transparent)]
    NotRegistered(#[from] NotRegistered),
    #[error("evaluation task failed: {0}")]
    Evaluation(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("saved checkpoint in {dir} does not load: {message}")]
    SavedCheckpoint { dir: String, message: String },
}
