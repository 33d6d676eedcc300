//! The control plane: what a person (through the CLI or the admin API) or, later, the optimizer asks of the
//! store. Task profiles and rankings, candidates, deployment changes (deploy, promote, roll back), the caches'
//! overview and clears, and log import. No HTTP and no serving: the gateway's admin API maps
//! [`ControlError`] to a status once, and the CLI prints it.

pub mod cache;
pub mod import;
pub mod policy;
pub mod tasks;

use leanlm_store::StoreError;

/// Why a control-plane operation did not happen. The admin API answers 404, 409, 400 and 500 for them.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// What was named does not exist: a task, a policy, a validation.
    #[error("{0}")]
    NotFound(String),
    /// The request is well formed but the state refuses it: a name several tasks share, a replacement that
    /// is not validated or not trained, a policy that changed meanwhile, a stage that cannot be promoted.
    #[error("{0}")]
    Conflict(String),
    /// The request itself is wrong: a value out of range, a missing reason.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<leanlm_deploy::ChangeError> for ControlError {
    fn from(e: leanlm_deploy::ChangeError) -> ControlError {
        use leanlm_deploy::ChangeError as C;
        let message = e.to_string();
        match e {
            C::NoPolicy(_) => ControlError::NotFound(message),
            C::NotValidated { .. } | C::CannotPromote(_) => ControlError::Conflict(message),
            C::NotServable(_) | C::OutOfRange { .. } | C::BadStage => ControlError::Invalid(message),
        }
    }
}

/// Unix milliseconds now: policy changes, clears, import times.
pub fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
